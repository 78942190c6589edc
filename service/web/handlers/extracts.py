"""Extract participant contact information: the submit endpoint.

Submit (seed 000): ``GET .../participants/extractPartcipantsInfo`` (OC4's spelling, kept) or
``POST .../extractParticipantsInfo``. Only a site-level CRC (``ra``) or investigator at that site
may extract; one site per call. The job row is committed first, then the job is enqueued on the
extract queue by name (the web side never imports worker code): core/extracts.py does both, and
holds the query the worker streams.
"""

from __future__ import annotations

from aiohttp import web

from service.core import extracts
from service.core.extract_options import MAX_PAGE_NUMBER, MAX_PAGE_SIZE, ExtractOptions
from service.core.jobs.views import JobSubmitted
from service.web.apidoc import PLAIN_JOB, Link, Query, operation
from service.web.auth import authenticated_username
from service.web.handlers.jobs import delete_job, download_file, get_job
from service.web.idempotency import NO_BODY, Recorder, once
from service.web.input import FLAG_SCHEMA, accept_query
from service.web.replies import base_url, submitted_reply
from service.web.resources import CONNECTIONS, DB


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
        Query("bom", FLAG_SCHEMA, "y: the file starts with UTF-8's byte-order mark (for Excel); default n, OC4's file"),
    ],
    errors=(409, 429),  # 429: the per-user quota of unfinished jobs
    links=tuple(Link(name, target, {"jobUuid": "$response.header.Job-Uuid"})
                for name, target in (("status", get_job), ("download", download_file), ("delete", delete_job))),
    idempotent=True,
)  # fmt: skip
async def submit_extract(request: web.Request) -> web.StreamResponse:
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await extracts.extract_scope(
            conn, username, request.match_info["studyOID"], request.match_info["siteOID"]
        )
        accept_query(request)
        options = ExtractOptions.from_query(request.query)

        async def submitted(_: Recorder | None) -> web.Response:
            job = await extracts.submit_extract(
                request.app[CONNECTIONS], conn, scope, options, base_url(request)
            )
            return submitted_reply(request, job)

        return await once(request, conn, username, NO_BODY, submitted)
