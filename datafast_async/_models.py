"""The value types: ``Goal``, ``GoalResult`` and ``Stats``."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._validation import (
    _names,
    check_description,
    check_visitor_id,
    normalize_metadata,
    normalize_name,
)

__all__ = ["Goal", "GoalResult", "Stats"]


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
            become their JSON text (``True`` -> ``"true"``). The goal keeps its own copy.

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
        # Hand-written for the hot path (track_nowait): the common case of each check is
        # inlined, and the frozen slots are filled through their descriptors, which is about
        # twice as fast as object.__setattr__.
        if type(visitor_id) is not str or not visitor_id:
            visitor_id = check_visitor_id(visitor_id)
        normalized = _names.get(name) if type(name) is str else None
        if normalized is None:
            normalized = normalize_name(name)
        if description is not None and type(description) is not str:
            description = check_description(description)
        _set_visitor_id(self, visitor_id)
        _set_name(self, normalized)
        _set_description(self, description)
        _set_metadata(self, None if metadata is None else normalize_metadata(metadata))


_set_visitor_id = Goal.__dict__["visitor_id"].__set__
_set_name = Goal.__dict__["name"].__set__
_set_description = Goal.__dict__["description"].__set__
_set_metadata = Goal.__dict__["metadata"].__set__


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


@attrs.frozen(weakref_slot=False)
class Stats:
    """A snapshot of the client's counters.

    At every moment ``enqueued == delivered + failed + queued + in_flight``; ``dropped`` counts
    goals refused at the door (queue full) and is not part of ``enqueued``.

    Attributes:
        enqueued: Goals accepted into the queue.
        delivered: Goals the API accepted.
        failed: Accepted goals that finally failed (rejected, out of attempts, or shut down).
        dropped: Goals refused because the queue was full, whatever the ``on_full`` policy.
        retries: Attempts beyond the first, over all goals.
        queued: Goals waiting in the queue.
        in_flight: Goals being sent or waiting to retry.
    """

    enqueued: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    queued: int = 0
    in_flight: int = 0
