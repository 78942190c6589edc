"""Cron jobs that keep Postgres (the truth about jobs) and Redis (the work in flight) agreeing.

- ``sweep_jobs`` (every 2 s): a job Postgres calls ``IN_QUEUE`` for ``job_requeue_after_seconds``,
  or ``IN_PROGRESS`` with no heartbeat for ``extract_stale_seconds`` (extracts) or
  ``job_stale_seconds`` (others), is delivered again: arq's in-progress key and kept result for
  its UUID are dropped, and it is enqueued under its own UUID (a no-op while arq still holds the
  message, which any worker then takes; a new message if Redis lost it). A job past
  ``job_max_attempts`` is ``FAILED`` instead.

  Never twice at once: every worker beats for all its jobs every ``job_heartbeat_seconds``
  (worker/heartbeats.py), so a job is silent that long only if its worker is dead or its event
  loop stuck; a delivery of a job whose attempt is alive claims nothing (core/jobs/attempts.py).
  If a stuck worker wakes up, its attempt number is stale: the final status and the heartbeat only
  touch the row of the current attempt, so its results are never recorded.
- ``expire_jobs`` (every 30 s): completed files past retention are deleted; the job becomes ``EXPIRED``.
  A completed extract that started before an erasure at its site is due at once (core/erasure.py).
- ``forget_idempotency_keys`` (every 5 minutes): Idempotency-Key answers past retention.
- ``seal_audit`` (every 2 s): seals the audit rows whose writers have all ended (core/audit_seal.py);
  a watermark still waiting on a long transaction is kept for the next run.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import asyncpg
from arq import cron
from arq.cron import CronJob

from service.core import audit_seal, erasure, idempotency
from service.core.jobs import attempts, lifecycle, queue
from service.core.jobs.model import JOB_FUNCTIONS
from service.core.storage import StorageError
from service.settings import Settings

log = logging.getLogger("participants.worker.maintenance")

SWEEP_BATCH = 500
EXPIRE_BATCH = 200


async def sweep_jobs(ctx: dict[str, Any]) -> int:
    """Make arq deliver again every unfinished job Postgres says nobody is running; return how many
    arq took as new messages."""
    settings: Settings = ctx["settings"]
    pool: asyncpg.Pool = ctx["db"]
    redis = ctx["redis"]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""
            SELECT uuid, type, attempts, status, owner_id FROM jobs
            WHERE (status = 'IN_QUEUE' AND created_at < now() - $1::float8 * interval '1 second')
               OR (status = 'IN_PROGRESS' AND {attempts.stale_after("$3", "$4")})
            ORDER BY created_at
            LIMIT $2
            """,
            settings.job_requeue_after_seconds,
            SWEEP_BATCH,
            *attempts.stale_args(settings),
        )
        taken = 0
        for row in rows:
            if row["type"] not in JOB_FUNCTIONS:
                continue
            if row["attempts"] >= settings.job_max_attempts:
                await attempts.fail_if_exhausted(conn, row["uuid"], settings)
                continue
            # ``release`` drops what may keep arq from delivering it: the in-progress key of a
            # worker that took the message and died (before or after its claim), which arq keeps
            # for its job timeout + 10 s, an hour for a bulk upload; a kept result of a delivery
            # that ended without finishing the job (e.g. it failed to reach Postgres before its
            # claim), which makes arq refuse the same id. If a live worker holds it after all, the
            # claim in Postgres lets only one attempt run (core/jobs/attempts.py).
            if await queue.enqueue(
                redis, settings, row["type"], row["uuid"], owner_id=row["owner_id"], release=True
            ):
                taken += 1
    if taken:
        log.info("re-enqueued unfinished jobs", extra={"count": taken})
    return taken


async def expire_jobs(ctx: dict[str, Any]) -> int:
    """Delete files past retention and mark their jobs EXPIRED; return how many expired."""
    async with ctx["db"].acquire() as conn:
        await erasure.expire_read_before_erasure(conn)
        expired = await lifecycle.expire_due_jobs(conn, ctx["storage"], EXPIRE_BATCH)
    if expired:
        log.info("expired job files", extra={"count": len(expired)})
    return len(expired)


async def forget_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Drop Idempotency-Key answers past retention, and the stored bodies of large ones."""
    settings: Settings = ctx["settings"]
    async with ctx["db"].acquire() as conn:
        body_keys = await idempotency.purge_expired(
            conn, settings.idempotency_retention_seconds, EXPIRE_BATCH
        )
    for key in filter(None, body_keys):
        with contextlib.suppress(StorageError):  # an object left behind holds no job; retried never
            await ctx["storage"].delete(key)
    return len(body_keys)


async def seal_audit(ctx: dict[str, Any]) -> int:
    """Extend the audit log's hash chain; return how many rows were sealed."""
    sealer: audit_seal.Sealer = ctx.setdefault("audit_sealer", audit_seal.Sealer())
    async with ctx["db"].acquire() as conn:
        key = audit_seal.seal_key(conn)
        # Never waits past the next run: a slow watermark is kept in the sealer for it.
        return await sealer.run(conn, key, wait=1.5)


CRON_JOBS: list[CronJob] = [
    cron(sweep_jobs, second=set(range(0, 60, 2)), run_at_startup=True, timeout=60),
    cron(expire_jobs, second={5, 35}, run_at_startup=True, timeout=300),
    cron(forget_idempotency_keys, minute=set(range(0, 60, 5)), second={50}, run_at_startup=True, timeout=300),
    cron(
        seal_audit, second=set(range(1, 60, 2)), run_at_startup=True, timeout=60, keep_result=0, max_tries=1
    ),
]
