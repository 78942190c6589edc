"""What the workers did and what waits for them, read from the rows and queues every process shares.

Jobs and webhook deliveries run in worker processes; Postgres and Redis are the one place every
process agrees on, so the API reads them here rather than keeping a metrics pipeline between
processes. Two readers: ``job_stats`` for the Prometheus scrape (counts only, fixed vocabularies,
never personal data) and ``queue_report`` for the admin API's queue page. Both raise when a
dependency is down; whoever calls decides what to answer then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from service.core import worker_beats
from service.settings import Settings

# Upper bounds (seconds) of the job-duration histogram; the SQL counts each bucket, the scrape names them.
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

JOBS_BY_TYPE_AND_STATUS = "SELECT type, status, count(*) AS n FROM jobs GROUP BY type, status ORDER BY 1, 2"
_BUCKET_COLUMNS = ", ".join(f"count(*) FILTER (WHERE d <= {b})" for b in JOB_BUCKETS)
# One row per job type: the cumulative count at or under each bound of JOB_BUCKETS, then n and total.
JOB_DURATIONS = f"""SELECT type, {_BUCKET_COLUMNS}, count(*) AS n, coalesce(sum(d), 0) AS total FROM (
  SELECT type, extract(epoch FROM completed_at - started_at)::float8 AS d FROM jobs
  WHERE started_at IS NOT NULL AND completed_at IS NOT NULL
    AND status IN ('COMPLETED', 'FAILED', 'EXPIRED', 'DELETED')) t
GROUP BY type ORDER BY type"""
ROWS_EXTRACTED = (
    "SELECT coalesce(sum(row_count), 0) FROM jobs WHERE type = 'EXTRACT_PARTICIPANTS'"
    " AND status IN ('COMPLETED', 'EXPIRED', 'DELETED')"
)
WEBHOOK_ATTEMPTS = "SELECT outcome, count(*) AS n FROM webhook_attempts GROUP BY outcome ORDER BY outcome"


@dataclass(frozen=True, slots=True)
class Durations:
    """Finished jobs of one type: ``cumulative[i]`` took at most ``JOB_BUCKETS[i]`` seconds."""

    cumulative: tuple[int, ...]
    count: int
    total_seconds: float


@dataclass(frozen=True, slots=True)
class JobStats:
    """One reading; the defaults are the reading before any (nothing counted yet)."""

    jobs: tuple[tuple[str, str, int], ...] = ()  # (type, status, count)
    durations: dict[str, Durations] = field(default_factory=dict)  # by job type
    rows_extracted: int = 0  # participant rows written to extract files, ever
    webhook_attempts: tuple[tuple[str, int], ...] = ()  # (outcome, count)
    queue_depth: dict[str, int] = field(default_factory=dict)  # arq messages waiting, by queue
    worker_up: dict[str, bool] = field(default_factory=dict)  # an arq heartbeat is there, by queue


class QueueHealth(BaseModel):
    name: str
    depth: int = Field(description="arq messages waiting (including deferred ones)")
    workerHeartbeat: str | None = Field(description="arq's health-check line of a live worker, or null")
    workerAlive: bool


async def job_stats(pool: asyncpg.Pool, redis: Any, settings: Settings) -> JobStats:
    async with pool.acquire() as conn:
        jobs = await conn.fetch(JOBS_BY_TYPE_AND_STATUS)
        durations = await conn.fetch(JOB_DURATIONS)
        rows = await conn.fetchval(ROWS_EXTRACTED)
        attempts = await conn.fetch(WEBHOOK_ATTEMPTS)
    queues = await queue_health(redis, settings)
    return JobStats(
        jobs=tuple((r["type"], r["status"], r["n"]) for r in jobs),
        durations={
            r["type"]: Durations(tuple(r[i + 1] for i in range(len(JOB_BUCKETS))), r["n"], r["total"])
            for r in durations
        },
        rows_extracted=int(rows),
        webhook_attempts=tuple((r["outcome"], r["n"]) for r in attempts),
        queue_depth={q.name: q.depth for q in queues},
        worker_up={q.name: q.workerAlive for q in queues},
    )


class QueueReport(BaseModel):
    queues: list[QueueHealth]
    jobsInQueue: int
    jobsInProgress: int
    webhookMessagesPending: int
    webhookMessagesFailed: int


async def queue_health(redis: Any, settings: Settings) -> list[QueueHealth]:
    """Each queue's depth and the heartbeat of its freshest live worker process."""
    names = (settings.extract_queue, settings.default_queue)
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.zcard(name)
    depths = await pipe.execute()
    beats = await worker_beats.live_beats(redis, names)
    return [
        QueueHealth(
            name=name,
            depth=int(depth),
            workerHeartbeat=beats[name][0].line if beats[name] else None,
            workerAlive=bool(beats[name]),
        )
        for name, depth in zip(names, depths, strict=True)
    ]


async def queue_report(pool: asyncpg.Pool, redis: Any, settings: Settings) -> QueueReport:
    queues = await queue_health(redis, settings)
    async with pool.acquire() as conn:
        counts = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'IN_QUEUE') AS in_queue,
                      count(*) FILTER (WHERE status = 'IN_PROGRESS') AS in_progress
               FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS')"""
        )
        hooks = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                      count(*) FILTER (WHERE status = 'failed') AS failed
               FROM webhook_messages WHERE status IN ('pending', 'failed')"""
        )
    return QueueReport(
        queues=queues,
        jobsInQueue=counts["in_queue"],
        jobsInProgress=counts["in_progress"],
        webhookMessagesPending=hooks["pending"],
        webhookMessagesFailed=hooks["failed"],
    )
