"""A client's life as its user sees it: a lazy start is said once, an exit with goals pending
is said on stderr, and ``repr()`` shows the run's state from new to closed and back."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable

import pytest

from datafast_async import ClientClosedError, DataFast, Stats

from ._fakes import Gate, Recorder, until

MakeClient = Callable[..., DataFast]


def lazy_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "started lazily" in r.getMessage()]


# -- a lazy start ------------------------------------------------------------------------------


async def test_a_lazy_start_is_warned_about_once_per_client_with_how_to_close_it(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    by_track_nowait = make_client()
    deliveries = [by_track_nowait.track_nowait("v", f"g{i}") for i in range(3)]
    by_track = make_client(on_full="block")
    deliveries.append(await by_track.track("v", "tracked"))
    deliveries.append(await by_track.track("v", "tracked_again"))
    by_send = make_client()
    await by_send.send("v", "sent")
    await by_send.send("v", "sent_again")
    for df in (by_track_nowait, by_track, by_send):
        await df.aclose()
    assert all(d.result is not None for d in deliveries)
    lines = lazy_lines(caplog)
    assert len(lines) == 3  # one per client, whatever the number of goals
    for line in lines:
        assert line.levelno == logging.WARNING
        message = line.getMessage()
        assert "async with DataFast(...)" in message
        assert "await df.aclose()" in message
        assert "datafast_async.starlette lifespan" in message


def test_a_lazy_start_in_each_new_event_loop_is_still_said_once(
    make_client: MakeClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A client used lazily in one loop after another (each ending without aclose(), as a
    test suite's loops do) says it once in all."""
    df = make_client()

    async def use(name: str) -> None:
        await df.track_nowait("v", name).wait(5)  # nothing pending when the loop ends

    for name in ("first", "second", "third"):
        asyncio.run(use(name))
    assert recorder.names == ["first", "second", "third"]
    assert len(recorder.transports) == 3  # a new run in each loop
    assert len(lazy_lines(caplog)) == 1


async def test_a_client_started_explicitly_never_warns_about_a_lazy_start(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    started = make_client()
    await started.start()
    await started.track_nowait("v", "a").wait(5)
    await started.send("v", "b")
    await started.aclose()
    async with make_client(on_full="block") as entered:
        await (await entered.track("v", "c")).wait(5)
    restarted = make_client()
    await restarted.start()
    await restarted.aclose()
    await restarted.start()  # started again after aclose(): still explicit
    await restarted.track_nowait("v", "d").wait(5)
    await restarted.aclose()
    assert lazy_lines(caplog) == []


# -- exiting with goals pending ----------------------------------------------------------------

_EXIT_SCRIPT = """
import asyncio, sys, threading
from datafast_async import DataFast
from datafast_async._transport import MockTransport, Response

async def never_answer(request):
    await asyncio.Event().wait()

mode = sys.argv[1]
df = DataFast("df_unit_test_key", _transport_factory=lambda: MockTransport(never_answer))

if mode == "never started":
    # Goals handed over by a thread (no event loop ever ran): they wait for start().
    thread = threading.Thread(target=lambda: [df.track_nowait("v", f"g{i}") for i in range(3)])
    thread.start()
    thread.join()
elif mode == "running in another thread":
    # The app's loop runs in a daemon thread, still sending when the main thread exits.
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def track():
        for i in range(3):
            df.track_nowait("v", f"g{i}")
        while df.stats().in_flight < 3:
            await asyncio.sleep(0)

    asyncio.run_coroutine_threadsafe(track(), loop).result(30)
elif mode == "closed":
    async def main():
        for i in range(3):
            df.track_nowait("v", f"g{i}")
        await df.aclose(timeout=0)

    asyncio.run(main())
print("exiting", flush=True)
"""


@pytest.mark.parametrize("mode", ["never started", "running in another thread"])
def test_an_exit_with_goals_pending_is_said_on_stderr_with_the_count(mode: str) -> None:
    """No logging configured: Python's last-resort handler prints the exit WARNING."""
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == "exiting\n"
    lines = [line for line in done.stderr.splitlines() if "the process is exiting" in line]
    assert lines == [
        "the process is exiting with 3 goals still pending in DataFast clients that were not "
        "closed: they are lost (a client never started in this process reported them to "
        "on_failure). Close the client before exit: `async with DataFast(...)`, `await "
        "df.aclose()`, or the datafast_async.starlette lifespan"
    ]
    # Said once: the client's collection in the interpreter's teardown does not repeat it.
    assert [line for line in done.stderr.splitlines() if "3 goals" in line] == lines


def test_an_exit_after_aclose_says_nothing_of_pending_goals() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, "closed"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == "exiting\n"
    assert "3 goals were still undelivered at the shutdown deadline" in done.stderr
    assert "the process is exiting" not in done.stderr


# -- the run's state, as repr() shows it ---------------------------------------------------------


async def test_repr_shows_the_run_state_from_new_to_closed_and_again(
    make_client: MakeClient, recorder: Recorder
) -> None:
    held = Gate()
    recorder.answer = held
    df = make_client()
    assert "state='new'" in repr(df)
    await df.start()
    assert "state='running'" in repr(df)
    delivery = df.track_nowait("v", "held")
    await until(lambda: len(recorder.bodies) == 1)
    closing = asyncio.ensure_future(df.aclose(timeout=5))
    await until(lambda: "state='closing'" in repr(df))
    with pytest.raises(ClientClosedError):
        df.track_nowait("v", "refused while closing")
    assert not closing.done()
    held.open.set()
    assert await closing == Stats(enqueued=1, delivered=1)
    assert "state='closed'" in repr(df)
    assert delivery.result is not None
    with pytest.raises(ClientClosedError):
        df.track_nowait("v", "refused when closed")
    await df.start()  # a closed client starts again, afresh
    assert "state='running'" in repr(df)
    assert df.stats() == Stats()
    await df.track_nowait("v", "again").wait(5)
    await df.aclose()
    assert "state='closed'" in repr(df)
    assert recorder.names == ["held", "again"]


async def test_a_client_closed_before_it_ever_started_goes_from_new_to_closed(
    make_client: MakeClient, recorder: Recorder
) -> None:
    df = make_client()
    assert "state='new'" in repr(df)
    assert await df.aclose() == Stats()
    assert "state='closed'" in repr(df)
    assert recorder.transports == []  # nothing was started to close it
