# ruff: noqa: RUF001  (the tables use the multiplication sign and the en dash on purpose)
"""The goals of the performance issues, and the markdown tables a run prints."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["evaluate", "markdown"]

Row = dict[str, Any]


def _s(section: dict[str, Any] | None, *path: str) -> dict[str, Any] | None:
    node: Any = section
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) and "median" in node else None


def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.3f}×"
    if unit == "ns":
        return f"{value / 1000:.2f} µs" if value >= 1000 else f"{value:.0f} ns"
    if unit == "B":
        return f"{value:.0f} B"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "µs":
        return f"{value:.0f} µs"
    if unit == "µs2":
        return f"{value:.2f} µs"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "%":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:,.0f}"


def _spread(s: dict[str, Any], unit: str) -> str:
    if s["min"] == s["max"]:
        return _fmt(s["median"], unit)
    return f"{_fmt(s['median'], unit)} [{_fmt(s['min'], unit)}–{_fmt(s['max'], unit)}]"


def evaluate(results: dict[str, Any]) -> list[Row]:
    """One row per goal of the issue: the SDK's figure, what it is compared with in the same
    run, their ratio, the goal, and whether the median meets it."""
    rows: list[Row] = []

    def add(
        figure: str,
        sdk: tuple[dict[str, Any] | None, str],
        other: tuple[str, dict[str, Any] | None, str],
        ratio: dict[str, Any] | None,
        goal: str,
        judged: dict[str, Any] | None,
        test: Callable[[float], bool] | None,
    ) -> None:
        if judged is None:
            return
        sdk_s, sdk_unit = sdk
        label, other_s, other_unit = other
        value = judged["median"]
        rows.append(
            {
                "figure": figure,
                "sdk": _spread(sdk_s, sdk_unit) if sdk_s is not None else "",
                "compared_with": f"{label} {_spread(other_s, other_unit)}" if other_s else label,
                "ratio": _spread(ratio, "x") if ratio is not None else "",
                "goal": goal,
                "median": value,
                # None: a figure reported, with no goal to meet.
                "met": None if test is None else bool(test(value)) and not math.isnan(value),
            }
        )

    enqueue = results.get("enqueue")
    track_ns, dict_ns, enqueue_ratio = (
        _s(enqueue, "track_nowait_ns"),
        _s(enqueue, "dict_put_nowait_ns"),
        _s(enqueue, "ratio"),
    )
    for goal, judged, test in (
        ("≤ 1.5 µs", track_ns, lambda v: v <= 1500),
        ("≤ 5× the dict + `put_nowait`", enqueue_ratio, lambda v: v <= 5),
    ):
        add(
            "`track_nowait`, validation included (2-key metadata)",
            (track_ns, "ns"),
            ("dict + `Queue.put_nowait`", dict_ns, "ns"),
            enqueue_ratio,
            goal,
            judged,
            test,
        )
    delivery = results.get("delivery") or {}
    for n in sorted(delivery, key=int):
        ratio = _s(delivery, n, "rate_ratio")
        add(
            f"delivered goals/s, N = {n}",
            (_s(delivery, n, "sdk_rate"), "/s"),
            ("raw aiohttp loop", _s(delivery, n, "raw_rate"), "/s"),
            ratio,
            "≥ 0.95×",
            ratio,
            lambda v: v >= 0.95,
        )
    for n in sorted(delivery, key=int):
        ratio = _s(delivery, n, "cpu_ratio")
        add(
            f"client CPU per delivered goal, N = {n}",
            (_s(delivery, n, "sdk_cpu"), "µs"),
            ("raw aiohttp loop", _s(delivery, n, "raw_cpu"), "µs"),
            ratio,
            "≤ 1.10×",
            ratio,
            lambda v: v <= 1.10,
        )
    _payments_goals(results.get("payments"), add)
    _sync_goals(results.get("sync"), add)
    _handler_goals(results.get("handler"), add)
    memory = results.get("memory")
    per_goal = _s(memory, "bytes_per_goal")
    add(
        "bytes per queued goal, its `Delivery` included (2-key metadata)",
        (per_goal, "B"),
        ("payload dict in an `asyncio.Queue`", _s(memory, "bytes_per_dict_payload"), "B"),
        _s(memory, "ratio"),
        "≤ 350 B",
        per_goal,
        lambda v: v <= 350,
    )
    drain = results.get("drain")
    ratio = _s(drain, "ratio")
    add(
        "`aclose()` delivering 10,000 queued goals",
        (_s(drain, "aclose_goals_per_s"), "/s"),
        ("steady delivery", _s(drain, "steady_goals_per_s"), "/s"),
        ratio,
        "≥ 0.9× steady",
        ratio,
        lambda v: v >= 0.9,
    )
    _adaptive_goals(results.get("adaptive"), add)
    _spool_goals(results.get("spool"), add)
    loop = results.get("loop")
    longest = _s(loop, "longest_sdk_step_ms")
    add(
        f"the SDK's longest loop step (CPU) over {(loop or {}).get('goals', 0):,} goals",
        (longest, "ms"),
        ("its steps over 10 ms", _s(loop, "sdk_steps_over_10ms"), ""),
        None,
        "< 10 ms",
        longest,
        lambda v: v < 10,
    )
    return rows


def _count(value: float) -> dict[str, Any]:
    """A single count (a whole run's total) in the shape the table's cells take."""
    return {"median": value, "min": value, "max": value}


def _payments_goals(payments: dict[str, Any] | None, add: Callable[..., None]) -> None:
    """Payments through the same pipeline: the goals' ratios."""
    if not payments:
        return
    delivery = payments.get("delivery") or {}
    for n in sorted(delivery, key=int):
        ratio = _s(delivery, n, "rate_ratio")
        add(
            f"delivered payments/s, N = {n}",
            (_s(delivery, n, "sdk_rate"), "/s"),
            ("raw aiohttp loop (payments)", _s(delivery, n, "raw_rate"), "/s"),
            ratio,
            "≥ 0.95×",
            ratio,
            lambda v: v >= 0.95,
        )
    enqueue = payments.get("enqueue")
    ratio = _s(enqueue, "ratio")
    add(
        "`track_payment_nowait`, validation included",
        (_s(enqueue, "track_payment_nowait_ns"), "ns"),
        ("`track_nowait`", _s(enqueue, "track_nowait_ns"), "ns"),
        ratio,
        "≤ 1.3× `track_nowait`",
        ratio,
        lambda v: v <= 1.3,
    )


def _sync_goals(sync: dict[str, Any] | None, add: Callable[..., None]) -> None:
    """BackgroundClient from a thread beside DataFast in its loop; instrument() beside none."""
    if not sync:
        return
    add(
        "`BackgroundClient.track_nowait` from a thread without a loop",
        (_s(sync, "plain_thread_ns"), "ns"),
        ("`DataFast.track_nowait` in its loop", _s(sync, "plain_loop_ns"), "ns"),
        _s(sync, "plain_ratio"),
        "reported",
        _s(sync, "plain_ratio"),
        None,
    )
    for label, key, base in (
        ("`DataFast.track_nowait` with `instrument()`", "instrument_loop_ratio", "plain_loop_ns"),
        (
            "`BackgroundClient.track_nowait` with `instrument()`",
            "instrument_thread_ratio",
            "plain_thread_ns",
        ),
    ):
        ratio = _s(sync, key)
        add(
            label,
            (_s(sync, base.replace("plain", "instrumented")), "ns"),
            ("without", _s(sync, base), "ns"),
            ratio,
            "unchanged (≤ 1.05×)",
            ratio,
            lambda v: v <= 1.05,
        )


def _handler_goals(handler: dict[str, Any] | None, add: Callable[..., None]) -> None:
    """Issue 10's goals for the FastAPI app: one goal per ten requests, 50 ms upstream, `track`
    beside a hand-written background sender (raw aiohttp) in the same run."""
    sustained = (handler or {}).get("sustained_50ms")
    if sustained is None:
        return
    every = sustained["every"]
    where = f"one goal per {every} requests, 50 ms upstream"
    track, raw = ("endpoints", "track"), ("endpoints", "raw_sender")
    ratio = _s(sustained, *track, "rps_ratio_vs_raw")
    add(
        f"FastAPI req/s with `track`, {where}",
        (_s(sustained, *track, "rps"), "/s"),
        ("hand-written sender (raw aiohttp)", _s(sustained, *raw, "rps"), "/s"),
        ratio,
        "≥ 0.95×",
        ratio,
        lambda v: v >= 0.95,
    )
    ratio = _s(sustained, *track, "p99_ratio_vs_raw")
    add(
        f"FastAPI p99 with `track`, {where}",
        (_s(sustained, *track, "p99_ms"), "ms"),
        ("hand-written sender (raw aiohttp)", _s(sustained, *raw, "p99_ms"), "ms"),
        ratio,
        "≤ 1.2×",
        ratio,
        lambda v: v <= 1.2,
    )
    totals = sustained.get("totals") or {}
    sdk, other = totals.get("track"), totals.get("raw_sender")
    if sdk is None or other is None:
        return
    add(
        f"goals dropped (queue full), {where}, the whole run",
        (_count(sdk["dropped"]), ""),
        ("hand-written sender", _count(other["dropped"]), ""),
        None,
        "0",
        _count(sdk["dropped"]),
        lambda v: v == 0,
    )
    add(
        f"goals accepted but not delivered once the senders were drained, {where} "
        f"(of {sdk['accepted']:,} accepted)",
        (_count(sdk["undelivered"]), ""),
        (f"hand-written sender (of {other['accepted']:,})", _count(other["undelivered"]), ""),
        None,
        "0",
        _count(sdk["undelivered"]),
        lambda v: v == 0,
    )


def _adaptive_goals(adaptive: dict[str, Any] | None, add: Callable[..., None]) -> None:
    """Issue 10's goals: the default (adaptive) client beside the limit fixed at 8."""
    if adaptive is None:
        return
    for key, latency in (("latency_50ms", "50 ms"), ("latency_200ms", "200 ms")):
        section = adaptive.get(key)
        if section is None:
            continue
        rate = section["offered_per_s"]
        ratio = _s(section, "adaptive", "ratio")
        add(
            f"delivered/s, {rate:,.0f} goals/s offered, API at {latency} (jittered)",
            (_s(section, "adaptive", "delivered_per_s"), "/s"),
            ("limit fixed at 8", _s(section, "fixed_8", "delivered_per_s"), "/s"),
            ratio,
            "≥ 0.98× offered",
            ratio,
            lambda v: v >= 0.98,
        )
        dropped = _s(section, "adaptive", "dropped")
        add(
            f"goals dropped, {rate:,.0f} goals/s offered, API at {latency}",
            (dropped, ""),
            ("limit fixed at 8", _s(section, "fixed_8", "dropped"), ""),
            None,
            "0",
            dropped,
            lambda v: v == 0,
        )
        burst = _s(section, "adaptive", "burst", "drained_s")
        if burst is not None or _s(section, "adaptive", "burst", "delivered_in_time"):
            fixed = _s(section, "fixed_8", "burst", "drained_s")
            fixed_label = (
                "limit fixed at 8"
                if fixed is not None
                else f"limit fixed at 8: not drained in {adaptive['fixed_cap_s']:g} s; delivered"
            )
            add(
                f"burst of {adaptive['burst']:,} goals, API at {latency}: time to deliver them all",
                (burst, "s"),
                (
                    fixed_label,
                    fixed or _s(section, "fixed_8", "burst", "delivered_in_time"),
                    "s" if fixed is not None else "",
                ),
                None,
                "≤ 25 s, 0 dropped",
                burst or {"median": math.nan},
                lambda v: v <= 25,
            )
        closed = _s(section, "adaptive", "shutdown", "delivered")
        if closed is not None:
            add(
                f"`aclose()` with {adaptive['shutdown_goals']:,} goals queued, API at {latency}: "
                "delivered within the default 10 s",
                (closed, ""),
                ("limit fixed at 8", _s(section, "fixed_8", "shutdown", "delivered"), ""),
                None,
                f"all {adaptive['shutdown_goals']:,}",
                closed,
                lambda v: v >= adaptive["shutdown_goals"],
            )
    capped = adaptive.get("capacity_300") or {}
    chosen = capped.get(str(adaptive.get("decrease")))
    if chosen is not None:
        goodput = _s(chosen, "goodput_per_s")
        add(
            "goodput, server capped at 300 requests/s, 50 ms",
            (goodput, "/s"),
            ("the cap", None, ""),
            None,
            "≥ 270/s (0.9 × 300)",
            goodput,
            lambda v: v >= 270,
        )
        share = _s(chosen, "share_429")
        add(
            "429 answers, server capped at 300 requests/s",
            (share, "%"),
            ("of all requests", None, ""),
            None,
            "≤ 10 %",
            share,
            lambda v: v <= 0.10,
        )


def _spool_goals(spool: dict[str, Any] | None, add: Callable[..., None]) -> None:
    """Issue 9's figures for the durable spool, each beside the same client without one."""
    if spool is None:
        return
    settings = spool["settings"]
    ratio = _s(spool, "track_ratio")
    add(
        "`track_nowait` with a spool (its writer thread running; 2-key metadata)",
        (_s(spool, "track_nowait_spool_ns"), "ns"),
        ("without a spool", _s(spool, "track_nowait_ns"), "ns"),
        ratio,
        "≤ 1.5×",
        ratio,
        lambda v: v <= 1.5,
    )
    ratio = _s(spool, "rate_ratio")
    add(
        f"delivered goals/s with a spool, N = {settings['total']:,}, "
        f"concurrency {settings['concurrency']}",
        (_s(spool, "rate_spool"), "/s"),
        ("without a spool", _s(spool, "rate"), "/s"),
        ratio,
        "≥ 0.9×",
        ratio,
        lambda v: v >= 0.9,
    )
    per_goal = _s(spool, "disk_bytes_per_goal")
    add(
        "bytes on disk per journaled goal, before its acknowledgement",
        (per_goal, "B"),
        ("its request body", _count(settings["body_bytes"]), "B"),
        None,
        "(report)",
        per_goal,
        None,
    )
    replay = _s(spool, "replay_s")
    add(
        f"time to replay {settings['replay_goals']:,} journaled goals, fast server "
        "(`start()` to `flush()` True)",
        (replay, "s"),
        ("goals/s", _s(spool, "replay_rate"), "/s"),
        None,
        "(report)",
        replay,
        None,
    )
    kill = spool.get("kill") or {}
    beyond = _s(kill, "lost_beyond_window")
    if beyond is not None:
        worst = _count(beyond["max"])
        add(
            f"goals lost to `kill -9` at {settings['kill_rate']:,.0f} goals/s, API at 100 ms "
            f"(killed after {settings['kill_after_s']:g} s)",
            (_s(kill, "lost"), ""),
            ("accepted in the last 0.1 s", _s(kill, "accepted_last_100ms"), ""),
            None,
            "≤ those accepted in the last 0.1 s (every round)",
            worst,
            lambda v: v <= 0,
        )
        add(
            f"goals delivered twice after `kill -9` at {settings['kill_rate']:,.0f} goals/s",
            (_s(kill, "duplicated"), ""),
            ("goals accepted", _s(kill, "accepted"), ""),
            None,
            "(report: in flight or delivered and not yet acknowledged)",
            _s(kill, "duplicated"),
            None,
        )
    memory = spool.get("memory") or {}
    ratio = _s(memory, "rss_ratio")
    large, small = settings["memory_large"], settings["memory_small"]
    add(
        f"resident memory, {large:,} goals held during an outage, "
        f"`max_queue_size={settings['max_queue_size']:,}`, no `Delivery` kept "
        "(tracked 1,000 every 10 ms)",
        (_s(memory, "large_rss_mib"), "MiB"),
        (f"holding {small:,}", _s(memory, "small_rss_mib"), "MiB"),
        ratio,
        "≤ 1.2×",
        ratio,
        lambda v: v <= 1.2,
    )
    ratio = _s(memory, "burst_rss_ratio")
    add(
        f"… the same, the {large:,} goals tracked in one tight loop",
        (_s(memory, "burst_large_rss_mib"), "MiB"),
        (f"holding {small:,}", _s(memory, "burst_small_rss_mib"), "MiB"),
        ratio,
        "(report)",
        ratio,
        None,
    )


def _spool_details(spool: dict[str, Any] | None, add: Callable[..., None]) -> None:
    if spool is None:
        return
    add(
        "spool: the writer's work per goal (encode, record, write), off the caller's path",
        _s(spool, "writer_us_per_goal"),
        "µs2",
    )
    kill = spool.get("kill") or {}
    add("spool, `kill -9`: goals accepted before the kill", _s(kill, "accepted"), "")
    add("spool, `kill -9`: goals sent again by the next start", _s(kill, "replayed"), "")
    memory = spool.get("memory") or {}
    for prefix, how in (("", "paced"), ("burst_", "burst")):
        for name, count in (("small", "memory_small"), ("large", "memory_large")):
            label = f"spool, {spool['settings'][count]:,} goals held ({how})"
            add(f"{label}: resident memory added", _s(memory, f"{prefix}{name}_added_mib"), "MiB")
            add(f"{label}: peak resident memory", _s(memory, f"{prefix}{name}_peak_mib"), "MiB")


def _details(results: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def add(label: str, s: dict[str, Any] | None, unit: str) -> None:
        if s is not None:
            out.append((label, _spread(s, unit)))

    enqueue = results.get("enqueue")
    add("`track_nowait`", _s(enqueue, "track_nowait_ns"), "ns")
    add("build a dict + `asyncio.Queue.put_nowait`", _s(enqueue, "dict_put_nowait_ns"), "ns")
    add(
        "bare `asyncio.Queue.put_nowait` of a prebuilt dict (the issue measured about 150 ns)",
        _s(enqueue, "bare_put_nowait_ns"),
        "ns",
    )
    for step, label in (
        ("empty_loop", "an empty `for` loop, per turn"),
        ("metadata_literal", "building the 2-key metadata dict"),
        ("validate", "`validate_goal`: every rule, and the metadata copied"),
        ("delivery", "building the `Delivery`"),
        ("offer", "`RequestQueue.offer`: the lock, the bound, the count"),
        ("running_loop", "`asyncio._get_running_loop()`: which thread is calling"),
    ):
        add(f"`track_nowait`'s steps, one at a time: {label}", _s(enqueue, f"step_{step}_ns"), "ns")
    delivery = results.get("delivery") or {}
    for n in sorted(delivery, key=int):
        add(f"raw aiohttp loop, N = {n}: goals/s", _s(delivery, n, "raw_rate"), "/s")
        add(f"SDK, N = {n}: goals/s", _s(delivery, n, "sdk_rate"), "/s")
        add(
            f"SDK, N = {n}: goals/s of the `flush` alone (enqueueing excluded; no goal)",
            _s(delivery, n, "sdk_flush_rate"),
            "/s",
        )
        add(f"raw aiohttp loop, N = {n}: client CPU per goal", _s(delivery, n, "raw_cpu"), "µs")
        add(f"SDK, N = {n}: client CPU per goal", _s(delivery, n, "sdk_cpu"), "µs")
    payments = results.get("payments") or {}
    for n in sorted(payments.get("delivery") or {}, key=int):
        section = payments["delivery"]
        add(f"SDK, N = {n}: client CPU per payment", _s(section, n, "sdk_cpu"), "µs")
        add(f"raw aiohttp loop, N = {n}: client CPU per payment", _s(section, n, "raw_cpu"), "µs")
    _handler_details(results.get("handler"), add, out)
    memory = results.get("memory")
    add("bytes per queued goal (SDK)", _s(memory, "bytes_per_goal"), "B")
    add("bytes per payload dict in an `asyncio.Queue`", _s(memory, "bytes_per_dict_payload"), "B")
    if memory is not None:
        full = memory["full_queue"]
        out.append(
            (
                f"resident memory added by a full queue ({full['max_queue_size']:,} goals)",
                _fmt(full["delta_mib"], "MiB"),
            )
        )
    drain = results.get("drain")
    add(
        "steady delivery (N queued, then `flush`), concurrency 8",
        _s(drain, "steady_goals_per_s"),
        "/s",
    )
    add("`aclose()` draining the queue", _s(drain, "aclose_goals_per_s"), "/s")
    adaptive = results.get("adaptive") or {}
    for key, latency in (("latency_50ms", "50 ms"), ("latency_200ms", "200 ms")):
        section = adaptive.get(key)
        if section is None:
            continue
        for mode, label in (("adaptive", "adaptive limit"), ("fixed_8", "limit fixed at 8")):
            base = (mode,)
            prefix = f"{label}, API at {latency}, steady offering"
            add(f"{prefix}: peak queue", _s(section, *base, "peak_queue"), "")
            add(f"{prefix}: time to drain after it", _s(section, *base, "drain_s"), "s")
            add(
                f"{prefix}: goals still waiting when the drain was cut off",
                _s(section, *base, "left_after_drain_cap"),
                "",
            )
            add(f"{prefix}: highest limit", _s(section, *base, "limit_max"), "")
            over_time = section.get(mode, {}).get("limit_over_time")
            if over_time:
                shown = ", ".join(f"{t:g} s: {limit}" for t, limit in over_time[::4])
                out.append((f"{prefix}: the limit over time (last round)", shown))
            add(
                f"{label}, burst of {adaptive['burst']:,} at {latency}: delivered by the cut-off",
                _s(section, *base, "burst", "delivered_in_time"),
                "",
            )
            add(
                f"{label}, `aclose()` of {adaptive['shutdown_goals']:,} at {latency}: seconds",
                _s(section, *base, "shutdown", "seconds"),
                "s",
            )
    for factor, figures in (adaptive.get("capacity_300") or {}).items():
        prefix = f"capped server (300 requests/s), decrease factor {factor}"
        add(f"{prefix}: goodput", _s(figures, "goodput_per_s"), "/s")
        add(f"{prefix}: 429 share", _s(figures, "share_429"), "%")
        add(f"{prefix}: the limit's low", _s(figures, "limit_min"), "")
        add(f"{prefix}: the limit's high", _s(figures, "limit_max"), "")
        add(f"{prefix}: the limit's mean", _s(figures, "limit_mean"), "")
    _spool_details(results.get("spool"), add)
    loop = results.get("loop")
    add("loop: steps of the run", _s(loop, "steps"), "")
    add("loop: the longest step (CPU outside GC)", _s(loop, "longest_step_ms"), "ms")
    add("loop: the SDK's longest step", _s(loop, "longest_sdk_step_ms"), "ms")
    add("loop: the SDK's steps that blocked in the kernel", _s(loop, "sdk_steps_blocked"), "")
    add("loop: the longest garbage collection", _s(loop, "longest_gc_ms"), "ms")
    return out


def _handler_details(
    handler: dict[str, Any] | None,
    add: Callable[[str, dict[str, Any] | None, str], None],
    out: list[tuple[str, str]],
) -> None:
    if handler is None:
        return
    sustained = handler.get("sustained_50ms")
    if sustained is not None:
        label = f"one goal per {sustained['every']} requests, 50 ms upstream"
        names = {
            "plain": "`plain` (no tracking)",
            "track": "`track`",
            "raw_sender": "`raw_sender` (hand-written)",
        }
        for name, shown in names.items():
            base = ("endpoints", name)
            add(f"FastAPI {shown}, {label}: req/s", _s(sustained, *base, "rps"), "/s")
            add(f"FastAPI {shown}, {label}: p50", _s(sustained, *base, "p50_ms"), "ms")
            add(f"FastAPI {shown}, {label}: p99", _s(sustained, *base, "p99_ms"), "ms")
            add(
                f"FastAPI {shown}, {label}: the app's CPU per request",
                _s(sustained, *base, "app_cpu_per_request_us"),
                "µs",
            )
            add(
                f"FastAPI {shown}, {label}: the app's share of its core",
                _s(sustained, *base, "app_cpu_share"),
                "%",
            )
        for name in ("track", "raw_sender"):
            base, shown = ("endpoints", name), names[name]
            add(
                f"FastAPI {shown}, {label}: req/s ÷ `plain`",
                _s(sustained, *base, "rps_ratio"),
                "x",
            )
            add(
                f"FastAPI {shown}, {label}: p99 ÷ `plain`",
                _s(sustained, *base, "p99_ratio"),
                "x",
            )
        add(
            f"FastAPI `track` ÷ `raw_sender`, {label}: req/s, every window's requests pooled",
            _s(sustained, "endpoints", "track", "pooled_rps_ratio_vs_raw"),
            "x",
        )
        add(
            f"FastAPI `track` ÷ `raw_sender`, {label}: the app's CPU per request (the same "
            "comparison, whatever share of its core the machine left the app)",
            _s(sustained, "endpoints", "track", "cpu_ratio_vs_raw"),
            "x",
        )
        for name in ("track", "raw_sender"):
            base, shown = ("endpoints", name), names[name]
            add(
                f"{shown}, {label}: goals handed over per second",
                _s(sustained, *base, "goals_per_s"),
                "/s",
            )
            add(
                f"{shown}, {label}: goals delivered per second",
                _s(sustained, *base, "delivered_per_s"),
                "/s",
            )
            add(
                f"{shown}, {label}: goals queued or in flight at the window's end",
                _s(sustained, *base, "backlog"),
                "",
            )
            add(
                f"{shown}, {label}: the app's CPU per delivered goal, beyond `plain`'s",
                _s(sustained, *base, "goal_cpu_us"),
                "µs",
            )
            add(
                f"{shown}, {label}: … of which handing it over in the request",
                _s(sustained, *base, "handoff_us"),
                "µs",
            )
            add(
                f"{shown}, {label}: … of which sending it in the background (the rest)",
                _s(sustained, *base, "sender_cpu_us"),
                "µs",
            )
            totals = (sustained.get("totals") or {}).get(name)
            if totals is not None:
                out.append(
                    (
                        f"{shown}, {label}: the whole run, once drained",
                        f"{totals['accepted']:,} accepted, {totals['delivered']:,} delivered, "
                        f"{totals['failed']:,} failed, {totals['dropped']:,} dropped",
                    )
                )
        add(
            f"load generator's CPU share of its core, `plain`, {label}",
            _s(sustained, "endpoints", "plain", "loadgen_cpu_share"),
            "%",
        )
    for key, label in (("upstream_50ms", "50 ms upstream"), ("upstream_0ms", "instant upstream")):
        every_request = handler.get(key)
        if every_request is None:
            continue
        label = f"a goal in every request, {label}"
        for name in ("plain", "inline", "background", "track"):
            base = ("endpoints", name)
            rps = _s(every_request, *base, "rps")
            delivered = _s(every_request, *base, "delivered_per_s")
            dropped = _s(every_request, *base, "dropped")
            if rps is not None and delivered is not None and dropped is not None:
                out.append(
                    (
                        f"FastAPI `{name}`, {label}: req/s; goals delivered/s; goals dropped "
                        "in the window",
                        f"{_spread(rps, '/s')}; {_spread(delivered, '/s')} delivered; "
                        f"{_spread(dropped, '')} dropped",
                    )
                )
            else:
                add(f"FastAPI `{name}`, {label}: req/s", rps, "/s")
            add(
                f"FastAPI `{name}`, {label}: req/s ÷ `plain`",
                _s(every_request, *base, "rps_ratio"),
                "x",
            )
            add(f"FastAPI `{name}`, {label}: p50", _s(every_request, *base, "p50_ms"), "ms")
            add(f"FastAPI `{name}`, {label}: p99", _s(every_request, *base, "p99_ms"), "ms")
            add(
                f"FastAPI `{name}`, {label}: p99 ÷ `plain`",
                _s(every_request, *base, "p99_ratio"),
                "x",
            )
            add(
                f"FastAPI `{name}`, {label}: the app's CPU per request",
                _s(every_request, *base, "app_cpu_per_request_us"),
                "µs",
            )
        plain = ("endpoints", "plain")
        add(
            f"load generator's CPU share of its core, `plain`, {label}",
            _s(every_request, *plain, "loadgen_cpu_share"),
            "%",
        )
        add(
            f"app's CPU share of its core, `plain`, {label}",
            _s(every_request, *plain, "app_cpu_share"),
            "%",
        )
        track = ("endpoints", "track")
        add(
            f"SDK in the app, {label}: backlog at the end",
            _s(every_request, *track, "backlog"),
            "",
        )


def _met(met: bool | None) -> str:
    if met is None:
        return "–"
    return "met" if met else "**not met**"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| figure | SDK, median [min–max] | compared with, same run | ratio | goal | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in evaluate(results):
        lines.append(
            f"| {row['figure']} | {row['sdk']} | {row['compared_with']} | {row['ratio']} | "
            f"{row['goal']} | {_met(row['met'])} |"
        )
    lines += ["", "| measured | median [min–max] |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in _details(results)]
    return "\n".join(lines)
