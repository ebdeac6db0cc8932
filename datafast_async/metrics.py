"""The client's numbers on your dashboards: ``instrument(df)`` for OpenTelemetry and
``PrometheusCollector(df)`` for ``prometheus_client``.

Both read ``df.stats()`` (and the circuits' states) when the metrics are collected, from the
collecting thread: nothing is added to ``track_nowait`` or to the sender. Neither library is a
dependency; each is imported when its function or class is first used (the ``otel`` and
``prometheus`` extras install them).

Counters are totals over the client's runs: ``stats()`` starts again from zero when a closed
client starts again, so each reading adds what the earlier runs counted (read from the run that
ended, once the next one is seen). Only a run that starts and ends entirely between two
collections (the client restarted twice between them) is not counted. In a forked child the
totals start again from zero (the parent's are the parent's).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._background import BackgroundClient
from ._client import DataFast
from ._models import KindStats, Stats
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from prometheus_client.metrics_core import Metric

    from ._run import Run

__all__ = ["Instrumentation", "PrometheusCollector", "instrument"]

Client = DataFast | BackgroundClient

#: The value of ``datafast.circuit.state`` (``datafast_circuit_state``) for each state.
_CIRCUIT_STATES: Mapping[str, int] = {"closed": 0, "half-open": 1, "open": 2}

# (the counter of KindStats, what it counts): the five counters, each by kind.
_COUNTERS = (
    ("enqueued", "Requests accepted into the client's queue or spool"),
    ("delivered", "Requests the API accepted"),
    (
        "failed",
        "Accepted requests that finally failed (refused, out of attempts, refused by an open "
        "circuit, or cut at the shutdown deadline)",
    ),
    ("dropped", "Requests refused at the door because the queue or the spool was full"),
    ("retries", "Attempts beyond the first"),
)
# (the gauge of KindStats, what it holds now): by kind.
_GAUGES = (
    ("queued", "Requests waiting in memory"),
    ("in_flight", "Requests being sent or waiting for a retry"),
    ("spooled", "Accepted requests held on disk only, by the durable spool"),
)
_LIMIT = "The adaptive limit of requests in flight now"
_CIRCUIT = "The circuit breaker's state: 0 closed, 1 half-open (probing), 2 open (refusing)"
# A reading is taken again when the last one is older than this, whoever asks.
_MAX_AGE = 1.0


# -- reading the client ------------------------------------------------------------------------


class _Lock:
    """A lock that a forked child replaces: a thread of the parent (a metrics exporter) may
    have held it at the fork, and that thread is not in the child."""

    __slots__ = ("_lock", "_pid")

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()
        self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


@attrs.frozen
class _Reading:
    """One reading of a client, shared by every instrument of one collection.

    Attributes:
        totals: For each kind, its five counters as totals over the client's runs.
        stats: The snapshot of the current run (the gauges come from it).
        circuits: Each circuit's state (``"client"`` and each kind): ``"closed"``,
            ``"half-open"`` or ``"open"``.
    """

    totals: Mapping[str, Mapping[str, int]]
    stats: Stats
    circuits: Mapping[str, str]


class _Source:
    """Reads one client (held weakly: the metrics never keep a client alive), keeping the
    counts of its earlier runs so that the counters never go down."""

    def __init__(self, client: Client) -> None:
        if not isinstance(client, (DataFast, BackgroundClient)):
            raise TypeError(
                f"expected a DataFast or a BackgroundClient, not {type(client).__name__}"
            )
        self._client: weakref.ref[Client] = weakref.ref(client)
        self._lock = _Lock()
        self._pid = os.getpid()
        # The run read last; from the start, so that a first reading in a later run still
        # counts this one.
        self._run: Run | None = _datafast(client)._run
        self._offsets: dict[str, dict[str, int]] = {}  # kind -> counter -> earlier runs'

    def client(self) -> Client | None:
        return self._client()

    def read(self) -> _Reading | None:
        """The client now; ``None`` once it has been garbage-collected."""
        client = self._client()
        if client is None:
            return None
        df = _datafast(client)
        with self._lock:
            if self._pid != os.getpid():
                self._forked(df)
            for _ in range(3):  # the three reads from one run (a restart between them: again)
                run = df._run
                stats = df.stats()
                circuits = df._circuit_states()
                if df._run is run:
                    break
            if self._run is not None and run is not self._run:
                # A new run counts from zero: add what the one that ended counted in all.
                self._add(_counts(self._run.stats()))
            self._run = run
            totals = {
                kind: {name: value + self._offsets.get(kind, {}).get(name, 0)
                       for name, value in _kind_counts(counts).items()}
                for kind, counts in stats.by_kind.items()
            }  # fmt: skip
        return _Reading(totals=totals, stats=stats, circuits=circuits)

    def _add(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        for kind, values in counts.items():
            offsets = self._offsets.setdefault(kind, {})
            for name, value in values.items():
                offsets[name] = offsets.get(name, 0) + value

    def _forked(self, df: DataFast) -> None:
        """In a forked child: count from zero here (what the parent counted is the parent's,
        even in a run the child still shows)."""
        self._pid = os.getpid()
        run = df._run
        self._run = run
        self._offsets = {
            kind: {name: -value for name, value in values.items()}
            for kind, values in _counts(run.stats()).items()
        }


def _datafast(client: Client) -> DataFast:
    # A BackgroundClient's DataFast is replaced in a forked child: the one now.
    return client._df if isinstance(client, BackgroundClient) else client


def _kind_counts(counts: KindStats) -> dict[str, int]:
    return {name: getattr(counts, name) for name, _ in _COUNTERS}


def _counts(stats: Stats) -> dict[str, dict[str, int]]:
    return {kind: _kind_counts(counts) for kind, counts in stats.by_kind.items()}


# What each instrument reports of a reading: (the value of its one attribute, or None for an
# instrument without one, its value) pairs.
Observe = Callable[[_Reading], Iterable[tuple[str | None, int]]]


def _counter(name: str) -> Observe:
    def observe(reading: _Reading) -> Iterator[tuple[str | None, int]]:
        for kind, totals in reading.totals.items():
            yield kind, totals[name]

    return observe


def _gauge(name: str) -> Observe:
    def observe(reading: _Reading) -> Iterator[tuple[str | None, int]]:
        for kind, counts in reading.stats.by_kind.items():
            yield kind, getattr(counts, name)

    return observe


def _limit(reading: _Reading) -> Iterator[tuple[str | None, int]]:
    yield None, reading.stats.concurrency_limit


def _circuits(reading: _Reading) -> Iterator[tuple[str | None, int]]:
    for endpoint, state in reading.circuits.items():
        yield endpoint, _CIRCUIT_STATES[state]


@attrs.frozen
class _Spec:
    """One instrument: its OpenTelemetry name (the Prometheus name is the same with ``_``),
    kind, unit, description, attribute (the Prometheus label is its last part), what it
    reads, and how two clients' values for one attribute value combine (summed; the circuit
    state: the worst)."""

    name: str
    kind: str  # "counter", "updown" or "gauge"
    unit: str
    description: str
    attribute: str | None
    observe: Observe
    combine: Callable[[int, int], int] = int.__add__

    @property
    def label(self) -> str | None:
        return None if self.attribute is None else self.attribute.rpartition(".")[2]


_KIND = "datafast.kind"
_SPECS = (
    *(
        _Spec(f"datafast.requests.{name}", "counter", "{request}", text, _KIND, _counter(name))
        for name, text in _COUNTERS
    ),
    *(
        _Spec(f"datafast.requests.{name}", "updown", "{request}", text, _KIND, _gauge(name))
        for name, text in _GAUGES
    ),
    _Spec("datafast.concurrency.limit", "updown", "{request}", _LIMIT, None, _limit),
    _Spec(
        "datafast.circuit.state", "gauge", "{state}", _CIRCUIT, "datafast.endpoint", _circuits, max
    ),
)


# -- OpenTelemetry -----------------------------------------------------------------------------


def _import_otel() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        if exc.name not in (None, "opentelemetry", "opentelemetry.metrics"):
            raise  # installed, but broken: its own error says why
        raise ImportError(
            "datafast_async.metrics.instrument() needs the OpenTelemetry API: "
            "pip install 'datafast-async[otel]'"
        ) from exc
    return metrics


class Instrumentation:
    """What ``instrument()`` returns: ``close()`` (or ``unregister()``) makes its instruments
    stop reading the client (OpenTelemetry cannot remove an instrument; they report nothing
    for it from then on)."""

    def __init__(self, source: _Source, instruments: _Instruments) -> None:
        self._source: _Source | None = source
        self._instruments = instruments
        self._lock = _Lock()
        self._reading: _Reading | None = None
        self._taken = 0.0
        self._generation = 0
        self._consumed = [-1] * len(_SPECS)  # the generation each instrument read last

    @property
    def closed(self) -> bool:
        return self._source is None

    def close(self) -> None:
        """Stop reading the client; idempotent."""
        self._instruments.discard(self)
        with self._lock:
            self._source = None
            self._reading = None

    unregister = close

    def _client(self) -> Client | None:
        source = self._source
        return None if source is None else source.client()

    def _read_for(self, index: int) -> _Reading | None:
        """The reading for instrument ``index``: one ``stats()`` per collection, shared by
        every instrument. An instrument that already read the current reading is the first of
        a new collection, and takes a new one (as does any, after ``_MAX_AGE``)."""
        with self._lock:
            source = self._source
            if source is None:
                return None
            now = time.monotonic()
            if (
                self._reading is None
                or self._consumed[index] == self._generation
                or now - self._taken > _MAX_AGE
            ):
                self._reading = source.read()
                self._taken = now
                self._generation += 1
            self._consumed[index] = self._generation
            return self._reading


class _Instruments:
    """The instruments of one meter provider, created once (the SDK hands back an existing
    instrument, without the new callbacks, for a name created again), reporting every live
    ``Instrumentation`` of that provider."""

    def __init__(self, otel: Any, provider: MeterProvider) -> None:
        self._lock = _Lock()
        self._handles: list[Instrumentation] = []
        self._observation: type[Observation] = otel.Observation
        meter = provider.get_meter("datafast_async", __version__)
        create = {
            "counter": meter.create_observable_counter,
            "updown": meter.create_observable_up_down_counter,
            "gauge": meter.create_observable_gauge,
        }
        for index, spec in enumerate(_SPECS):
            create[spec.kind](
                spec.name,
                callbacks=[self._callback(index, spec)],
                unit=spec.unit,
                description=spec.description,
            )

    def add(self, handle: Instrumentation) -> None:
        client = handle._client()
        with self._lock:
            if any(other._client() is client for other in self._handles):
                raise ValueError(
                    "this client is already instrumented on this meter provider; close() the "
                    "first Instrumentation before instrumenting it again"
                )
            self._handles.append(handle)

    def discard(self, handle: Instrumentation) -> None:
        with self._lock:
            if handle in self._handles:
                self._handles.remove(handle)

    def _callback(
        self, index: int, spec: _Spec
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        observation = self._observation

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                handles = list(self._handles)
            values: dict[str | None, int] = {}
            for handle in handles:
                reading = handle._read_for(index)
                if reading is None:
                    continue
                for key, value in spec.observe(reading):
                    seen = values.get(key)
                    values[key] = value if seen is None else spec.combine(seen, value)
            attribute = spec.attribute
            return [
                observation(value, None if key is None or attribute is None else {attribute: key})
                for key, value in values.items()
            ]

        return callback


_providers: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
# The instruments made on the global provider while it was still OpenTelemetry's proxy (no SDK
# set yet): they forward to the provider set later, so they serve it too (the SDK would hand
# back their instruments, without new callbacks, for the same names).
_proxied: list[_Instruments] = []
_providers_lock = _Lock()


def _instruments_for(otel: Any, provider: MeterProvider) -> _Instruments:
    with _providers_lock:
        instruments = _providers.get(provider)
        if instruments is None and _proxied and provider is otel.get_meter_provider():
            instruments = _proxied[0]
        if instruments is None:
            instruments = _providers[provider] = _Instruments(otel, provider)
            if type(provider).__name__ == "_ProxyMeterProvider":
                _proxied[:] = [instruments]
        return instruments


def instrument(client: Client, meter_provider: MeterProvider | None = None) -> Instrumentation:
    """Report the client's ``stats()`` and circuits through OpenTelemetry.

    Registers observable instruments on ``meter_provider`` (the global one when ``None``,
    set before or after this call) under the meter ``datafast_async``, read when the provider
    collects: ``datafast.requests.enqueued``, ``.delivered``, ``.failed``, ``.dropped`` and
    ``.retries`` (observable counters, totals over the client's runs, by ``datafast.kind``),
    ``datafast.requests.queued``, ``.in_flight`` and ``.spooled`` (observable up-down counters,
    by ``datafast.kind``), ``datafast.concurrency.limit`` (an observable up-down counter) and
    ``datafast.circuit.state`` (an observable gauge, 0 closed, 1 half-open, 2 open, by
    ``datafast.endpoint``: ``client``, ``goals``, ``payments``, ``identify``).

    Several clients instrumented on one provider are reported together: their values are
    summed (the circuit state: the worst). The client is held weakly.

    Args:
        client: A ``DataFast`` or a ``BackgroundClient``.
        meter_provider: An OpenTelemetry ``MeterProvider``.

    Returns:
        An ``Instrumentation``; its ``close()`` stops the instruments reading the client.

    Raises:
        ImportError: The OpenTelemetry API is not installed (the ``otel`` extra).
        ValueError: The client is already instrumented on this provider.
    """
    otel = _import_otel()
    source = _Source(client)
    provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
    instruments = _instruments_for(otel, provider)
    handle = Instrumentation(source, instruments)
    instruments.add(handle)
    return handle


# -- Prometheus --------------------------------------------------------------------------------


def _import_prometheus() -> Any:
    try:
        from prometheus_client import metrics_core
    except ImportError as exc:
        if exc.name not in (None, "prometheus_client"):
            raise  # installed, but broken: its own error says why
        raise ImportError(
            "datafast_async.metrics.PrometheusCollector needs prometheus_client: "
            "pip install 'datafast-async[prometheus]'"
        ) from exc
    return metrics_core


class PrometheusCollector:
    """A ``prometheus_client`` collector of the client's ``stats()`` and circuits, read at
    each scrape: ``REGISTRY.register(PrometheusCollector(df))``.

    It yields ``datafast_requests_enqueued_total``, ``_delivered_total``, ``_failed_total``,
    ``_dropped_total`` and ``_retries_total`` (counters, totals over the client's runs),
    ``datafast_requests_queued``, ``_in_flight`` and ``_spooled`` (gauges), each with the
    label ``kind`` (``goals``, ``payments``, ``identify``); ``datafast_concurrency_limit``;
    and ``datafast_circuit_state`` (0 closed, 1 half-open, 2 open) with the label
    ``endpoint`` (``client``, ``goals``, ``payments``, ``identify``). The client is held
    weakly: once it is garbage-collected the collector yields nothing.

    Args:
        client: A ``DataFast`` or a ``BackgroundClient``.

    Raises:
        ImportError: ``prometheus_client`` is not installed (the ``prometheus`` extra).
    """

    def __init__(self, client: Client) -> None:
        self._core = _import_prometheus()
        self._source = _Source(client)

    def describe(self) -> list[Metric]:
        """The metrics' names and types, without reading the client (``register()`` asks)."""
        return self._families(None)

    def collect(self) -> list[Metric]:
        """The metrics now: one reading of the client."""
        reading = self._source.read()
        return [] if reading is None else self._families(reading)

    def _families(self, reading: _Reading | None) -> list[Metric]:
        core = self._core
        families: list[Metric] = []
        for spec in _SPECS:
            make = core.CounterMetricFamily if spec.kind == "counter" else core.GaugeMetricFamily
            label = spec.label
            family = make(
                spec.name.replace(".", "_"),
                spec.description,
                labels=[] if label is None else [label],
            )
            if reading is not None:
                for key, value in spec.observe(reading):
                    family.add_metric([] if key is None else [key], value)
            families.append(family)
        return families
