"""Pages for operators (users with the admin flag): queue health, jobs with the admin API's
filters, one job with its attempts and deliveries (retry, cancel), webhook endpoints and their
deliveries (redeliver), the audit log with filters.

Each page calls the admin API's own handler as the signed-in user and renders its answer: the
filters, the checks (``require_admin``) and the audit rows are the API's.
"""

from __future__ import annotations

from aiohttp import web

from service.core.jobs import JOB_STATUSES, JOB_TYPES
from service.web.console.guard import page
from service.web.console.render import redirect, render
from service.web.console.site import api_json, as_api
from service.web.handlers import operations, webhooks

JOB_FILTERS = ("status", "type", "studyOid", "siteOid", "owner", "createdFrom", "createdTo", "page")
AUDIT_FILTERS = ("user", "action", "studyOid", "siteOid", "from", "to", "page")


def _filters(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    return {n: request.query[n] for n in names if request.query.get(n)}


@page(admin=True)
async def queue(request: web.Request) -> web.StreamResponse:
    report = await api_json(await operations.get_queue(as_api(request)))
    return render(request, "ops_queue.html", {"report": report})


@page(admin=True)
async def job_list(request: web.Request) -> web.StreamResponse:
    filters = _filters(request, JOB_FILTERS)
    data = await api_json(await operations.list_jobs(as_api(request, filters)))
    context = {"data": data, "filters": filters, "statuses": JOB_STATUSES, "types": JOB_TYPES}
    return render(request, "ops_jobs.html", context)


@page(admin=True)
async def job_detail(request: web.Request) -> web.StreamResponse:
    job = await api_json(await operations.get_job(as_api(request)))
    return render(request, "ops_job.html", {"job": job})


@page(admin=True)
async def job_retry(request: web.Request) -> web.StreamResponse:
    await operations.retry_job(request)
    raise redirect(request, f"/ops/jobs/{request.match_info['jobUuid']}")


@page(admin=True)
async def job_cancel(request: web.Request) -> web.StreamResponse:
    await operations.cancel_job(request)
    raise redirect(request, f"/ops/jobs/{request.match_info['jobUuid']}")


@page(admin=True)
async def webhook_list(request: web.Request) -> web.StreamResponse:
    data = await api_json(await webhooks.list_webhooks(as_api(request)))
    return render(request, "ops_webhooks.html", {"data": data})


@page(admin=True)
async def delivery_list(request: web.Request) -> web.StreamResponse:
    data = await api_json(await webhooks.list_deliveries(as_api(request, _filters(request, ("page",)))))
    return render(request, "ops_deliveries.html", {"data": data, "endpoint": request.match_info["id"]})


@page(admin=True)
async def redeliver(request: web.Request) -> web.StreamResponse:
    delivery = await api_json(await webhooks.redeliver(request))
    raise redirect(request, f"/ops/webhooks/{delivery['endpointId']}/deliveries")


@page(admin=True)
async def audit_log(request: web.Request) -> web.StreamResponse:
    filters = _filters(request, AUDIT_FILTERS)
    data = await api_json(await operations.list_audit(as_api(request, filters)))
    return render(request, "ops_audit.html", {"data": data, "filters": filters})
