"""Cron jobs that keep Postgres (the truth about jobs) and Redis (the work in flight) agreeing.

- ``sweep_jobs`` (every 10 s): a job Postgres calls ``IN_QUEUE`` for a while, or ``IN_PROGRESS``
  with no heartbeat for ``job_stale_seconds``, is enqueued again under its own UUID. If arq still
  holds it, arq ignores the duplicate; if Redis lost it (flushed, restarted without persistence),
  it runs again. A job past ``job_max_attempts`` is ``FAILED`` instead.
- ``expire_jobs`` (every 30 s): completed files past retention are deleted; the job becomes ``EXPIRED``.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import asyncpg
from arq import cron
from arq.cron import CronJob

from service import job_store
from service.settings import Settings

log = logging.getLogger("participants.worker.maintenance")

SWEEP_BATCH = 500
EXPIRE_BATCH = 200


async def fail_if_exhausted(conn: asyncpg.Connection, job_uuid: UUID, max_attempts: int) -> bool:
    """An unfinished job whose attempts are used up becomes FAILED (with its webhook event)."""
    attempts = await conn.fetchval(
        "SELECT attempts FROM jobs WHERE uuid = $1 AND status IN ('IN_QUEUE', 'IN_PROGRESS')", job_uuid
    )
    if attempts is None or attempts < max_attempts:
        return False
    return await job_store.finish_job(
        conn, job_uuid, job_store.FAILED, error=f"gave up after {attempts} attempts"
    )


async def claim_or_give_up(conn: asyncpg.Connection, job_uuid: UUID, max_attempts: int) -> asyncpg.Record | None:
    """The job, claimed for a new attempt; None when it is not to run now (finished, running
    elsewhere, or out of attempts, in which case it ends FAILED)."""
    job = await job_store.claim_job(conn, job_uuid, max_attempts)
    if job is None:
        await fail_if_exhausted(conn, job_uuid, max_attempts)
    return job


async def sweep_jobs(ctx: dict[str, Any]) -> int:
    """Re-enqueue unfinished jobs Redis may have lost; return how many arq took as new."""
    settings: Settings = ctx["settings"]
    pool: asyncpg.Pool = ctx["db"]
    redis = ctx["redis"]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT uuid, type, attempts FROM jobs
            WHERE (status = 'IN_QUEUE' AND created_at < now() - $1::float8 * interval '1 second')
               OR (status = 'IN_PROGRESS' AND coalesce(heartbeat_at, created_at) < now() - $2::float8 * interval '1 second')
            ORDER BY created_at
            LIMIT $3
            """,
            settings.job_requeue_after_seconds,
            settings.job_stale_seconds,
            SWEEP_BATCH,
        )
        taken = 0
        for row in rows:
            route = job_store.JOB_FUNCTIONS.get(row["type"])
            if route is None:
                continue
            if row["attempts"] >= settings.job_max_attempts:
                await fail_if_exhausted(conn, row["uuid"], settings.job_max_attempts)
                continue
            function_name, queue_field = route
            if await job_store.enqueue_job(redis, function_name, row["uuid"], getattr(settings, queue_field)):
                taken += 1
    if taken:
        log.info("re-enqueued unfinished jobs", extra={"count": taken})
    return taken


async def expire_jobs(ctx: dict[str, Any]) -> int:
    """Delete files past retention and mark their jobs EXPIRED; return how many expired."""
    async with ctx["db"].acquire() as conn:
        expired = await job_store.expire_due_jobs(conn, ctx["storage"], EXPIRE_BATCH)
    if expired:
        log.info("expired job files", extra={"count": len(expired)})
    return len(expired)


CRON_JOBS: list[CronJob] = [
    cron(sweep_jobs, second=set(range(0, 60, 10)), run_at_startup=True, timeout=60),
    cron(expire_jobs, second={5, 35}, run_at_startup=True, timeout=300),
]
