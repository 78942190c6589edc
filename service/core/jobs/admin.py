"""What an operator (a user with the admin flag) may do with jobs: see every job's metadata (never a
file's contents), run a FAILED job again, cancel a queued or running one (a flag in Postgres the
worker checks between chunks; arq's own abort is not relied upon), purge expired files. Called by
the admin API and the operators' console pages alike; the caller has checked the admin flag."""

from __future__ import annotations

import logging
from uuid import UUID

import asyncpg

from service.core import audit
from service.core.audit import Actor
from service.core.connections import Connections
from service.core.jobs import lifecycle, queue, store
from service.core.jobs.store import JobFilters
from service.core.jobs.views import AdminJobDetail, AdminJobList, PurgeResult, admin_job, result_summary
from service.core.webhooks.store import messages_for_job

log = logging.getLogger("participants.admin_jobs")

PURGE_BATCH = 1000


async def list_jobs(
    conn: asyncpg.Connection, filters: JobFilters, page: int, size: int, base_url: str
) -> AdminJobList:
    """Every job, newest first, filtered."""
    total, rows = await store.list_filtered(conn, filters, page, size)
    return AdminJobList(jobs=[admin_job(r, base_url) for r in rows], page=page, pageSize=size, total=total)


async def job_detail(conn: asyncpg.Connection, job_uuid: UUID, base_url: str) -> AdminJobDetail:
    """One job in full: its parameters, the counts of its result, its webhook deliveries, its audit."""
    row = await store.get_job(conn, job_uuid)
    return AdminJobDetail(
        **admin_job(row, base_url).model_dump(),
        params=row["params"] or {},
        resultSummary=result_summary(row["result"]),
        webhookDeliveries=await messages_for_job(conn, job_uuid),
        audit=await audit.entries_for_job(conn, job_uuid),
    )


async def retry_job(
    conns: Connections, conn: asyncpg.Connection, actor: Actor, job_uuid: UUID, base_url: str
) -> AdminJobDetail:
    """A FAILED job runs again from scratch (same UUID, a fresh set of attempts)."""
    job = await lifecycle.retry_job(conn, actor, job_uuid)
    await queue.enqueue(
        conns.redis, conns.settings, job["type"], job_uuid, owner_id=job["owner_id"], rerun=True
    )
    return await job_detail(conn, job_uuid, base_url)


async def cancel_job(conn: asyncpg.Connection, actor: Actor, job_uuid: UUID, base_url: str) -> AdminJobDetail:
    await lifecycle.cancel_job(conn, actor, job_uuid)
    return await job_detail(conn, job_uuid, base_url)


async def purge_expired(conns: Connections, conn: asyncpg.Connection, actor: Actor) -> PurgeResult:
    """Delete files past retention now (what the worker's expiry cron does every 30 s)."""
    purged = await lifecycle.expire_due_jobs(conn, conns.storage, PURGE_BATCH)
    log.info("expired files purged", extra={"count": len(purged), "by": "admin"})
    if purged:
        await audit.record_by(conn, actor, "admin.jobs.purgeExpired", {"count": len(purged)})
    return PurgeResult(expired=len(purged), jobUuids=purged)
