"""The caller's jobs: status, lists, delete, and the file download (web/downloads.py sends it).

Only the creator sees a job; anyone else gets ``invalidUuid`` (404), exactly as if it did not
exist (core/jobs/owned.py).
"""

from __future__ import annotations

from aiohttp import web

from service.core.errors import ErrorBody
from service.core.jobs import owned
from service.core.jobs.views import JobList, JobView, OC4JobList
from service.web.apidoc import CSV, NO_CONTENT, PAGE, Query, operation
from service.web.auth import current_actor
from service.web.downloads import send_job_file
from service.web.input import FLAG_SCHEMA, accept_query, page_params
from service.web.replies import base_url, reply
from service.web.resources import DB, STORAGE


@operation("One of the caller's jobs", "jobs", ok={200: JobView})
async def get_job(request: web.Request) -> web.Response:
    actor = await current_actor(request)
    async with request.app[DB].acquire() as conn:
        job = await owned.get_job(conn, actor, request.match_info["jobUuid"], base_url(request))
    accept_query(request)
    return reply(job)


@operation("The caller's own jobs", "jobs", ok={200: JobList}, query=PAGE)
async def list_jobs(request: web.Request) -> web.Response:
    """The caller's own jobs, newest first; under a study (and site) path, only those there. Jobs
    made by a right the caller no longer holds are left out, as status and download refuse them."""
    actor = await current_actor(request)
    async with request.app[DB].acquire() as conn:
        place = await owned.job_place(
            conn, request.match_info.get("studyOID"), request.match_info.get("siteOID")
        )
        accept_query(request)
        page, size = page_params(request)
        return reply(await owned.list_jobs(conn, actor, place, page, size, base_url(request)))


OC4_PAGE = (PAGE[0], Query("pageSize", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}))


@operation(
    "The caller's own jobs at a study or site, as OC4 lists them",
    "jobs",
    ok={200: OC4JobList},
    query=OC4_PAGE,
)
async def list_jobs_oc4(request: web.Request) -> web.Response:
    """GET .../studies/{studyOID}[/sites/{siteOID}]/jobs: OC4's bare array of ``JobDetailDTO``."""
    actor = await current_actor(request)
    async with request.app[DB].acquire() as conn:
        place = await owned.job_place(
            conn, request.match_info.get("studyOID"), request.match_info.get("siteOID")
        )
        accept_query(request)
        page, size = page_params(request, default_size=1000)
        return reply(await owned.list_jobs_oc4(conn, actor, place, page, size))


@operation("Delete the job's file (the job stays, DELETED)", "jobs", ok={200: JobView}, errors=(409,))
async def delete_job(request: web.Request) -> web.Response:
    """The owner deletes the job's file; the row stays, status ``DELETED``."""
    actor = await current_actor(request)
    async with request.app[DB].acquire() as conn:
        job = await owned.owned_job(conn, actor, request.match_info["jobUuid"])
        accept_query(request)
        return reply(await owned.delete_job(conn, request.app[STORAGE], actor, job, base_url(request)))


@operation(
    "Download the job's file (Range supported)",
    "jobs",
    # 200 with the jobInProgress body: OC4's polling answer, when the deployment keeps it (see docs).
    ok={200: {**CSV, "application/json": {"schema": ErrorBody}}, 206: CSV, 302: NO_CONTENT, 304: NO_CONTENT},
    query=[
        Query("redirect", FLAG_SCHEMA, "y: a 302 to a pre-signed storage URL, where storage can sign"),
        Query("open", FLAG_SCHEMA, "true: Content-Disposition inline (shown, not saved), as OC4's open=true"),
    ],
    errors=(409, 410, 416),
)
async def download_file(request: web.Request) -> web.StreamResponse:
    return await send_job_file(request, await current_actor(request))
