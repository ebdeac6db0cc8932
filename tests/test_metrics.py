"""``datafast_async.metrics``: OpenTelemetry instruments read through the SDK's
``InMemoryMetricReader`` and a Prometheus collector scraped over HTTP on 127.0.0.1, both
against ``stats()``/``by_kind`` and the circuits of a client on an in-process API: goals,
payments and identifies delivered, failed, dropped and retried, requests held in flight, the
client's and one endpoint's circuit opened, a client that restarts, several clients, closing
the instrumentation, and the extras' ``ImportError``."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import opentelemetry.metrics
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from datafast_async import BackgroundClient, DataFast, Stats
from datafast_async._transport import MockTransport, Request, Response
from datafast_async.metrics import PrometheusCollector, instrument
from datafast_async.testing import ThreadedFakeDataFast

from ._docs import page, python_blocks
from ._fakes import (
    FAST_SPOOL,
    NO_WAIT,
    NO_WAIT_NO_PROBE,
    NO_WAIT_QUICK_PROBE,
    VISITOR,
    error,
    ok,
    until,
)

KINDS = ("goals", "payments", "identify")
ENDPOINTS = ("client", *KINDS)
COUNTERS = ("enqueued", "delivered", "failed", "dropped", "retries")
GAUGES = ("queued", "in_flight", "spooled")
STATE = {"closed": 0, "half-open": 1, "open": 2}

Points = dict[str, dict[str | None, int]]


# -- an in-process API -------------------------------------------------------------------------


class API:
    """Answers per path: success, except a 400 for a request whose name, transaction or user
    starts with ``bad``, a 503 for the first request of each path (retried), and what
    ``refuse`` sets for a path."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.refuse: dict[str, Response] = {}
        self.first_unavailable = True

    def factory(self) -> MockTransport:
        return MockTransport(self)

    def __call__(self, request: Request) -> Response:
        path = urlsplit(request.url).path
        body = json.loads(request.body)
        self.seen[path] += 1
        if path in self.refuse:
            return self.refuse[path]
        if self.first_unavailable and self.seen[path] == 1:
            return error(503, "unavailable")
        marker = body.get("name") or body.get("transaction_id") or body.get("user_id")
        if str(marker).startswith("bad"):
            return error(400, "refused")
        if path == "/api/v1/payments":
            answer = {"message": "Payment recorded", "transaction_id": body["transaction_id"]}
            return Response(200, json.dumps(answer).encode())
        if path == "/api/v1/identify":
            answer = {"status": "success", "data": {"message": "ok", "profileId": "prof_1"}}
            return Response(200, json.dumps(answer).encode())
        return ok()


@pytest.fixture
def api() -> API:
    return API()


@pytest.fixture
def client(api: API) -> Callable[..., DataFast]:
    def make(**kwargs: Any) -> DataFast:
        kwargs.setdefault("api_key", "df_metrics_test_key_01")
        kwargs.setdefault("retry", NO_WAIT)
        return DataFast(_transport_factory=api.factory, **kwargs)

    return make


@pytest.fixture
def otel() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def send_each_kind(df: DataFast, index: int, prefix: str = "ok") -> None:
    df.track_nowait(VISITOR, f"{prefix}_goal_{index}")
    df.track_payment_nowait(10, "USD", f"{prefix}_tx_{index}")
    df.identify_nowait(VISITOR, f"{prefix}_user_{index}")


async def deliver_fail_drop_retry(df: DataFast) -> None:
    """For each kind (with ``max_queue_size=6``): 2 delivered (the first after one retry),
    1 dropped (the queue full), 1 failed (a 400)."""
    for index in range(3):  # nine at once into a queue of six: the last three dropped
        send_each_kind(df, index)
    assert await df.flush(5)
    send_each_kind(df, 0, prefix="bad")
    assert await df.flush(5)


# -- reading what was exported -----------------------------------------------------------------


