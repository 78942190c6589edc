"""Prometheus metrics, one ``CollectorRegistry`` per app (never the global one), so several apps in
one process (the tests) keep separate counts.

Two kinds:
- counted in this process (``Metrics.count_request``, called by web/timing.py's middleware): HTTP
  requests and their latency, labelled by method, route *template* (never the raw path, which can
  carry participant IDs) and status;
- read from Postgres and Redis when ``/metrics`` is scraped (``JobsCollector``, through
  ``service.core.stats``): jobs by type and status, job durations, rows extracted, queue depths,
  worker liveness and webhook attempts by outcome.
No label ever holds personal data: routes are templates, the rest are fixed vocabularies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service.core.stats import JOB_BUCKETS, JobStats, job_stats
from service.settings import Settings

log = logging.getLogger("participants.metrics")

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class JobsCollector(Collector):
    """What workers did, as of the last ``refresh``. The ``/metrics`` handler calls ``ensure_fresh``:
    the aggregate queries run at most once per ``metrics_refresh_seconds``, and scrapes that arrive
    while one runs wait for it instead of starting their own, so fifty scrapers cost Postgres what
    one does."""

    def __init__(self) -> None:
        self.stats = JobStats()  # the last reading that succeeded; a failed one leaves it standing
        self.refresh_ok = False
        self.refreshed_at: float | None = None  # time.monotonic() of the last reading
        self._refreshing: asyncio.Future[None] | None = None

    async def ensure_fresh(self, pool: asyncpg.Pool, redis: Any, settings: Settings) -> None:
        now = time.monotonic()
        if self.refreshed_at is not None and now - self.refreshed_at < settings.metrics_refresh_seconds:
            return
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh_once(pool, redis, settings))
        # shield: a scraper that hangs up must not cancel the reading the others wait for
        await asyncio.shield(self._refreshing)

    async def _refresh_once(self, pool: asyncpg.Pool, redis: Any, settings: Settings) -> None:
        try:
            await self.refresh(pool, redis, settings)
        finally:
            self.refreshed_at = time.monotonic()
            self._refreshing = None

    async def refresh(self, pool: asyncpg.Pool, redis: Any, settings: Settings) -> None:
        try:
            self.stats = await job_stats(pool, redis, settings)
        except Exception as exc:  # a scrape must answer even when a dependency is down
            log.warning("metrics refresh failed: %s", type(exc).__name__)
            self.refresh_ok = False
            return
        self.refresh_ok = True

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        jobs = GaugeMetricFamily(
            "participants_jobs", "Jobs by type and current status", labels=["type", "status"]
        )
        for job_type, status, n in stats.jobs:
            jobs.add_metric([job_type, status], n)
        yield jobs
        hist = HistogramMetricFamily(
            "participants_job_duration_seconds", "From start to final status, finished jobs", labels=["type"]
        )
        for job_type, d in stats.durations.items():
            buckets = [(str(b), c) for b, c in zip(JOB_BUCKETS, d.cumulative, strict=True)]
            hist.add_metric([job_type], [*buckets, ("+Inf", d.count)], d.total_seconds)
        yield hist
        yield CounterMetricFamily(
            "participants_extract_rows",
            "Participant rows written to extract files",
            value=stats.rows_extracted,
        )
        depth = GaugeMetricFamily(
            "participants_queue_depth", "arq messages waiting, by queue", labels=["queue"]
        )
        up = GaugeMetricFamily(
            "participants_worker_up", "1 if a worker's arq heartbeat is fresh", labels=["queue"]
        )
        for queue, n in stats.queue_depth.items():
            depth.add_metric([queue], n)
            up.add_metric([queue], int(stats.worker_up.get(queue, False)))
        yield depth
        yield up
        hooks = CounterMetricFamily(
            "participants_webhook_attempts", "Webhook delivery attempts", labels=["outcome"]
        )
        for outcome, n in stats.webhook_attempts:
            hooks.add_metric([outcome], n)
        yield hooks
        yield GaugeMetricFamily(
            "participants_metrics_refresh_ok",
            "1 if Postgres and Redis answered this scrape",
            value=int(self.refresh_ok),
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "participants_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "participants_http_request_duration_seconds",
            "HTTP request latency until the handler returned (streamed bodies may take longer)",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        # (method, route, status) -> the counter's and the histogram's children: labels() takes a
        # lock and builds a key on every call; the label sets are few (fixed methods, route
        # templates, statuses), so each is looked up once and kept.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Connections this process opened to Postgres and Redis (beyond the pools' first ones, each
        # is a reconnect), and how many reached another server than the one before (a failover).
        self.connections = Counter(
            "participants_dependency_connections",
            "Connections opened to a dependency",
            ["dependency"],
            registry=self.registry,
        )
        self.failovers = Counter(
            "participants_dependency_failovers",
            "New connections that reached another server than the previous ones (a new primary or master)",
            ["dependency"],
            registry=self.registry,
        )
        self.jobs = JobsCollector()
        self.registry.register(self.jobs)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not self.multiprocess_dir:
            ProcessCollector(registry=self.registry)

    def count_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request answered; ``route`` is a template (never a raw path)."""
        if method not in HTTP_METHODS:
            method = "OTHER"  # any token is a method to aiohttp: unknown ones share one label
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self._children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    def count_link(self, dependency: str, failover: bool) -> None:
        """A connection opened to ``dependency`` (core.links tells); ``failover``: to a new server."""
        self.connections.labels(dependency).inc()
        if failover:
            self.failovers.labels(dependency).inc()

    def exposed(self) -> CollectorRegistry:
        """What a scrape shows. Under ``serve --processes N`` (prometheus-client's multiprocess
        mode, launch/processes.py) the HTTP counters of every API process, summed from their files,
        plus the job metrics; per-process CPU and memory are left out there (they would describe
        only whichever process answered)."""
        if not self.multiprocess_dir:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(self.jobs)
        return registry


METRICS = web.AppKey("metrics", Metrics)
