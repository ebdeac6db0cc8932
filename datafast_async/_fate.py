"""The one place a request's fate is decided: delivered, failed, parked, kept, or refused.

Every request that ends, or leaves memory for the spool, goes through one method of ``Fate``,
which updates the ledger (``RequestQueue``), the journal (``Spool``), the ``Delivery`` and the
callbacks (``Reporter``) together, so that none of them can be forgotten on one path:

- ``delivered``: the API accepted it;
- ``failed``: it failed finally (refused by the API, out of attempts, the open circuit's error,
  a worker that died of a bug);
- ``parked``: with a spool, it leaves memory for disk, to be read back later (an open circuit,
  an API that stays down);
- ``at_deadline``: still unsettled when ``aclose()``'s deadline came (or the loop ended),
  wherever it was (queued, in flight, waiting for a retry, read back): kept in the spool when
  there is one and it can be kept there, else failed with ``ShutdownError``;
- ``unkept`` / ``damaged``: counted on disk, but the journal could not keep it after all, or
  its record is not a valid request: failed;
- ``held_at_end``: on disk only when the run ends: its ``Delivery`` (if the app holds it)
  settles with ``ShutdownError(spooled=True)`` (also those of a run that never started,
  journaled for another client);
- ``never_started``: a run that never started, at the process's exit without a spool: failed
  with ``ShutdownError``, for ``on_failure``;
- ``refused``: at the door (the queue and the spool full): counted in ``dropped``.

``summary`` is the one WARNING of a shutdown: how many requests were still undelivered at the
deadline, per kind, how many are kept and how many failed (and may have been recorded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._delivery import Delivery
from ._errors import DataFastError, ShutdownError
from ._kinds import KINDS, counted
from ._queue import RequestQueue
from ._reporting import DropLog, Reporter, logger

if TYPE_CHECKING:
    from ._spool import RunSpool as Spool

__all__ = ["Fate", "count_by_kind", "how_many", "shutdown_error"]

# What spool.settled() writes as a record's outcome.
_DELIVERED = "delivered"
_FAILED = "failed"


class Fate:
    """The fates of one run's requests. ``bind`` gives it the run's reporter and spool."""

    def __init__(self, queue: RequestQueue, drops: DropLog) -> None:
        self._queue = queue
        self._drops = drops
        self._reporter: Reporter | None = None
        self._spool: Spool | None = None
        #: Requests failed with ``ShutdownError`` at the deadline, per kind (by index).
        self.cut = [0] * len(KINDS)
        #: How many of those may have been recorded by the API all the same.
        self.cut_maybe = 0

    def bind(self, reporter: Reporter, spool: Spool | None) -> None:
        self._reporter = reporter
        self._spool = spool

    # -- ends ---------------------------------------------------------------------------------

    def delivered(self, delivery: Delivery[Any], body: bytes) -> bool:
        """The API accepted the request (``body``: its success answer). ``False`` if the
        request had already ended."""
        if not self._queue.finish(delivery, True):
            return False
        spool = self._spool
        if spool is not None:
            spool.settled(delivery, _DELIVERED)
        delivery._settle(body)
        reporter = self._reporter
        # Only an on_success callback needs the value and the result: without one, neither
        # is built here.
        if reporter is not None and reporter.reports_success:
            result = delivery.result
            if result is not None:
                reporter.delivered(delivery.event, result)
        return True

    def failed(self, delivery: Delivery[Any], error: DataFastError) -> bool:
        """The request failed finally with ``error`` (its own instance). ``False`` if it had
        already ended."""
        if not self._queue.finish(delivery, False):
            return False
        spool = self._spool
        if spool is not None:
            spool.settled(delivery, _FAILED)
        if error.maybe_delivered and delivery._kind.idempotent:
            error.maybe_delivered = False  # sending it again cannot record it twice
        delivery._settle(error)
        if self._reporter is not None:
            self._reporter.failed(delivery, error)
        return True

    def parked(self, delivery: Delivery[Any]) -> bool:
        """With a spool: the request leaves memory for disk, to be read back once the API
        takes requests again. ``False`` (nothing changed) when there is no spool, the request
        is not in flight, or the spool cannot take it."""
        spool = self._spool
        if spool is None or not self._queue.is_active(delivery) or not spool.park(delivery):
            return False
        self._queue.to_disk(delivery)
        return True

    def at_deadline(
        self,
        delivery: Delivery[Any],
        last: DataFastError | None,
        maybe: bool,
        reason: str,
    ) -> None:
        """The request is still unsettled at ``aclose()``'s deadline (or its loop ended):
        kept in the spool for the next start (its ``Delivery`` settles with a
        ``ShutdownError`` whose ``spooled`` is ``True``; no ``on_failure``), else failed with
        ``ShutdownError`` (``on_failure``), counted for ``summary``. ``last``: the last
        attempt's error (its cause); ``maybe``: an attempt may have reached the API."""
        queue = self._queue
        if not queue.is_active(delivery):
            return
        if delivery._kind.idempotent:
            maybe = False  # an idempotent request sent again cannot be recorded twice
        spool = self._spool
        if spool is not None and spool.keep(delivery) and queue.to_disk(delivery, again=False):
            error = shutdown_error(last, maybe, f"{reason}; kept in the spool for the next start")
            error.spooled = True
            delivery._settle(error)
            return
        error = shutdown_error(last, maybe, reason)
        if not queue.finish(delivery, False):
            return
        if spool is not None:
            spool.settled(delivery, _FAILED)
        delivery._settle(error)
        self.cut[delivery._kind.index] += 1
        if maybe:
            self.cut_maybe += 1
        if self._reporter is not None:
            # Not logged one by one: summary() says them all in one WARNING.
            self._reporter.failed(delivery, error, log=False)

    def unkept(self, deliveries: Iterable[Delivery[Any]], reason: str) -> None:
        """Requests counted on disk that the journal could not keep after all, as the run
        ended: failed with ``ShutdownError`` (``on_failure``), counted for ``summary``."""
        for index, group in _grouped(deliveries).items():
            self._queue.discard(index, len(group))
            self.cut[index] += len(group)
            for delivery in group:
                error = ShutdownError(f"{reason}; the spool could not keep it")
                if delivery._settle(error) and self._reporter is not None:
                    self._reporter.failed(delivery, error, log=False)

    def damaged(self, index: int, count: int) -> None:
        """``count`` records of the kind ``index`` read back from disk are not valid requests
        (edited or damaged): failed, with no ``Delivery`` to settle (the spool said so)."""
        self._queue.discard(index, count)

    def held_at_end(self, deliveries: Iterable[Delivery[Any]], reason: str) -> None:
        """Requests on disk only as the run ends, whose ``Delivery`` the app holds: they stay
        in the spool (counted in ``spooled``); their ``Delivery`` settles with a
        ``ShutdownError`` whose ``spooled`` is ``True`` (no ``on_failure``)."""
        for delivery in deliveries:
            error = ShutdownError(f"{reason}; kept in the spool for the next start")
            error.spooled = True
            delivery._settle(error)

    def never_started(
        self, queued: Iterable[Delivery[Any]], on_disk: Iterable[Delivery[Any]], reason: str
    ) -> list[tuple[Delivery[Any], ShutdownError]]:
        """A run that never started, as the process exits with no spool to keep its requests
        (``queued``, and ``on_disk``: kept for a spool that could not take them): each fails
        with a ``ShutdownError`` saying ``reason``. No loop runs: the caller reports them to
        ``on_failure`` (returned, with their errors)."""
        failed: list[tuple[Delivery[Any], ShutdownError]] = []
        for delivery in queued:
            if self._queue.finish(delivery, False):
                failed.append((delivery, ShutdownError(reason)))
        for index, group in _grouped(on_disk).items():
            self._queue.discard(index, len(group))
            failed.extend((delivery, ShutdownError(reason)) for delivery in group)
        for delivery, error in failed:
            delivery._settle(error)
        return failed

    def refused(self, delivery: Delivery[Any], error: DataFastError, *, settle: bool) -> None:
        """Refused at the door (the queue, and the spool, full): counted in ``dropped`` and
        said by a rate-limited WARNING; its ``Delivery`` settles with ``error`` when
        ``settle`` (``on_full="drop"``; otherwise the caller raises it). Never reported to
        ``on_failure``: it was never accepted."""
        self._queue.record_drop(delivery)
        self._drops.record(delivery._kind.name)
        if settle:
            delivery._settle(error)

    # -- the shutdown's WARNING ---------------------------------------------------------------

    def summary(self, seconds: float, where: str | None) -> int:
        """The one WARNING of a shutdown: the requests still undelivered at the deadline (kept
        in the spool at ``where``, or failed with ``ShutdownError``), in all and per kind.
        Returns their number."""
        kept = self._queue.spooled_by_kind()
        failed = {kind.name: self.cut[kind.index] for kind in KINDS if self.cut[kind.index]}
        every = {
            kind.name: kept.get(kind.name, 0) + failed.get(kind.name, 0)
            for kind in KINDS
            if kind.name in kept or kind.name in failed
        }
        total = sum(every.values())
        if not total:
            return 0
        parts = [counted(every)]
        parts.append(
            f"{'was' if total == 1 else 'were'} still undelivered at the shutdown deadline "
            f"({seconds:g} s):"
        )
        said = []
        if kept:
            said.append(
                f"{sum(kept.values())} {'is' if sum(kept.values()) == 1 else 'are'} kept in "
                f"the spool at {where} for the next start"
            )
        if failed:
            count = sum(failed.values())
            text = (
                f"{count} failed with ShutdownError (reported to on_failure)"
                if kept
                else "they failed with ShutdownError (reported to on_failure)"
            )
            if self.cut_maybe:
                text += (
                    f", {self.cut_maybe} of them cut in flight, so the API may have recorded "
                    "them (maybe_delivered)"
                )
            said.append(text)
        logger.warning("%s %s", " ".join(parts), "; ".join(said))
        return total


def how_many(deliveries: Iterable[Delivery[Any]]) -> str:
    """``"1 goal"``, ``"12 goals"``; ``"13 requests (12 goals, 1 payment)"`` for several kinds."""
    by_kind: dict[str, int] = {}
    for delivery in deliveries:
        by_kind[delivery._kind.name] = by_kind.get(delivery._kind.name, 0) + 1
    return counted(by_kind)


def _grouped(deliveries: Iterable[Delivery[Any]]) -> dict[int, list[Delivery[Any]]]:
    groups: dict[int, list[Delivery[Any]]] = {}
    for delivery in deliveries:
        groups.setdefault(delivery._kind.index, []).append(delivery)
    return groups


def count_by_kind(indexes: Iterable[int]) -> list[int]:
    """How many of each kind (by index), for ``RequestQueue.adopt``."""
    counts = [0] * len(KINDS)
    for index in indexes:
        counts[index] += 1
    return counts


def shutdown_error(
    cause: DataFastError | None, maybe_delivered: bool, reason: str
) -> ShutdownError:
    """A request's own ``ShutdownError``, its ``__cause__`` the last attempt's error."""
    error = ShutdownError(reason, maybe_delivered=maybe_delivered)
    error.__cause__ = cause
    return error