def otel_points(reader: InMemoryMetricReader) -> Points:
    """The last collection's data points: name -> the attribute's value (None: none) -> value;
    checks each instrument's type and unit."""
    data = reader.get_metrics_data()
    points: Points = {}
    if data is None:
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "datafast_async"
            for metric in scope.metrics:
                short = metric.name.removeprefix("datafast.")
                if short == "circuit.state":
                    assert isinstance(metric.data, Gauge)
                    assert metric.unit == "{state}"
                else:
                    assert isinstance(metric.data, Sum)
                    assert metric.unit == "{request}"
                    assert metric.data.is_monotonic is (short.removeprefix("requests.") in COUNTERS)
                values = points.setdefault(short, {})
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    assert len(attributes) <= 1
                    key = next(iter(attributes.values()), None)
                    assert isinstance(point.value, int)
                    values[None if key is None else str(key)] = point.value
    return points


def prometheus_points(text: str) -> Points:
    """A scrape's samples in the same shape (``datafast_requests_delivered_total{kind=...}``
    as ``requests.delivered``)."""
    points: Points = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("datafast_"):
            continue  # the registry's own (process_, python_)
        for sample in family.samples:
            name = sample.name.removeprefix("datafast_").removesuffix("_total")
            name = name.replace("requests_", "requests.").replace("_limit", ".limit")
            name = name.replace("circuit_", "circuit.")
            key = sample.labels.get("kind", sample.labels.get("endpoint"))
            value = sample.value
            assert value == int(value)
            points.setdefault(name, {})[key] = int(value)
    return points


def expected(
    stats: Stats, circuits: dict[str, str], offsets: dict[str, dict[str, int]] | None = None
) -> Points:
    """What the instruments should say: ``stats()``'s ``by_kind`` (plus earlier runs' counts),
    its limit, and the circuits."""
    offsets = offsets or {}
    points: Points = {}
    for name in COUNTERS:
        points[f"requests.{name}"] = {
            kind: getattr(stats.by_kind[kind], name) + offsets.get(kind, {}).get(name, 0)
            for kind in KINDS
        }
    for name in GAUGES:
        points[f"requests.{name}"] = {kind: getattr(stats.by_kind[kind], name) for kind in KINDS}
    points["concurrency.limit"] = {None: stats.concurrency_limit}
    points["circuit.state"] = {endpoint: STATE[circuits[endpoint]] for endpoint in ENDPOINTS}
    return points


# -- OpenTelemetry ---------------------------------------------------------------------------


