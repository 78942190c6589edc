"""The admin API's operations side (``/admin/api/jobs``, ``/audit``, ``/queue``; admins only).

An admin sees every job's metadata (never a file's contents), retries a FAILED job, cancels a
queued or running one (a flag in Postgres the worker checks between chunks; arq's own abort is
not relied upon), purges expired files, reads the audit log and the queues' health.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from service.core import audit
from service.core import job_queue
from service.core import jobs as job_store
from service.core.errors import ApiError
from service.core.jobs import JOB_STATUSES, JOB_TYPES
from service.core.webhooks import models as wm
from service.core.webhooks import store as ws
from service.settings import Settings
from service.web.apidoc import INSTANT, PAGE, TEXT, Query, operation
from service.web.handlers import directory as admin
from service.web.input import page_params, query_choice, query_instant, query_text
from service.web.replies import base_url, model_response
from service.web.resources import DB, REDIS, SETTINGS, STORAGE

log = logging.getLogger("participants.admin_ops")

PURGE_BATCH = 1000


class AdminJob(BaseModel):
    jobUuid: UUID
    type: str
    status: str
    studyOid: str
    siteOid: str | None
    owner: str
    createdAt: dt.datetime
    startedAt: dt.datetime | None
    completedAt: dt.datetime | None
    heartbeatAt: dt.datetime | None
    attempts: int
    rowsDone: int
    rowsExpected: int | None
    rowCount: int | None
    byteSize: int | None
    sha256: str | None
    fileName: str | None
    expiresAt: dt.datetime | None
    error: str | None
    cancelRequested: bool
    statusUrl: str


class AdminJobList(BaseModel):
    jobs: list[AdminJob]
    page: int
    pageSize: int
    total: int


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    username: str | None
    action: str
    studyOid: str | None
    siteOid: str | None
    subjectKey: str | None
    jobUuid: UUID | None
    details: dict[str, Any]


class AdminJobDetail(AdminJob):
    params: dict[str, Any]
    resultSummary: dict[str, Any] | None = Field(description="counts only; never participants' data")
    webhookDeliveries: list[wm.DeliveryOut]
    audit: list[AuditEntry]


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    page: int
    pageSize: int
    total: int


class QueueHealth(BaseModel):
    name: str
    depth: int = Field(description="arq messages waiting (including deferred ones)")
    workerHeartbeat: str | None = Field(description="arq's health-check line of a live worker, or null")
    workerAlive: bool


class QueueReport(BaseModel):
    queues: list[QueueHealth]
    jobsInQueue: int
    jobsInProgress: int
    webhookMessagesPending: int
    webhookMessagesFailed: int


class PurgeResult(BaseModel):
    expired: int
    jobUuids: list[UUID]


def _job_uuid(request: web.Request) -> UUID:
    return job_store.parse_job_uuid(request.match_info["jobUuid"])


# --- Views ------------------------------------------------------------------------------------

ADMIN_JOB_SELECT = """
SELECT j.*, st.oid AS study_oid, si.oid AS site_oid, u.username AS owner
FROM jobs j JOIN studies st ON st.id = j.study_id LEFT JOIN sites si ON si.id = j.site_id
JOIN users u ON u.id = j.owner_id
"""


def admin_job(row: asyncpg.Record, base: str) -> AdminJob:
    return AdminJob(
        jobUuid=row["uuid"],
        type=row["type"],
        status=row["status"],
        studyOid=row["study_oid"],
        siteOid=row["site_oid"],
        owner=row["owner"],
        createdAt=row["created_at"],
        startedAt=row["started_at"],
        completedAt=row["completed_at"],
        heartbeatAt=row["heartbeat_at"],
        attempts=row["attempts"],
        rowsDone=row["rows_done"],
        rowsExpected=row["rows_expected"],
        rowCount=row["row_count"],
        byteSize=row["byte_size"],
        sha256=row["sha256"],
        fileName=row["file_name"],
        expiresAt=row["expires_at"],
        error=row["error"],
        cancelRequested=row["cancel_requested"],
        statusUrl=job_store.job_urls(base, row["uuid"])[0],
    )


def _result_summary(result: Any) -> dict[str, Any] | None:
    """Only the numbers of a job's result (a bulk summary names participant IDs)."""
    if not isinstance(result, dict):
        return None
    return {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


AUDIT_SELECT = """
SELECT a.*, st.oid AS study_oid, si.oid AS site_oid, p.subject_key
FROM audit_log a LEFT JOIN studies st ON st.id = a.study_id LEFT JOIN sites si ON si.id = a.site_id
LEFT JOIN participants p ON p.id = a.participant_id
"""


def audit_entry(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        username=row["username"],
        action=row["action"],
        studyOid=row["study_oid"],
        siteOid=row["site_oid"],
        subjectKey=row["subject_key"],
        jobUuid=row["job_uuid"],
        details=row["details"] or {},
    )


# --- Handlers ---------------------------------------------------------------------------------


@operation(
    "Every job, filtered",
    "operations",
    ok={200: AdminJobList},
    query=[
        Query("status", {"type": "string", "enum": list(JOB_STATUSES)}),
        Query("type", {"type": "string", "enum": list(JOB_TYPES)}),
        Query("studyOid", TEXT),
        Query("siteOid", TEXT),
        Query("owner", TEXT),
        Query("createdFrom", INSTANT),
        Query("createdTo", INSTANT),
        *PAGE,
    ],
)
async def list_jobs(request: web.Request) -> web.Response:
    """Every job, newest first, filtered by status, type, studyOid, siteOid, owner, createdFrom/To."""
    await admin.require_admin(request)
    page, size = page_params(request)
    status = query_choice(request, "status", JOB_STATUSES)
    job_type = query_choice(request, "type", JOB_TYPES)
    study, site, owner = query_text(request, "studyOid"), query_text(request, "siteOid"), query_text(request, "owner")
    created_from, created_to = query_instant(request, "createdFrom"), query_instant(request, "createdTo")
    where = """WHERE ($1::text IS NULL OR j.status = $1) AND ($2::text IS NULL OR j.type = $2)
                 AND ($3::text IS NULL OR st.oid = $3) AND ($4::text IS NULL OR si.oid = $4)
                 AND ($5::text IS NULL OR u.username = $5)
                 AND ($6::timestamptz IS NULL OR j.created_at >= $6)
                 AND ($7::timestamptz IS NULL OR j.created_at < $7)"""
    args = (status, job_type, study, site, owner, created_from, created_to)
    async with request.app[DB].acquire() as conn:
        total = await conn.fetchval("SELECT count(*) FROM (" + ADMIN_JOB_SELECT + where + ") t", *args)
        rows = await conn.fetch(
            ADMIN_JOB_SELECT + where + " ORDER BY j.created_at DESC, j.uuid LIMIT $8 OFFSET $9",
            *args, size, (page - 1) * size,
        )  # fmt: skip
    base = base_url(request)
    return model_response(
        AdminJobList(jobs=[admin_job(r, base) for r in rows], page=page, pageSize=size, total=total)
    )


async def _get_job(conn: asyncpg.Connection, job_uuid: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(ADMIN_JOB_SELECT + " WHERE j.uuid = $1", job_uuid)
    if row is None:
        raise ApiError("invalidUuid", {"jobUuid": str(job_uuid)})
    return row


async def _job_detail(conn: asyncpg.Connection, job_uuid: UUID, base: str) -> AdminJobDetail:
    row = await _get_job(conn, job_uuid)
    audit_rows = await conn.fetch(AUDIT_SELECT + " WHERE a.job_uuid = $1 ORDER BY a.at, a.id", job_uuid)
    return AdminJobDetail(
        **admin_job(row, base).model_dump(),
        params=row["params"] or {},
        resultSummary=_result_summary(row["result"]),
        webhookDeliveries=await ws.messages_for_job(conn, job_uuid),
        audit=[audit_entry(a) for a in audit_rows],
    )


@operation("One job in full (never the file)", "operations", ok={200: AdminJobDetail})
async def get_job(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    job_uuid = _job_uuid(request)
    async with request.app[DB].acquire() as conn:
        return model_response(await _job_detail(conn, job_uuid, base_url(request)))


@operation("Run a FAILED job again", "operations", ok={202: AdminJobDetail}, errors=(409,))
async def retry_job(request: web.Request) -> web.Response:
    """A FAILED job runs again from scratch (same UUID, a fresh set of attempts)."""
    actor = await admin.require_admin(request)
    job_uuid = _job_uuid(request)
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        async with conn.transaction():
            job = await conn.fetchrow("SELECT * FROM jobs WHERE uuid = $1 FOR UPDATE", job_uuid)
            if job is None:
                raise ApiError("invalidUuid", {"jobUuid": str(job_uuid)})
            if job["status"] != job_store.FAILED:
                raise ApiError("jobNotRetryable", {"jobUuid": str(job_uuid), "status": job["status"]})
            if job["type"] not in job_store.RETRYABLE_TYPES:
                raise ApiError(
                    "jobNotRetryable", {"jobUuid": str(job_uuid), "status": job["status"], "type": job["type"]}
                )
            await conn.execute(
                """UPDATE jobs SET status = 'IN_QUEUE', attempts = 0, error = NULL, started_at = NULL,
                                   completed_at = NULL, heartbeat_at = NULL, rows_done = 0,
                                   cancel_requested = false
                   WHERE uuid = $1""",
                job_uuid,
            )
            await audit.record_on_job(
                conn, actor, "admin.job.retry", job,
                {"previousAttempts": job["attempts"], "previousError": (job["error"] or "")[:200]},
            )  # fmt: skip
        await job_queue.enqueue(request.app[REDIS], settings, job["type"], job_uuid, rerun=True)
        detail = await _job_detail(conn, job_uuid, base_url(request))
    return model_response(detail, 202)


@operation("Cancel a queued or running job", "operations", ok={202: AdminJobDetail}, errors=(409,))
async def cancel_job(request: web.Request) -> web.Response:
    """IN_QUEUE: CANCELLED now. IN_PROGRESS: the flag is set and the worker stops at its next chunk."""
    actor = await admin.require_admin(request)
    job_uuid = _job_uuid(request)
    async with request.app[DB].acquire() as conn:
        async with conn.transaction():
            job = await conn.fetchrow("SELECT * FROM jobs WHERE uuid = $1 FOR UPDATE", job_uuid)
            if job is None:
                raise ApiError("invalidUuid", {"jobUuid": str(job_uuid)})
            if job["status"] not in job_store.UNFINISHED:
                raise ApiError("jobNotCancellable", {"jobUuid": str(job_uuid), "status": job["status"]})
            await conn.execute("UPDATE jobs SET cancel_requested = true WHERE uuid = $1", job_uuid)
            if (
                job["status"] == job_store.IN_QUEUE
            ):  # no worker has it: final now (a late arq message finds it done)
                await job_store.finish_job(conn, job_uuid, job_store.CANCELLED, error="cancelled")
            await audit.record_on_job(conn, actor, "admin.job.cancel", job, {"statusBefore": job["status"]})
        detail = await _job_detail(conn, job_uuid, base_url(request))
    return model_response(detail, 202)


@operation("Delete files past retention now", "operations", ok={200: PurgeResult})
async def purge_expired(request: web.Request) -> web.Response:
    actor = await admin.require_admin(request)
    async with request.app[DB].acquire() as conn:
        purged = await job_store.expire_due_jobs(conn, request.app[STORAGE], PURGE_BATCH)
        log.info("expired files purged", extra={"count": len(purged), "by": "admin"})
        if purged:
            await audit.record_by(conn, actor, "admin.jobs.purgeExpired", {"count": len(purged)})
    return model_response(PurgeResult(expired=len(purged), jobUuids=purged))


@operation(
    "The audit log, filtered",
    "operations",
    ok={200: AuditPage},
    query=[
        Query("user", TEXT),
        Query("action", TEXT),
        Query("studyOid", TEXT),
        Query("siteOid", TEXT),
        Query("from", INSTANT),
        Query("to", INSTANT),
        *PAGE,
    ],
)
async def list_audit(request: web.Request) -> web.Response:
    """The audit log, newest first, filtered by user, action, studyOid, siteOid, from, to."""
    await admin.require_admin(request)
    page, size = page_params(request)
    user, action = query_text(request, "user"), query_text(request, "action")
    study, site = query_text(request, "studyOid"), query_text(request, "siteOid")
    start, end = query_instant(request, "from"), query_instant(request, "to")
    where = """WHERE ($1::text IS NULL OR a.username = $1) AND ($2::text IS NULL OR a.action = $2)
                 AND ($3::text IS NULL OR st.oid = $3) AND ($4::text IS NULL OR si.oid = $4)
                 AND ($5::timestamptz IS NULL OR a.at >= $5) AND ($6::timestamptz IS NULL OR a.at < $6)"""
    args = (user, action, study, site, start, end)
    async with request.app[DB].acquire() as conn:
        total = await conn.fetchval("SELECT count(*) FROM (" + AUDIT_SELECT + where + ") t", *args)
        rows = await conn.fetch(
            AUDIT_SELECT + where + " ORDER BY a.at DESC, a.id DESC LIMIT $7 OFFSET $8",
            *args,
            size,
            (page - 1) * size,
        )
    return model_response(
        AuditPage(entries=[audit_entry(r) for r in rows], page=page, pageSize=size, total=total)
    )


async def queue_report(pool: asyncpg.Pool, redis: Any, settings: Settings) -> QueueReport:
    queues = []
    for name in (settings.extract_queue, settings.default_queue):
        depth = await redis.zcard(name)
        beat = await redis.get(f"{name}:health-check")
        text = beat.decode(errors="replace") if beat else None
        queues.append(QueueHealth(name=name, depth=depth, workerHeartbeat=text, workerAlive=beat is not None))
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


@operation("Queue depths, jobs in flight, worker heartbeats", "operations", ok={200: QueueReport})
async def get_queue(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    return model_response(await queue_report(request.app[DB], request.app[REDIS], request.app[SETTINGS]))
