"""Prometheus metrics of one application: HTTP requests, search stages, the vector
indexes it serves, and indexing runs done in its process.

Each app has a registry of its own (tests and several apps in one process never
collide); GET /metrics (routes/metrics.py) writes it in the text exposition format.
docs/operations.md lists the families and their labels.

Label values are bounded: a route is its template (`/items/{item_id}`), never the
raw path; unmatched paths share one value; methods outside HTTP's own are "other".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from xmodal import __version__
from xmodal.indexer import IndexReport, NoProgress, Progress
from xmodal.indexer.catalog import CatalogCounters
from xmodal.search.errors import XmodalError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from xmodal.search import Engine

log = logging.getLogger(__name__)

UNMATCHED = "(unmatched)"  # the route label of a path no route matches (404s)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds. Search stages take from tens of microseconds (fetch) to seconds (rerank).
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
STAGES = frozenset({"encode", "search", "fetch", "rerank", "explain"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class HttpMetrics:
    """Requests by route template and status, their latency, and search stage times."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "xmodal_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "xmodal_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "xmodal_http_requests_in_flight",
            "Requests being answered now.",
            registry=registry,
        )
        self.stages = Histogram(
            "xmodal_search_stage_duration_seconds",
            "Time per stage of a search (encode, search, fetch, rerank, explain), by route; "
            "from the response's Server-Timing header.",
            ["route", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(
        self, method: str, route: str, status: int, seconds: float, server_timing: bytes | None
    ) -> None:
        method = method_label(method)
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)
        if server_timing:
            for stage, milliseconds in parse_server_timing(server_timing):
                if stage in STAGES:
                    self.stages.labels(route, stage).observe(milliseconds / 1000.0)


def parse_server_timing(value: bytes) -> Iterator[tuple[str, float]]:
    """(name, milliseconds) of each `name;dur=ms` entry of a Server-Timing header."""
    for entry in value.decode("latin-1").split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur":
                with contextlib.suppress(ValueError):
                    yield name, float(number)


class IndexCollector(Collector):
    """The engine's vector indexes, read at scrape time: vectors and items served per
    space, whether they reflect the store's current version, and when they last did."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            states = self.engine.index_states()
            stored = self.engine.store.count_items()
        except (XmodalError, OSError, ValueError, RuntimeError) as error:
            # A scrape must still answer (HTTP metrics); the log says what failed.
            log.warning("index metrics unavailable: %s", error)
            return
        items = GaugeMetricFamily(
            "xmodal_store_items", "Indexed items in the store now (all spaces)."
        )
        items.add_metric([], stored)
        yield items
        vectors = GaugeMetricFamily(
            "xmodal_index_vectors",
            "Vectors (segments) queries are served from, per space.",
            labels=["space"],
        )
        served = GaugeMetricFamily(
            "xmodal_index_items", "Items queries are served from, per space.", labels=["space"]
        )
        kind = GaugeMetricFamily(
            "xmodal_index_kind",
            'The kind of vector index a space searches with (1 for the kind; "none" before '
            "its first query).",
            labels=["space", "kind"],
        )
        up_to_date = GaugeMetricFamily(
            "xmodal_index_up_to_date",
            "1 when a space serves the store's current version; 0 when the store changed "
            "since (the next query brings it up to date first).",
            labels=["space"],
        )
        behind = GaugeMetricFamily(
            "xmodal_index_versions_behind",
            "Store commits (items and segments tables) not yet reflected in what a space serves.",
            labels=["space"],
        )
        refreshed = GaugeMetricFamily(
            "xmodal_index_last_refresh_timestamp_seconds",
            "Unix time a space's served vectors were last brought up to date with the store.",
            labels=["space"],
        )
        memory = GaugeMetricFamily(
            "xmodal_index_memory_bytes",
            "Bytes a space's served view holds, by part: vectors_in_memory, vectors_mapped "
            "(memory-mapped file, page cache), index_in_memory, index_mapped, rows (per-row "
            "bookkeeping) and items (item rows and ids).",
            labels=["space", "part"],
        )
        for name, state in states.items():
            if state.memory is not None:
                for part, size in state.memory.as_dict().items():
                    memory.add_metric([name, part], size)
            vectors.add_metric([name], state.segments)
            served.add_metric([name], state.items)
            kind.add_metric([name, state.kind], 1)
            up_to_date.add_metric([name], 1 if state.up_to_date else 0)
            if state.served_version is not None:
                lag = sum(
                    max(0, now - then)
                    for now, then in zip(state.store_version, state.served_version, strict=True)
                )
                behind.add_metric([name], lag)
            if state.refreshed_at is not None:
                refreshed.add_metric([name], state.refreshed_at)
        yield from (vectors, served, kind, up_to_date, behind, refreshed, memory)


class IndexerMetrics:
    """Indexing runs in this process: files done and failed as they go (through the run's
    Progress), and each finished run's report."""

    def __init__(self, registry: CollectorRegistry):
        self.files = Counter(
            "xmodal_indexer_files",
            "Files an indexing run finished with, as they finish (result: done or failed).",
            ["result"],
            registry=registry,
        )
        self.items = Counter(
            "xmodal_indexer_items",
            "What finished runs did with items (outcome: indexed, updated, unchanged, "
            "removed, duplicate, failed), from their reports.",
            ["outcome"],
            registry=registry,
        )
        self.runs = Counter(
            "xmodal_indexer_runs",
            "Indexing runs, by result (completed, or error when the run raised).",
            ["result"],
            registry=registry,
        )
        self.running = Gauge(
            "xmodal_indexer_running", "Indexing runs in progress now.", registry=registry
        )
        self.run_seconds = Histogram(
            "xmodal_indexer_run_duration_seconds",
            "Wall time of finished indexing runs.",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
            registry=registry,
        )
        self.last_rate = Gauge(
            "xmodal_indexer_last_run_items_per_second",
            "Items embedded or failed per second of the last finished run.",
            registry=registry,
        )
        self.last_end = Gauge(
            "xmodal_indexer_last_run_end_timestamp_seconds",
            "Unix time the last indexing run finished.",
            registry=registry,
        )

    @contextmanager
    def run(self, progress: Progress | None = None) -> Iterator[Progress]:
        """Count one indexing run: use the Progress it yields for the run (it feeds the
        counters, then `progress`), and `record` its report at the end."""
        self.running.inc()
        try:
            yield CountingProgress(self, progress or NoProgress())
        except BaseException:
            self.runs.labels("error").inc()
            raise
        finally:
            self.running.dec()

    def record(self, report: IndexReport) -> None:
        """A finished run's report: its outcomes, duration and rate."""
        self.runs.labels("completed").inc()
        for outcome, count in (
            ("indexed", report.indexed),
            ("updated", report.updated),
            ("unchanged", report.unchanged),
            ("removed", report.removed),
            ("duplicate", report.duplicates),
            ("failed", len(report.failed)),
        ):
            self.items.labels(outcome).inc(count)
        self.run_seconds.observe(report.times.wall)
        self.last_rate.set(report.items_per_second)
        self.last_end.set(time.time())


class CountingProgress:
    """A Progress that counts finished files into IndexerMetrics, then passes them on."""

    def __init__(self, metrics: IndexerMetrics, inner: Progress):
        self._metrics = metrics
        self._inner = inner

    def start(self, total: int) -> None:
        self._inner.start(total)

    def advance(self, count: int = 1, failed: int = 0) -> None:
        if count - failed:
            self._metrics.files.labels("done").inc(count - failed)
        if failed:
            self._metrics.files.labels("failed").inc(failed)
        self._inner.advance(count, failed)

    def finish(self) -> None:
        self._inner.finish()


class CatalogCollector(Collector):
    """What this process's catalog writes did (indexer/catalog.py CatalogCounters), read
    at scrape time: entries by status, what reached the model, what was downloaded."""

    def __init__(self, counters: CatalogCounters):
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        entries = CounterMetricFamily(
            "xmodal_catalog_entries",
            "Catalog entries written (PUT, batches, jobs), by status.",
            labels=["status"],
        )
        for status, count in sorted(c.entries.items()):
            entries.add_metric([status], count)
        yield entries
        for name, value, text in (
            ("embedded", c.embedded, "Catalog items whose media went through the model."),
            ("encoded_inputs", c.encoded, "Model inputs the catalog computed vectors for."),
            ("fetched", c.fetched, "Catalog sources downloaded."),
            ("not_modified", c.not_modified, "Catalog sources answered 304: not downloaded."),
            ("fetched_bytes", c.fetched_bytes, "Bytes of catalog sources downloaded."),
            ("deleted", c.deleted, "Catalog items deleted."),
        ):
            yield CounterMetricFamily(f"xmodal_catalog_{name}", text, value=value)


class Metrics:
    """Everything /metrics shows for one app, in a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine: Engine | None = None, catalog: CatalogCounters | None = None):
        self.registry = CollectorRegistry()
        self.http = HttpMetrics(self.registry)
        self.indexer = IndexerMetrics(self.registry)
        info = Gauge(
            "xmodal_build_info",
            "The running xmodal's version.",
            ["version"],
            registry=self.registry,
        )
        info.labels(__version__).set(1)
        ProcessCollector(registry=self.registry)  # CPU seconds, memory, open files
        if engine is not None:
            self.registry.register(IndexCollector(engine))
        if catalog is not None:
            self.registry.register(CatalogCollector(catalog))

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


__all__ = [
    "UNMATCHED",
    "CatalogCollector",
    "CountingProgress",
    "HttpMetrics",
    "IndexCollector",
    "IndexerMetrics",
    "Metrics",
    "parse_server_timing",
]