async def test_the_data_points_are_stats_by_kind_after_deliveries_failures_drops_and_retries(
    client: Callable[..., DataFast], otel: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = otel
    async with client(max_queue_size=6) as df:
        handle = instrument(df, provider)
        await deliver_fail_drop_retry(df)
        points = otel_points(reader)
        stats = df.stats()
        assert points == expected(stats, df._circuit_states())
        handle.close()
    for kind in KINDS:  # the premise: every counter of every kind moved
        counts = stats.by_kind[kind]
        assert (counts.enqueued, counts.delivered, counts.failed) == (3, 2, 1)
        assert (counts.dropped, counts.retries) == (1, 1)
    assert points["requests.delivered"] == {"goals": 2, "payments": 2, "identify": 2}
    assert points["concurrency.limit"] == {None: stats.concurrency_limit}
    assert stats.concurrency_limit >= 1


async def test_queued_and_in_flight_requests_are_gauges_read_at_collection(
    api: API, otel: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = otel
    api.first_unavailable = False
    held = asyncio.Event()
    answer = api.__call__

    async def hold(request: Request) -> Response:
        await held.wait()
        return answer(request)

    df = DataFast(
        "df_metrics_test_key_01",
        retry=NO_WAIT,
        concurrency=2,
        _transport_factory=lambda: MockTransport(hold),
    )
    async with df:
        handle = instrument(df, provider)
        for index in range(4):
            send_each_kind(df, index)
        await until(lambda: df.stats().in_flight == 2)
        points = otel_points(reader)  # nothing moves while the loop runs this
        stats = df.stats()
        assert points == expected(stats, df._circuit_states())
        assert sum(points["requests.in_flight"].values()) == 2
        assert sum(points["requests.queued"].values()) == 10
        held.set()
        assert await df.flush(5)
        points = otel_points(reader)
        assert points == expected(df.stats(), df._circuit_states())
        assert sum(points["requests.queued"].values()) == 0
        assert points["requests.delivered"] == {"goals": 4, "payments": 4, "identify": 4}
        handle.close()


async def test_requests_beyond_the_queue_wait_in_the_spool_and_are_counted_spooled(
    api: API, otel: tuple[MeterProvider, InMemoryMetricReader], tmp_path: Path
) -> None:
    provider, reader = otel
    api.first_unavailable = False
    held = asyncio.Event()
    answer = api.__call__

    async def hold(request: Request) -> Response:
        await held.wait()
        return answer(request)

    df = DataFast(
        "df_metrics_test_key_01",
        retry=NO_WAIT,
        concurrency=1,
        max_queue_size=2,
        spool_path=tmp_path,
        _spool_options=FAST_SPOOL,
        _transport_factory=lambda: MockTransport(hold),
    )
    async with df:
        handle = instrument(df, provider)
        for index in range(4):
            send_each_kind(df, index)
        await until(lambda: df.stats().in_flight == 1)
        points = otel_points(reader)
        assert points == expected(df.stats(), df._circuit_states())
        assert all(points["requests.spooled"].values())  # beyond the queue: on disk
        assert points["requests.dropped"] == dict.fromkeys(KINDS, 0)
        held.set()
        assert await df.flush(5)
        points = otel_points(reader)
        assert points == expected(df.stats(), df._circuit_states())
        assert points["requests.spooled"] == dict.fromkeys(KINDS, 0)
        assert points["requests.delivered"] == dict.fromkeys(KINDS, 4)
        handle.close()


async def test_one_collection_reads_stats_once_for_every_instrument(
    client: Callable[..., DataFast],
    otel: tuple[MeterProvider, InMemoryMetricReader],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, reader = otel
    async with client() as df:
        handle = instrument(df, provider)
        calls = 0
        stats = df.stats

        def counting() -> Stats:
            nonlocal calls
            calls += 1
            return stats()

        monkeypatch.setattr(df, "stats", counting)
        otel_points(reader)
        assert calls == 1
        send_each_kind(df, 0)
        assert await df.flush(5)
        points = otel_points(reader)
        assert calls == 2
        assert points["requests.enqueued"] == {"goals": 1, "payments": 1, "identify": 1}
        handle.close()


async def test_a_401_opens_the_client_circuit_and_a_403_on_payments_the_payments_one(
    client: Callable[..., DataFast],
    api: API,
    otel: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = otel
    api.first_unavailable = False
    async with client(retry=NO_WAIT_NO_PROBE) as df:
        handle = instrument(df, provider)
        assert otel_points(reader)["circuit.state"] == dict.fromkeys(ENDPOINTS, 0)
        api.refuse["/api/v1/payments"] = error(403, "This token lacks payments:write")
        send_each_kind(df, 0)
        assert await df.flush(5)
        points = otel_points(reader)
        assert points["circuit.state"] == {"client": 0, "goals": 0, "payments": 2, "identify": 0}
        assert points == expected(df.stats(), df._circuit_states())
        assert points["requests.failed"] == {"goals": 0, "payments": 1, "identify": 0}
        handle.close()
    async with client(retry=NO_WAIT_NO_PROBE) as df:
        handle = instrument(df, provider)
        api.refuse["/api/v1/goals"] = error(401, "Invalid API key")
        df.track_nowait(VISITOR, "signup")
        assert await df.flush(5)
        points = otel_points(reader)
        assert points["circuit.state"] == {"client": 2, "goals": 0, "payments": 0, "identify": 0}
        assert points == expected(df.stats(), df._circuit_states())
        handle.close()


async def test_an_open_circuit_reads_half_open_once_its_cool_down_ends(
    client: Callable[..., DataFast],
    api: API,
    otel: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = otel
    api.first_unavailable = False
    api.refuse["/api/v1/payments"] = error(403, "This token lacks payments:write")
    async with client(retry=NO_WAIT_QUICK_PROBE) as df:
        handle = instrument(df, provider)
        df.track_payment_nowait(10, "USD", "tx_1")
        assert await df.flush(5)
        assert otel_points(reader)["circuit.state"]["payments"] in (1, 2)
        await until(lambda: df._circuit_states()["payments"] == "half-open")
        assert otel_points(reader)["circuit.state"]["payments"] == 1
        del api.refuse["/api/v1/payments"]
        df.track_payment_nowait(10, "USD", "tx_2")  # the probe, answered: closed
        assert await df.flush(5)
        assert otel_points(reader)["circuit.state"]["payments"] == 0
        handle.close()


async def test_counters_are_totals_over_the_runs_of_a_client_that_restarts(
    client: Callable[..., DataFast], otel: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = otel
    df = client(max_queue_size=6)
    handle = instrument(df, provider)
    async with df:
        await deliver_fail_drop_retry(df)
        first = otel_points(reader)
    first_run = df.stats()
    async with df:  # a new run: stats() counts from zero
        assert df.stats().enqueued == 0
        assert otel_points(reader) == first | {
            "concurrency.limit": {None: df.stats().concurrency_limit}
        }
        send_each_kind(df, 7)
        send_each_kind(df, 8, prefix="bad")
        assert await df.flush(5)
        second = otel_points(reader)
        offsets = {kind: {name: getattr(first_run.by_kind[kind], name) for name in COUNTERS}
                   for kind in KINDS}  # fmt: skip
        assert second == expected(df.stats(), df._circuit_states(), offsets)
    assert second["requests.delivered"] == {"goals": 3, "payments": 3, "identify": 3}
    assert second["requests.failed"] == {"goals": 2, "payments": 2, "identify": 2}
    assert second["requests.dropped"] == {"goals": 1, "payments": 1, "identify": 1}
    for name in COUNTERS:  # never down
        for kind in KINDS:
            assert second[f"requests.{name}"][kind] >= first[f"requests.{name}"][kind]
    handle.close()


async def test_a_closed_instrumentation_reports_nothing_and_the_client_can_be_instrumented_again(
    client: Callable[..., DataFast], otel: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = otel
    async with client() as df:
        handle = instrument(df, provider)
        with pytest.raises(ValueError, match="already instrumented"):
            instrument(df, provider)
        send_each_kind(df, 0)
        assert await df.flush(5)
        assert otel_points(reader)["requests.enqueued"] == dict.fromkeys(KINDS, 1)
        handle.unregister()
        assert handle.closed
        handle.close()  # idempotent
        assert all(not values for values in otel_points(reader).values())
        again = instrument(df, provider)  # the same instruments, reading this client again
        assert otel_points(reader) == expected(df.stats(), df._circuit_states())
        again.close()


async def test_two_clients_on_one_provider_are_summed_and_their_circuit_is_the_worst(
    client: Callable[..., DataFast],
    api: API,
    otel: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = otel
    api.first_unavailable = False
    async with client() as one, client(retry=NO_WAIT_NO_PROBE) as two:
        handles = [instrument(one, provider), instrument(two, provider)]
        send_each_kind(one, 0)
        send_each_kind(one, 1)
        assert await one.flush(5)
        api.refuse["/api/v1/goals"] = error(401, "Invalid API key")
        two.track_nowait(VISITOR, "signup")
        assert await two.flush(5)
        points = otel_points(reader)
        for handle in handles:
            handle.close()
    assert points["requests.enqueued"] == {"goals": 3, "payments": 2, "identify": 2}
    assert points["requests.delivered"] == {"goals": 2, "payments": 2, "identify": 2}
    assert points["requests.failed"] == {"goals": 1, "payments": 0, "identify": 0}
    assert points["circuit.state"]["client"] == 2
    limits = one.stats().concurrency_limit + two.stats().concurrency_limit
    assert points["concurrency.limit"] == {None: limits}


async def test_the_global_meter_provider_is_used_when_none_is_given(
    client: Callable[..., DataFast],
    otel: tuple[MeterProvider, InMemoryMetricReader],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, reader = otel
    monkeypatch.setattr(opentelemetry.metrics, "get_meter_provider", lambda: provider)
    async with client() as df:
        handle = instrument(df)
        df.track_nowait(VISITOR, "signup")
        assert await df.flush(5)
        assert otel_points(reader) == expected(df.stats(), df._circuit_states())
        handle.close()


def test_instruments_made_before_the_sdk_is_set_serve_the_provider_set_later() -> None:
    """``instrument()`` before ``set_meter_provider`` registers on OpenTelemetry's proxy, whose
    instruments forward to the provider set later; one after it gets the same instruments
    (the SDK would hand back theirs, without the new callbacks, for the same names)."""
    code = """
import asyncio
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from datafast_async import DataFast
from datafast_async._transport import MockTransport
from datafast_async.metrics import instrument
from tests._fakes import NO_WAIT, ok

def client() -> DataFast:
    return DataFast("df_metrics_test_key_01", retry=NO_WAIT,
                    _transport_factory=lambda: MockTransport(lambda request: ok()))

async def main() -> None:
    before, after = client(), client()
    instrument(before)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    instrument(after)
    async with before, after:
        before.track_nowait("v", "a")
        after.track_nowait("v", "b")
        assert await before.flush(5) and await after.flush(5)
        for metric in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics:
            if metric.name == "datafast.requests.delivered":
                print({p.attributes["datafast.kind"]: p.value for p in metric.data.data_points})

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'goals': 2, 'payments': 0, 'identify': 0}"


async def test_a_client_garbage_collected_is_no_longer_reported(
    client: Callable[..., DataFast], otel: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = otel
    df = client()
    handle = instrument(df, provider)
    collector = PrometheusCollector(df)
    await df.aclose()
    assert otel_points(reader)["requests.enqueued"] == dict.fromkeys(KINDS, 0)
    del df
    gc.collect()
    assert all(not values for values in otel_points(reader).values())
    assert collector.collect() == []
    handle.close()


async def test_a_forked_child_counts_from_zero(
    client: Callable[..., DataFast],
    otel: tuple[MeterProvider, InMemoryMetricReader],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process id changing is what a fork looks like to the reader (a real fork of a
    loop's thread is the client's own tests' business)."""
    provider, reader = otel
    async with client() as df:
        handle = instrument(df, provider)
        send_each_kind(df, 0)
        assert await df.flush(5)
        assert otel_points(reader)["requests.enqueued"] == dict.fromkeys(KINDS, 1)
        pid = os.getpid() + 1
        monkeypatch.setattr(os, "getpid", lambda: pid)
        assert otel_points(reader)["requests.enqueued"] == dict.fromkeys(KINDS, 0)
        send_each_kind(df, 1)
        assert await df.flush(5)
        assert otel_points(reader)["requests.enqueued"] == dict.fromkeys(KINDS, 1)
        monkeypatch.undo()
        handle.close()


def test_a_background_client_is_read_from_its_thread(api: API) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with BackgroundClient(
        "df_metrics_test_key_01", retry=NO_WAIT, _transport_factory=api.factory
    ) as bg:
        handle = instrument(bg, provider)
        registry = CollectorRegistry()
        registry.register(PrometheusCollector(bg))
        bg.track_nowait(VISITOR, "signup")
        bg.track_payment_nowait(10, "USD", "tx_1")
        bg.identify_nowait(VISITOR, "user_1")
        assert bg.flush(5)
        stats = bg.stats()
        circuits = bg._df._circuit_states()
        assert otel_points(reader) == expected(stats, circuits)
        assert prometheus_points(generate_latest(registry).decode()) == expected(stats, circuits)
        handle.close()
    assert stats.by_kind["payments"].delivered == 1
    provider.shutdown()


# -- Prometheus ----------------------------------------------------------------------------------


async def test_a_metrics_scrape_over_http_says_what_stats_says(
    client: Callable[..., DataFast], api: API
) -> None:
    registry = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        async with (
            client(max_queue_size=6, retry=NO_WAIT_NO_PROBE) as df,
            aiohttp.ClientSession() as http,
        ):
            registry.register(PrometheusCollector(df))
            await deliver_fail_drop_retry(df)
            api.refuse["/api/v1/payments"] = error(403, "This token lacks payments:write")
            df.track_payment_nowait(10, "USD", "refused_tx")
            assert await df.flush(5)
            async with http.get(url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                text = await response.text()
            stats = df.stats()
            points = prometheus_points(text)
            assert points == expected(stats, df._circuit_states())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert 'datafast_requests_delivered_total{kind="goals"} 2.0' in text
    assert "# TYPE datafast_requests_queued gauge" in text
    assert points["circuit.state"] == {"client": 0, "goals": 0, "payments": 2, "identify": 0}
    assert points["requests.failed"] == {"goals": 1, "payments": 2, "identify": 1}
    assert stats.by_kind["goals"].dropped == 1


async def test_the_collector_describes_without_reading_and_keeps_totals_across_runs(
    client: Callable[..., DataFast], monkeypatch: pytest.MonkeyPatch
) -> None:
    df = client()
    collector = PrometheusCollector(df)
    monkeypatch.setattr(df, "stats", lambda: pytest.fail("read at registration"))
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    names = [family.name for family in collector.describe()]
    assert names[:2] == ["datafast_requests_enqueued", "datafast_requests_delivered"]
    assert all(not family.samples for family in collector.describe())
    monkeypatch.undo()
    for _ in range(2):
        async with df:
            send_each_kind(df, 0)
            assert await df.flush(5)
    points = prometheus_points(generate_latest(registry).decode())
    assert points["requests.delivered"] == dict.fromkeys(KINDS, 2)
    assert df.stats().by_kind["goals"].delivered == 1


# -- the extras --------------------------------------------------------------------------------


def test_instrument_without_opentelemetry_names_the_extra(
    client: Callable[..., DataFast], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    with pytest.raises(ImportError, match=r"pip install 'datafast-async\[otel\]'"):
        instrument(client())


def test_the_collector_without_prometheus_client_names_the_extra(
    client: Callable[..., DataFast], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "prometheus_client.metrics_core", None)
    with pytest.raises(ImportError, match=r"pip install 'datafast-async\[prometheus\]'"):
        PrometheusCollector(client())


def test_importing_the_package_or_the_module_imports_neither_library() -> None:
    code = (
        "import sys, datafast_async, datafast_async.metrics; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'prometheus_client')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_only_a_client_is_read() -> None:
    with pytest.raises(TypeError, match="DataFast or a BackgroundClient"):
        PrometheusCollector(object())  # type: ignore[arg-type]


# -- the README's recipes, run as pasted ----------------------------------------------------------


def readme_blocks() -> list[str]:
    """The ``python`` blocks of ``docs/metrics.md``."""
    return python_blocks(page("metrics.md"))


def run_python(tmp_path: Path, fake: ThreadedFakeDataFast, source: str) -> str:
    script = tmp_path / "main.py"
    script.write_text(source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFAST_")}
    env.update(DATAFAST_API_KEY=fake.api_key, DATAFAST_BASE_URL=fake.base_url)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def json_documents(text: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    index = 0
    while (start := text.find("{", index)) != -1:
        document, index = decoder.raw_decode(text, start)
        yield document


@pytest.mark.integration
def test_the_readme_opentelemetry_recipe_exports_the_delivered_goal(tmp_path: Path) -> None:
    [recipe, _] = readme_blocks()
    with ThreadedFakeDataFast() as fake:
        out = run_python(tmp_path, fake, recipe)
        assert len(fake.goals) == 1
    delivered = [
        {
            point["attributes"]["datafast.kind"]: point["value"]
            for point in metric["data"]["data_points"]
        }
        for document in json_documents(out)
        for resource in document["resource_metrics"]
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
        if metric["name"] == "datafast.requests.delivered"
    ]
    assert delivered[-1] == {"goals": 1, "payments": 0, "identify": 0}


@pytest.mark.integration
def test_the_readme_prometheus_recipe_serves_the_metrics_of_the_app(tmp_path: Path) -> None:
    [_, recipe] = readme_blocks()
    (tmp_path / "app.py").write_text(recipe, encoding="utf-8")
    driver = """
import time
from starlette.testclient import TestClient
from app import app

for run in (1, 2):  # two lifespans: the counters go on from the first
    with TestClient(app, cookies={"datafast_visitor_id": VISITOR}) as client:
        assert client.post("/signup").status_code == 200
        deadline = time.monotonic() + 10
        while True:
            text = client.get("/metrics").text
            if f'datafast_requests_delivered_total{{kind="goals"}} {run}.0' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.02)
print(text)
""".replace("VISITOR", repr(VISITOR))
    with ThreadedFakeDataFast() as fake:
        out = run_python(tmp_path, fake, driver)
        assert len(fake.goals) == 2
    points = prometheus_points(out)
    assert points["requests.delivered"] == {"goals": 2, "payments": 0, "identify": 0}
    assert points["circuit.state"] == dict.fromkeys(ENDPOINTS, 0)
