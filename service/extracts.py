"""Extract participant contact information: the submit endpoint and the query the worker streams.

Submit (seed 000): ``GET .../participants/extractPartcipantsInfo`` (OC4's spelling, kept) or
``POST .../extractParticipantsInfo``. Only a site-level CRC (``ra``) or investigator at that site
may extract; one site per call. The job row is committed first, then the job is enqueued on the
extract queue by name (the web side never imports worker code).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any
from urllib.parse import quote
from uuid import UUID

import asyncpg
from aiohttp import web

from . import audit, job_store
from .auth import authenticated_username
from .errors import json_response
from .resources import DB, REDIS, SETTINGS
from .roles import Action, authorize, load_scope

log = logging.getLogger("participants.extracts")

EXTRACT_FUNCTION = "extract_participants_job"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
CSV_HEADER = "ParticipantId,First Name,Last Name,Email,Mobile,Identifier,Access Code,Participate Status"

# One site's extractable participants, in ID order, every cell through the formula-injection guard
# (sql/0003_extract.sql). COPY does the RFC 4180 quoting; rows never pass through Python.
# The WHERE clause matches the partial index participants_site_extract_idx exactly.
EXTRACT_SELECT = """
SELECT csv_guard(p.subject_key) AS "ParticipantId",
       csv_guard(p.first_name) AS "First Name",
       csv_guard(p.last_name) AS "Last Name",
       csv_guard(p.email) AS "Email",
       csv_guard_phone(p.phone) AS "Mobile",
       csv_guard(p.identifier) AS "Identifier",
       csv_guard(p.access_code) AS "Access Code",
       csv_guard(nullif(p.participate_status, '')) AS "Participate Status"  -- empty, not ""
FROM participants p
WHERE p.site_id = {site_id} AND p.status IN ('available', 'signed')
ORDER BY p.subject_key
"""

COUNT_SQL = "SELECT count(*) FROM participants p WHERE p.site_id = $1 AND p.status IN ('available', 'signed')"


def extract_select(site_id: int) -> str:
    """The SELECT for one site. COPY takes no bind parameters, so the id is an integer formatted in."""
    return EXTRACT_SELECT.format(site_id=int(site_id))


def extract_file_name(study_oid: str, site_oid: str, at: dt.datetime) -> str:
    """OC4's name: ``{studyOID}-{siteOID}_Participant Access Code_{yyyy-MM-dd-HHmmssSSS}Z.csv`` (UTC)."""
    at = at.astimezone(dt.UTC)
    stamp = at.strftime("%Y-%m-%d-%H%M%S") + f"{at.microsecond // 1000:03d}"
    return f"{study_oid}-{site_oid}_Participant Access Code_{stamp}Z.csv"


def extract_object_key(job_uuid: UUID) -> str:
    return f"extracts/{job_uuid}.csv"


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII fallback ``filename`` and the exact name in ``filename*`` (RFC 5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in file_name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


def base_url(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    if settings.public_url:
        return settings.public_url.rstrip("/") + settings.path_prefix.rstrip("/")
    return f"{request.scheme}://{request.host}{settings.path_prefix.rstrip('/')}"


async def submit_extract(request: web.Request) -> web.Response:
    study_oid = request.match_info["studyOID"]
    site_oid = request.match_info["siteOID"]
    username = await authenticated_username(request)
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(conn, username, study_oid, site_oid)
        authorize(scope, Action.EXTRACT)
        assert scope.study is not None and scope.site is not None and scope.user_id is not None
        now = dt.datetime.now(dt.UTC)
        job_uuid = uuid.uuid4()
        async with conn.transaction():
            job = await job_store.create_job(
                conn,
                job_type=job_store.EXTRACT_PARTICIPANTS,
                study_id=scope.study["id"],
                site_id=scope.site["id"],
                owner_id=scope.user_id,
                file_name=extract_file_name(study_oid, site_oid, now),
                object_key=extract_object_key(job_uuid),
                params={"studyOid": study_oid, "siteOid": site_oid},
                job_uuid=job_uuid,
            )
            await audit.record(conn, scope, "extract.submit", job_uuid=job_uuid)
        try:
            await job_store.enqueue_job(request.app[REDIS], EXTRACT_FUNCTION, job_uuid, settings.extract_queue)
        except Exception:
            # The caller never learns this UUID: withdraw the job (best effort: if Postgres is gone
            # too, the sweeper runs it later, which is harmless) and answer 503.
            await _withdraw(conn, job_uuid)
            raise
    return _submitted(request, job_uuid, job)


async def _withdraw(conn: asyncpg.Connection, job_uuid: UUID) -> None:
    try:
        await conn.execute("DELETE FROM jobs WHERE uuid = $1 AND status = 'IN_QUEUE'", job_uuid)
    except Exception:  # noqa: S110 - see the caller
        log.warning("could not withdraw an unqueued job", extra={"job_uuid": str(job_uuid)})


def _submitted(request: web.Request, job_uuid: UUID, job: Any) -> web.Response:
    status_url, download_url = job_store.job_urls(base_url(request), job_uuid)
    headers = {"Location": status_url}
    if "application/json" in request.headers.get("Accept", ""):
        body = {"jobUuid": str(job_uuid), "status": job["status"], "statusUrl": status_url, "downloadUrl": download_url}
        return json_response(body, headers=headers)
    return web.Response(text=f"job uuid: {job_uuid}", content_type="text/plain", headers=headers)


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    """Register this module's routes under the OC4 path prefix."""
    base = prefix + "/pages/auth/api/clinicaldata/studies/{studyOID}/sites/{siteOID}/participants/"
    for spelling in ("extractPartcipantsInfo", "extractParticipantsInfo"):
        router.add_get(base + spelling, submit_extract)
        router.add_post(base + spelling, submit_extract)

