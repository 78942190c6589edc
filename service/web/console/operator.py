"""Pages for operators (users with the admin flag): queue health, jobs with the admin API's
filters, one job with its attempts and deliveries (retry, cancel), webhook deliveries (redeliver),
the audit log with filters. The endpoints themselves: operator_webhooks.py; the dashboard:
dashboard.py.

Each page parses its filters as the admin API does (the same functions) and calls the same core
use-cases, then renders their models as the API would answer them.
"""

from __future__ import annotations

from aiohttp import web

from service.core import audit, stats
from service.core.jobs import admin
from service.core.jobs.model import JOB_STATUSES, JOB_TYPES, parse_job_uuid
from service.core.webhooks.admin import redeliver
from service.core.webhooks.store import list_deliveries
from service.web.console.render import redirect, render
from service.web.console.sessions import ACCOUNT
from service.web.filters import audit_filters, job_filters
from service.web.input import page_params, path_id
from service.web.replies import base_url, wire_data
from service.web.resources import CONNECTIONS, DB, REDIS, SETTINGS

JOB_FILTERS = ("status", "type", "studyOid", "siteOid", "owner", "createdFrom", "createdTo", "page")
AUDIT_FILTERS = ("user", "action", "studyOid", "siteOid", "from", "to", "page")
# What the job page says after an operator's action (the page then follows the job by itself).
JOB_NOTICES = {
    "retry": "Queued again: a worker takes it next.",
    "cancel": "Cancel requested: a queued job is cancelled now, a running one at its next chunk.",
}


def _filters(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    return {n: request.query[n] for n in names if request.query.get(n)}


async def queue(request: web.Request) -> web.StreamResponse:
    config = request.config_dict  # the parent app's resources
    report = await stats.queue_report(config[DB], config[REDIS], config[SETTINGS])
    template = "ops_queue_fragment.html" if request.query.get("fragment") == "1" else "ops_queue.html"
    return render(request, template, {"report": wire_data(report)})


async def job_list(request: web.Request) -> web.StreamResponse:
    page_no, size = page_params(request)
    filters = job_filters(request)
    async with request.config_dict[DB].acquire() as conn:
        data = await admin.list_jobs(conn, filters, page_no, size, base_url(request))
    context = {
        "data": wire_data(data), "filters": _filters(request, JOB_FILTERS), "statuses": JOB_STATUSES, "types": JOB_TYPES,
    }  # fmt: skip
    return render(request, "ops_jobs.html", context)


async def job_detail(request: web.Request) -> web.StreamResponse:
    job_uuid = parse_job_uuid(request.match_info["jobUuid"])
    async with request.config_dict[DB].acquire() as conn:
        job = await admin.job_detail(conn, job_uuid, base_url(request))
    if request.query.get("fragment") == "1":  # what the page polls while the job is unfinished
        return render(request, "ops_job_fragment.html", {"job": wire_data(job)})
    notice = JOB_NOTICES.get(request.query.get("done", ""))
    return render(request, "ops_job.html", {"job": wire_data(job), "notice": notice})


async def job_retry(request: web.Request) -> web.StreamResponse:
    job_uuid = parse_job_uuid(request.match_info["jobUuid"])
    async with request.config_dict[DB].acquire() as conn:
        await admin.retry_job(
            request.config_dict[CONNECTIONS], conn, request[ACCOUNT].actor, job_uuid, base_url(request)
        )
    raise redirect(request, "ops_job", query="done=retry", jobUuid=job_uuid)


async def job_cancel(request: web.Request) -> web.StreamResponse:
    job_uuid = parse_job_uuid(request.match_info["jobUuid"])
    async with request.config_dict[DB].acquire() as conn:
        await admin.cancel_job(conn, request[ACCOUNT].actor, job_uuid, base_url(request))
    raise redirect(request, "ops_job", query="done=cancel", jobUuid=job_uuid)


async def delivery_list(request: web.Request) -> web.StreamResponse:
    endpoint = path_id(request, "id")
    page_no, size = page_params(request, default_size=50, max_size=500)
    async with request.config_dict[DB].acquire() as conn:
        data = await list_deliveries(conn, endpoint, page_no, size)
    return render(request, "ops_deliveries.html", {"data": wire_data(data), "endpoint": str(endpoint)})


async def redeliver_delivery(request: web.Request) -> web.StreamResponse:
    message_id = path_id(request, "deliveryId")
    actor = request[ACCOUNT].actor
    delivery = await redeliver(request.config_dict[CONNECTIONS], actor, message_id)
    raise redirect(request, "ops_deliveries", id=delivery.endpointId)


async def audit_log(request: web.Request) -> web.StreamResponse:
    page_no, size = page_params(request)
    async with request.config_dict[DB].acquire() as conn:
        data = await audit.list_entries(conn, audit_filters(request), page_no, size)
    return render(
        request, "ops_audit.html", {"data": wire_data(data), "filters": _filters(request, AUDIT_FILTERS)}
    )
