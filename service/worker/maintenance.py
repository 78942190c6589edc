"""Cron jobs that keep Postgres (the truth about jobs) and Redis (the work in flight) agreeing.

- ``sweep_jobs`` (every 2 s): a job Postgres calls ``IN_QUEUE`` for ``job_requeue_after_seconds``,
  or ``IN_PROGRESS`` with no heartbeat for ``extract_stale_seconds`` (extracts) or
  ``job_stale_seconds`` (others), is enqueued again under its own UUID. If arq still holds it, arq
  ignores the duplicate; if Redis lost it (flushed, restarted without persistence), it runs again.
  For a silent ``IN_PROGRESS`` job, arq's in-progress key is dropped first: it belongs to a dead
  worker and would otherwise keep the job from any other worker until arq's job timeout. A job past
  ``job_max_attempts`` is ``FAILED`` instead.

  Running twice at once: a live worker heartbeats every ``job_heartbeat_seconds`` from the stream
  it is writing, so it is never silent for ``extract_stale_seconds`` unless it is dead or its event
  loop is stuck. If a stuck one wakes up, its attempt number is stale: ``finish_job`` and the
  heartbeat only touch the row of the current attempt, so its results are never recorded.
- ``expire_jobs`` (every 30 s): completed files past retention are deleted; the job becomes ``EXPIRED``.
- ``forget_idempotency_keys`` (every 5 minutes): Idempotency-Key answers past retention.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from uuid import UUID

import asyncpg
from arq import cron
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob

from service.core import idempotency
from service.core import jobs as job_store
from service.core.storage import StorageError
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
            SELECT uuid, type, attempts, status FROM jobs
            WHERE (status = 'IN_QUEUE' AND created_at < now() - $1::float8 * interval '1 second')
               OR (status = 'IN_PROGRESS' AND coalesce(heartbeat_at, created_at) < now()
                   - (CASE WHEN type = 'EXTRACT_PARTICIPANTS' THEN $4::float8 ELSE $2::float8 END) * interval '1 second')
            ORDER BY created_at
            LIMIT $3
            """,
            settings.job_requeue_after_seconds,
            settings.job_stale_seconds,
            SWEEP_BATCH,
            settings.extract_stale_seconds,
        )
        taken = 0
        for row in rows:
            if row["type"] not in job_store.JOB_FUNCTIONS:
                continue
            if row["attempts"] >= settings.job_max_attempts:
                await fail_if_exhausted(conn, row["uuid"], settings.job_max_attempts)
                continue
            if row["status"] == job_store.IN_PROGRESS:
                await redis.delete(in_progress_key_prefix + str(row["uuid"]))  # its worker is gone
            if await job_store.enqueue(redis, settings, row["type"], row["uuid"]):
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


async def forget_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Drop Idempotency-Key answers past retention, and the stored bodies of large ones."""
    settings: Settings = ctx["settings"]
    async with ctx["db"].acquire() as conn:
        body_keys = await idempotency.purge_expired(conn, settings.idempotency_retention_seconds, EXPIRE_BATCH)
    for key in filter(None, body_keys):
        with contextlib.suppress(StorageError):  # an object left behind holds no job; retried never
            await ctx["storage"].delete(key)
    return len(body_keys)


CRON_JOBS: list[CronJob] = [
    cron(sweep_jobs, second=set(range(0, 60, 2)), run_at_startup=True, timeout=60),
    cron(expire_jobs, second={5, 35}, run_at_startup=True, timeout=300),
    cron(forget_idempotency_keys, minute=set(range(0, 60, 5)), second={50}, run_at_startup=True, timeout=300),
]
