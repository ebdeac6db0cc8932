"""Interleavings: the public calls in awkward orders."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from datafast_async import ClientClosedError, DataFast, Stats


async def test_a_client_closed_before_it_ever_started_refuses_goals_as_closed(
    make_client: Callable[..., DataFast],
) -> None:
    """aclose() on a client that never started, then goals: ClientClosedError (it was an
    AttributeError from a run that had no loop), until start()."""
    df = make_client()
    assert await df.aclose() == Stats()
    with pytest.raises(ClientClosedError):
        df.track_nowait("v", "too_late")
    with pytest.raises(ClientClosedError):
        await df.track("v", "too_late")
    with pytest.raises(ClientClosedError):
        await df.send("v", "too_late")
    assert await df.flush() is True
    await df.start()
    await df.track_nowait("v", "after_start").wait(5)
    assert await df.aclose() == Stats(enqueued=1, delivered=1)
