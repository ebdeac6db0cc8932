"""The value types: ``Goal``, ``GoalResult``, ``Stats`` and ``KindStats``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from ._validation import validate_goal

__all__ = ["Goal", "GoalResult", "KindStats", "Stats", "checked_goal", "new_result"]


@attrs.frozen(init=False, weakref_slot=False)
class Goal:
    """One goal event, validated and normalised exactly as ``DataFast.track`` does.

    Args:
        visitor_id: The visitor's ``datafast_visitor_id`` cookie; a non-empty ``str``.
        name: The goal name. It is lowercased and spaces become ``_``; then it must be 1 to 64
            characters of ``a-z 0-9 _ - :`` and not ``identify``.
        description: Optional free text.
        metadata: Optional mapping of at most 10 keys (``^[a-z0-9_-]{1,64}$``) to values of at
            most 255 characters. ``None`` values are left out; ``bool``/``int``/``float`` values
            become their JSON text (``True`` -> ``"true"``). The goal keeps its own read-only
            copy, which compares equal to a plain ``dict`` (``dict(goal.metadata)`` gives one
            to change).

    Raises:
        ValidationError: The goal breaks one of those rules; ``.field`` names the field.
    """

    visitor_id: str
    name: str
    description: str | None = None
    metadata: Mapping[str, str] | None = attrs.field(default=None, hash=False)

    def __init__(
        self,
        visitor_id: str,
        name: str,
        description: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        # Hand-written: validate_goal is the one set of rules, shared with track_nowait, and
        # the frozen slots are filled through their descriptors, which is about twice as fast
        # as object.__setattr__.
        _fill(self, *validate_goal(visitor_id, name, description, metadata))


class _Metadata(dict[str, str]):
    """A goal's metadata: a ``dict`` (equal to one, JSON-ready, picklable) that cannot be
    changed, so a ``Goal`` sends exactly what was validated."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a Goal's metadata is read-only; copy it with dict(goal.metadata)")

    __setitem__ = __delitem__ = __ior__ = __init__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, tuple[dict[str, str]]]:
        return (_metadata_of, (dict(self),))

    def __copy__(self) -> _Metadata:
        return self  # immutable: a copy is the same value

    def __deepcopy__(self, memo: dict[int, object]) -> _Metadata:
        return self


def _metadata_of(items: dict[str, str]) -> _Metadata:
    """A read-only copy of ``items`` (its ``__init__`` refuses: it would change it)."""
    metadata: _Metadata = dict.__new__(_Metadata)
    dict.update(metadata, items)
    return metadata


_set_visitor_id = Goal.__dict__["visitor_id"].__set__
_set_name = Goal.__dict__["name"].__set__
_set_description = Goal.__dict__["description"].__set__
_set_metadata = Goal.__dict__["metadata"].__set__
_new_object = object.__new__


def _fill(
    goal: Goal,
    visitor_id: str,
    name: str,
    description: str | None,
    metadata: dict[str, str] | None,
) -> None:
    _set_visitor_id(goal, visitor_id)
    _set_name(goal, name)
    _set_description(goal, description)
    # Its own read-only copy: the caller's dict (or a Delivery's, which is what gets sent)
    # cannot change it, nor can it change them.
    _set_metadata(goal, None if metadata is None else _metadata_of(metadata))


def checked_goal(
    visitor_id: str, name: str, description: str | None, metadata: dict[str, str] | None
) -> Goal:
    """A ``Goal`` from fields that ``validate_goal`` already returned (not checked again)."""
    goal: Goal = _new_object(Goal)
    _fill(goal, visitor_id, name, description, metadata)
    return goal


@attrs.frozen(weakref_slot=False)
class GoalResult:
    """What the API answered for one delivered goal (its ``data[0]``).

    Attributes:
        event_id: The event's 24-hex-digit ObjectId, or ``None`` when the answer had none
            (and when the client is disabled).
        message: The API's confirmation message (``"disabled"`` when the client is disabled).
    """

    event_id: str | None
    message: str | None


_set_event_id = GoalResult.__dict__["event_id"].__set__
_set_message = GoalResult.__dict__["message"].__set__


def new_result(event_id: str | None, message: str | None) -> GoalResult:
    """``GoalResult(event_id, message)``, filled through the slots' descriptors: one is built
    per delivered goal, and attrs' frozen ``__init__`` costs twice as much."""
    result: GoalResult = _new_object(GoalResult)
    _set_event_id(result, event_id)
    _set_message(result, message)
    return result


@attrs.frozen(weakref_slot=False)
class KindStats:
    """The counters of one kind of request (``Stats.by_kind["goals"]``), with the same
    meaning and the same invariant as ``Stats``' totals."""

    enqueued: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    queued: int = 0
    in_flight: int = 0
    spooled: int = 0


@attrs.frozen(weakref_slot=False)
class Stats:
    """A snapshot of the client's counters, over every kind of request (goals, ...).

    At every moment ``enqueued == delivered + failed + queued + in_flight + spooled``;
    ``dropped`` counts goals refused at the door (queue full, or the spool full) and is not
    part of ``enqueued``.

    Attributes:
        enqueued: Goals accepted into the queue.
        delivered: Goals the API accepted.
        failed: Accepted goals that finally failed (rejected, out of attempts, or shut down).
        dropped: Goals refused because the queue was full, whatever the ``on_full`` policy.
        retries: Attempts beyond the first, over all goals.
        queued: Goals waiting in the queue.
        in_flight: Goals being sent or waiting to retry.
        spooled: Accepted goals held only on disk by the durable spool (``spool_path``): beyond
            ``max_queue_size``, parked while the API is down or refuses every request, taken
            over from an earlier run and not read back yet, or kept at the shutdown deadline
            for the next start. Always 0 without a spool.
        concurrency_limit: The adaptive in-flight limit now (between 1 and ``concurrency``);
            a gauge, left out when two snapshots are compared.
        by_kind: The same counters per kind of request (``"goals"``, ...), a ``KindStats``
            each, every kind the client sends listed; the totals above are their sums. Left
            out when two snapshots are compared (the totals are).
    """

    enqueued: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    queued: int = 0
    in_flight: int = 0
    spooled: int = 0
    # A gauge, not a counter: two snapshots compare equal when their counters are.
    concurrency_limit: int = attrs.field(default=0, eq=False)
    by_kind: Mapping[str, KindStats] = attrs.field(factory=dict, eq=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain data (``by_kind`` as a dict of dicts), ready for JSON."""
        data = attrs.asdict(self, recurse=False)
        data["by_kind"] = {name: attrs.asdict(kind) for name, kind in self.by_kind.items()}
        return data
