"""The admin API's operations side (``/admin/api/jobs``, ``/audit``, ``/queue``; admins only).

Parse the filters, call core (core/jobs/admin.py, core/audit.py, core/stats.py), reply.
"""

from __future__ import annotations

from aiohttp import web

from service.core import audit, stats
from service.core.audit import AuditPage
from service.core.jobs import admin
from service.core.jobs.model import JOB_STATUSES, JOB_TYPES, parse_job_uuid
from service.core.jobs.views import AdminJobDetail, AdminJobList, PurgeResult
from service.core.stats import QueueReport
from service.web.apidoc import INSTANT, PAGE, TEXT, Query, operation
from service.web.auth import require_admin
from service.web.filters import audit_filters, job_filters
from service.web.input import page_params
from service.web.replies import base_url, reply
from service.web.resources import CONNECTIONS, DB, REDIS, SETTINGS


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
    await require_admin(request)
    page, size = page_params(request)
    filters = job_filters(request)
    async with request.app[DB].acquire() as conn:
        return reply(await admin.list_jobs(conn, filters, page, size, base_url(request)))


@operation("One job in full (never the file)", "operations", ok={200: AdminJobDetail})
async def get_job(request: web.Request) -> web.Response:
    await require_admin(request)
    job_uuid = parse_job_uuid(request.match_info["jobUuid"])
    async with request.app[DB].acquire() as conn:
        return reply(await admin.job_detail(conn, job_uuid, base_url(request)))


@operation("Run a FAILED job again", "operations", ok={202: AdminJobDetail}, errors=(409,))
async def retry_job(request: web.Request) -> web.Response:
    """A FAILED job runs again from scratch (same UUID, a fresh set of attempts)."""
    user = await require_admin(request)
    job_uuid = parse_job_uuid(request.match_info["jobUuid"])
    async with request.app[DB].acquire() as conn:
        detail = await admin.retry_job(
            request.app[CONNECTIONS], conn, user.actor, job_uuid, base_url(request)
        )
    return reply(detail, 202)


@operation("Cancel a queued or running job", "operations", ok={202: AdminJobDetail}, errors=(409,))
async def cancel_job(request: web.Request) -> web.Response:
    """IN_QUEUE: CANCELLED now. IN_PROGRESS: the flag is set and the worker stops at its next chunk."""
    user = await require_admin(request)
    job_uuid = parse_job_uuid(request.match_info["jobUuid"])
    async with request.app[DB].acquire() as conn:
        return reply(await admin.cancel_job(conn, user.actor, job_uuid, base_url(request)), 202)


@operation("Delete files past retention now", "operations", ok={200: PurgeResult})
async def purge_expired(request: web.Request) -> web.Response:
    user = await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return reply(await admin.purge_expired(request.app[CONNECTIONS], conn, user.actor))


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
    await require_admin(request)
    page, size = page_params(request)
    filters = audit_filters(request)
    async with request.app[DB].acquire() as conn:
        return reply(await audit.list_entries(conn, filters, page, size))


@operation("Queue depths, jobs in flight, worker heartbeats", "operations", ok={200: QueueReport})
async def get_queue(request: web.Request) -> web.Response:
    await require_admin(request)
    return reply(await stats.queue_report(request.app[DB], request.app[REDIS], request.app[SETTINGS]))
