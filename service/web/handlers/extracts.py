"""Extract participant contact information: the submit endpoint.

Submit (seed 000): ``GET .../participants/extractPartcipantsInfo`` (OC4's spelling, kept) or
``POST .../extractParticipantsInfo``. Only a site-level CRC (``ra``) or investigator at that site
may extract; one site per call. The job row is committed first, then the job is enqueued on the
extract queue by name (the web side never imports worker code); the query the worker streams is in
service/core/extracts.py.
"""

from __future__ import annotations

import datetime as dt
import uuid

from aiohttp import web

from service.core import job_queue
from service.core import jobs as job_store
from service.core.extract_options import MAX_PAGE_NUMBER, MAX_PAGE_SIZE, ExtractOptions
from service.core.extracts import extract_file_name, extract_object_key
from service.core.jobs import JobSubmitted
from service.core.roles import Action, authorize, load_scope
from service.web.apidoc import PLAIN_JOB, Link, Query, operation
from service.web.auth import authenticated_username
from service.web.handlers.jobs import delete_job, download_file, get_job
from service.web.idempotency import NO_BODY, Recorder, once
from service.web.input import FLAG_SCHEMA, accept_query
from service.web.replies import job_submitted
from service.web.resources import DB, REDIS, SETTINGS


@operation(
    "Submit an extract of participant contact information",
    "extracts",
    ok={200: {**PLAIN_JOB, "application/json": {"schema": JobSubmitted}}},
    query=[
        Query("includeParticipateInfo", FLAG_SCHEMA, "y/n, any case; n empties Access Code and Participate Status; default y"),
        Query("includeParticipateRelatedInfo", FLAG_SCHEMA, "the same"),
        Query("page_number", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_NUMBER, "default": 1}),
        Query("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
              "participants per page, in ID order; default: all"),
    ],
    errors=(409, 429),  # 429: the per-user quota of unfinished jobs
    links=tuple(Link(name, target, {"jobUuid": "$response.header.Job-Uuid"})
                for name, target in (("status", get_job), ("download", download_file), ("delete", delete_job))),
    idempotent=True,
)  # fmt: skip
async def submit_extract(request: web.Request) -> web.Response:
    study_oid = request.match_info["studyOID"]
    site_oid = request.match_info["siteOID"]
    username = await authenticated_username(request)
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(conn, username, study_oid, site_oid)
        authorize(scope, Action.EXTRACT)
        accept_query(request)
        options = ExtractOptions.from_query(request.query)

        async def submit(_: Recorder | None) -> web.Response:
            assert scope.study is not None and scope.site is not None and scope.user_id is not None
            now = dt.datetime.now(dt.UTC)
            job_uuid = uuid.uuid4()
            # One statement, its own transaction: the job, its audit row and the quota check.
            job = await job_store.create_job(
                conn,
                job_type=job_store.EXTRACT_PARTICIPANTS,
                study_id=scope.study["id"],
                site_id=scope.site["id"],
                owner_id=scope.user_id,
                file_name=extract_file_name(study_oid, site_oid, now),
                object_key=extract_object_key(job_uuid),
                params={"studyOid": study_oid, "siteOid": site_oid, **options.to_params()},
                job_uuid=job_uuid,
                max_active=settings.max_active_jobs_per_user,
                audit=job_store.Submitted(scope.username, "extract.submit"),
            )
            await job_queue.enqueue_or_withdraw(conn, request.app[REDIS], settings, job_store.EXTRACT_PARTICIPANTS, job_uuid)
            return job_submitted(request, job_uuid, job["status"])

        return await once(request, conn, username, NO_BODY, submit)
