"""Prometheus metrics, one ``CollectorRegistry`` per app (never the global one), so several apps in
one process (the tests) keep separate counts.

Two kinds:
- counted in this process by ``metrics_middleware``: HTTP requests and their latency, labelled by
  method, route *template* (never the raw path, which can carry participant IDs) and status;
- read from Postgres and Redis when ``/metrics`` is scraped (``JobsCollector``): jobs by type and
  status, job durations, rows extracted, queue depths, worker liveness and webhook attempts by
  outcome. Jobs and deliveries run in worker processes; their rows are the one place every process
  agrees on, so the API can report them without a metrics pipeline between processes.
No label ever holds personal data: routes are templates, the rest are fixed vocabularies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.settings import Settings
from service.web.logs import route_template

log = logging.getLogger("participants.metrics")

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class JobsCollector(Collector):
    """What workers did, as of the last ``refresh``. The ``/metrics`` handler calls ``ensure_fresh``:
    the aggregate queries run at most once per ``metrics_refresh_seconds``, and scrapes that arrive
    while one runs wait for it instead of starting their own, so fifty scrapers cost Postgres what
    one does."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, str, int]] = []
        self.durations: dict[str, tuple[list[int], int, float]] = {}
        self.rows_extracted = 0
        self.queue_depth: dict[str, int] = {}
        self.worker_up: dict[str, bool] = {}
        self.webhook_attempts: list[tuple[str, int]] = []
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
            async with pool.acquire() as conn:
                jobs = await conn.fetch(
                    "SELECT type, status, count(*) AS n FROM jobs GROUP BY type, status ORDER BY 1, 2"
                )
                cols = ", ".join(f"count(*) FILTER (WHERE d <= {b})" for b in JOB_BUCKETS)
                durations = await conn.fetch(
                    f"""SELECT type, {cols}, count(*) AS n, coalesce(sum(d), 0) AS total FROM (
                          SELECT type, extract(epoch FROM completed_at - started_at)::float8 AS d FROM jobs
                          WHERE started_at IS NOT NULL AND completed_at IS NOT NULL
                            AND status IN ('COMPLETED', 'FAILED', 'EXPIRED', 'DELETED')) t
                        GROUP BY type ORDER BY type"""
                )
                rows = await conn.fetchval(
                    "SELECT coalesce(sum(row_count), 0) FROM jobs WHERE type = 'EXTRACT_PARTICIPANTS'"
                    " AND status IN ('COMPLETED', 'EXPIRED', 'DELETED')"
                )
                attempts = await conn.fetch(
                    "SELECT outcome, count(*) AS n FROM webhook_attempts GROUP BY outcome ORDER BY outcome"
                )
            depth, up = {}, {}
            for queue in (settings.extract_queue, settings.default_queue):
                depth[queue] = int(await redis.zcard(queue))
                up[queue] = bool(await redis.exists(f"{queue}:health-check"))
        except Exception as exc:  # a scrape must answer even when a dependency is down
            log.warning("metrics refresh failed: %s", type(exc).__name__)
            self.refresh_ok = False
            return
        self.jobs = [(r["type"], r["status"], r["n"]) for r in jobs]
        self.durations = {
            r["type"]: ([r[i + 1] for i in range(len(JOB_BUCKETS))], r["n"], r["total"]) for r in durations
        }
        self.rows_extracted = int(rows)
        self.webhook_attempts = [(r["outcome"], r["n"]) for r in attempts]
        self.queue_depth, self.worker_up = depth, up
        self.refresh_ok = True

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "participants_jobs", "Jobs by type and current status", labels=["type", "status"]
        )
        for job_type, status, n in self.jobs:
            jobs.add_metric([job_type, status], n)
        yield jobs
        hist = HistogramMetricFamily(
            "participants_job_duration_seconds", "From start to final status, finished jobs", labels=["type"]
        )
        for job_type, (cumulative, n, total) in self.durations.items():
            buckets = [(str(b), c) for b, c in zip(JOB_BUCKETS, cumulative, strict=True)] + [("+Inf", n)]
            hist.add_metric([job_type], buckets, total)
        yield hist
        yield CounterMetricFamily(
            "participants_extract_rows",
            "Participant rows written to extract files",
            value=self.rows_extracted,
        )
        depth = GaugeMetricFamily(
            "participants_queue_depth", "arq messages waiting, by queue", labels=["queue"]
        )
        up = GaugeMetricFamily(
            "participants_worker_up", "1 if a worker's arq heartbeat is fresh", labels=["queue"]
        )
        for queue, n in self.queue_depth.items():
            depth.add_metric([queue], n)
            up.add_metric([queue], int(self.worker_up.get(queue, False)))
        yield depth
        yield up
        hooks = CounterMetricFamily(
            "participants_webhook_attempts", "Webhook delivery attempts", labels=["outcome"]
        )
        for outcome, n in self.webhook_attempts:
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
        self.jobs = JobsCollector()
        self.registry.register(self.jobs)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not self.multiprocess_dir:
            ProcessCollector(registry=self.registry)

    def exposed(self) -> CollectorRegistry:
        """What a scrape shows. Under ``serve --processes N`` (prometheus-client's multiprocess
        mode, web/processes.py) the HTTP counters of every API process, summed from their files,
        plus the job metrics; per-process CPU and memory are left out there (they would describe
        only whichever process answered)."""
        if not self.multiprocess_dir:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(self.jobs)
        return registry


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics = request.app.get(METRICS)
        if metrics is not None:
            method = request.method if request.method in HTTP_METHODS else "OTHER"
            labels = (method, route_template(request), str(status))
            metrics.requests.labels(*labels).inc()
            metrics.latency.labels(*labels).observe(time.perf_counter() - start)
