"""The operators' dashboard: the last hour (per minute) or day (per 15 minutes) of what the service
already records, read from Postgres; no metrics pipeline of its own.

- jobs finished per bucket, completed (``COMPLETED``, and those since ``EXPIRED`` or ``DELETED``) and
  ``FAILED``, by ``completed_at``;
- jobs waiting at the end of each bucket: submitted (``created_at``) and not yet taken by a worker
  (``started_at``, the last attempt's) nor ended without one (a cancel in the queue). A job waiting
  for more than a week before the window is not counted (none should);
- p50 and p95 of the duration (``completed_at - started_at``) of the jobs finished in each bucket;
- webhook delivery attempts per bucket by outcome (``webhook_attempts``).
Counts and durations only: nothing here names a participant.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import asyncpg
from pydantic import BaseModel

from service.core.webhooks.models import Outcome

Window = Literal["hour", "day"]
WINDOWS: dict[str, tuple[dt.timedelta, dt.timedelta]] = {
    "hour": (dt.timedelta(hours=1), dt.timedelta(minutes=1)),
    "day": (dt.timedelta(days=1), dt.timedelta(minutes=15)),
}
OUTCOMES: tuple[Outcome, ...] = ("success", "http_error", "timeout", "connection_error", "blocked", "gone")

# $1 window start, $2 bucket seconds, $3 window end.
BUCKET = "floor(extract(epoch FROM {ts} - $1) / $2)::int"
FINISHED = f"""
SELECT {BUCKET.format(ts="completed_at")} AS b,
       count(*) FILTER (WHERE status IN ('COMPLETED', 'EXPIRED', 'DELETED')) AS completed,
       count(*) FILTER (WHERE status = 'FAILED') AS failed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at))
           FILTER (WHERE started_at IS NOT NULL AND status <> 'CANCELLED') AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at))
           FILTER (WHERE started_at IS NOT NULL AND status <> 'CANCELLED') AS p95
FROM jobs WHERE completed_at >= $1 AND completed_at < $3
GROUP BY 1
"""
# A job leaves the queue when a worker starts it, or when it ends without one (cancelled there);
# an expression index on this (sql/0019_job_phase.sql) keeps both reads to the window.
_LEFT = "coalesce(started_at, completed_at)"
WAITING_BEFORE = f"""
SELECT (SELECT count(*) FROM jobs WHERE status = 'IN_QUEUE' AND {_LEFT} IS NULL AND created_at < $1)
     + (SELECT count(*) FROM jobs WHERE {_LEFT} >= $1 AND created_at < $1)
"""
QUEUE_CHANGES = f"""
SELECT b, sum(d)::int AS delta FROM (
    SELECT {BUCKET.format(ts="created_at")} AS b, 1 AS d FROM jobs WHERE created_at >= $1 AND created_at < $3
    UNION ALL
    SELECT {BUCKET.format(ts=_LEFT)} AS b, -1 AS d FROM jobs WHERE {_LEFT} >= $1 AND {_LEFT} < $3
) e GROUP BY b
"""
DELIVERIES = f"""
SELECT {BUCKET.format(ts="at")} AS b, outcome, count(*)::int AS n
FROM webhook_attempts WHERE at >= $1 AND at < $3 GROUP BY 1, 2
"""


class Dashboard(BaseModel):
    window: Window
    bucketSeconds: int
    buckets: list[dt.datetime]  # the start of each bucket, oldest first (UTC)
    jobsCompleted: list[int]
    jobsFailed: list[int]
    jobsWaiting: list[int]  # at the end of each bucket
    durationP50: list[float | None]  # seconds; None: no job finished in that bucket
    durationP95: list[float | None]
    webhookAttempts: dict[str, list[int]]  # by outcome


def window_bounds(window: Window, now: dt.datetime) -> tuple[dt.datetime, dt.datetime, dt.timedelta]:
    """(start, end, bucket): buckets aligned on the bucket size, the last one holding ``now``."""
    span, bucket = WINDOWS[window]
    step = bucket.total_seconds()
    end = dt.datetime.fromtimestamp((now.timestamp() // step + 1) * step, dt.UTC)
    return end - span, end, bucket


async def read_dashboard(
    conn: asyncpg.Connection, window: Window, now: dt.datetime | None = None
) -> Dashboard:
    start, end, bucket = window_bounds(window, now or dt.datetime.now(dt.UTC))
    n = round((end - start) / bucket)
    seconds = bucket.total_seconds()
    completed, failed = [0] * n, [0] * n
    p50: list[float | None] = [None] * n
    p95: list[float | None] = [None] * n
    for r in await conn.fetch(FINISHED, start, seconds, end):
        if 0 <= r["b"] < n:
            completed[r["b"]], failed[r["b"]] = r["completed"], r["failed"]
            p50[r["b"]], p95[r["b"]] = r["p50"], r["p95"]
    waiting_now = int(await conn.fetchval(WAITING_BEFORE, start))
    deltas = [0] * n
    for r in await conn.fetch(QUEUE_CHANGES, start, seconds, end):
        if 0 <= r["b"] < n:
            deltas[r["b"]] += r["delta"]
    waiting = []
    for delta in deltas:
        waiting_now += delta
        waiting.append(max(0, waiting_now))
    attempts = {outcome: [0] * n for outcome in OUTCOMES}
    for r in await conn.fetch(DELIVERIES, start, seconds, end):
        if 0 <= r["b"] < n and r["outcome"] in attempts:
            attempts[r["outcome"]][r["b"]] = r["n"]
    return Dashboard(
        window=window,
        bucketSeconds=int(seconds),
        buckets=[start + i * bucket for i in range(n)],
        jobsCompleted=completed,
        jobsFailed=failed,
        jobsWaiting=waiting,
        durationP50=p50,
        durationP95=p95,
        webhookAttempts=attempts,
    )
