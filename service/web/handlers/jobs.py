"""The caller's jobs: status, lists, delete, and the file download.

Generic over job types: the download serves ``jobs.object_key`` under ``jobs.file_name`` whatever
produced it. Only the creator sees a job; anyone else gets ``invalidUuid`` (404), exactly as if
it did not exist.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import asyncpg
from aiohttp import web

from service.core import audit
from service.core import jobs as job_store
from service.core.audit import Actor
from service.core.errors import ApiError, ErrorBody
from service.core.files import CSV_CONTENT_TYPE, content_disposition
from service.core.storage import StorageError, StorageNotFound, StorageUnavailable
from service.core.urls import job_urls
from service.web.apidoc import CSV, NO_CONTENT, PAGE, Query, operation
from service.web.auth import authenticated_username
from service.web.input import FLAG_SCHEMA, accept_query, page_params, query_flag
from service.web.replies import base_url, reply
from service.web.resources import DB, SETTINGS, STORAGE

log = logging.getLogger("participants.jobs")

REDIRECT_TTL = dt.timedelta(minutes=5)
RETRY_AFTER_SECONDS = "2"
# ASCII digits only, and no more than 18 of them (Python refuses to convert very long digit strings;
# a Range that does not match is ignored, as RFC 9110 allows).
_RANGE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$")


async def _caller(request: web.Request, conn: asyncpg.Connection) -> Actor:
    username = await authenticated_username(request)
    user_id = await conn.fetchval("SELECT id FROM users WHERE username = $1 AND NOT disabled", username)
    return Actor(user_id, username)


async def _callers_job(request: web.Request, conn: asyncpg.Connection) -> tuple[Actor, asyncpg.Record]:
    """The caller and the job the path names, if the caller owns it (else ``invalidUuid``)."""
    actor = await _caller(request, conn)
    job = await job_store.get_owned_job(conn, request.match_info["jobUuid"], actor.user_id)
    accept_query(request)
    return actor, job


@operation("One of the caller's jobs", "jobs", ok={200: job_store.JobView})
async def get_job(request: web.Request) -> web.Response:
    async with request.app[DB].acquire() as conn:
        _, job = await _callers_job(request, conn)
    return reply(job_store.JobView, job_store.job_json(job, base_url(request)))


@operation("The caller's own jobs", "jobs", ok={200: job_store.JobList}, query=PAGE)
async def list_jobs(request: web.Request) -> web.Response:
    """The caller's own jobs, newest first; under a study (and site) path, only those there. Jobs
    made by a right the caller no longer holds are left out, as status and download refuse them."""
    study_oid = request.match_info.get("studyOID")
    site_oid = request.match_info.get("siteOID")
    async with request.app[DB].acquire() as conn:
        user_id = (await _caller(request, conn)).user_id
        study_id = site_id = None
        params: dict[str, Any] = {}
        if study_oid is not None:
            params["studyOid"] = study_oid
            study_id = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", study_oid)
            if study_id is None:
                raise ApiError("studyNotExist", params)
        if site_oid is not None:
            params["siteOid"] = site_oid
            site_id = await conn.fetchval("SELECT id FROM sites WHERE oid = $1 AND study_id = $2", site_oid, study_id)
            if site_id is None:
                raise ApiError("siteNotExist", params)
        accept_query(request)
        page, size = page_params(request)
        rows = await conn.fetch(
            job_store.JOB_SELECT
            + """
            WHERE j.owner_id = $1 AND ($2::bigint IS NULL OR j.study_id = $2)
              AND ($3::bigint IS NULL OR j.site_id = $3)
              -- Status and download refuse a job whose right has ended: the list leaves it out too.
              AND """
            + job_store.OWNER_HOLDS_RIGHT_SQL
            + """
            ORDER BY j.created_at DESC, j.uuid
            LIMIT $4 OFFSET $5
            """,
            user_id,
            study_id,
            site_id,
            size,
            (page - 1) * size,
        )
    base = base_url(request)
    return reply(job_store.JobList, {"jobs": [job_store.job_json(r, base) for r in rows], "page": page, "pageSize": size})


@operation("Delete the job's file (the job stays, DELETED)", "jobs", ok={200: job_store.JobView}, errors=(409,))
async def delete_job(request: web.Request) -> web.Response:
    """The owner deletes the job's file; the row stays, status ``DELETED``."""
    storage = request.app[STORAGE]
    async with request.app[DB].acquire() as conn:
        actor, job = await _callers_job(request, conn)
        params = {"jobUuid": str(job["uuid"])}
        if job["status"] in job_store.UNFINISHED:
            raise ApiError("jobInProgress", params, headers={"Retry-After": RETRY_AFTER_SECONDS})
        if job["status"] != job_store.DELETED:
            if job["object_key"]:
                try:
                    await storage.delete(job["object_key"])
                    await storage.discard_partials(job["object_key"])
                except StorageUnavailable:
                    raise ApiError("serviceUnavailable", params, headers={"Retry-After": "5"}) from None
            async with conn.transaction():
                await conn.execute(
                    "UPDATE jobs SET status = 'DELETED', expires_at = least(expires_at, now()) WHERE uuid = $1",
                    job["uuid"],
                )
                await audit.record_on_job(conn, actor, "job.delete", job)
        job = await job_store.get_owned_job(conn, str(job["uuid"]), actor.user_id)
    return reply(job_store.JobView, job_store.job_json(job, base_url(request)))


def _check_downloadable(job: asyncpg.Record) -> None:
    params = {"jobUuid": str(job["uuid"])}
    status = job["status"]
    if status in job_store.UNFINISHED:
        raise ApiError("jobInProgress", params, headers={"Retry-After": RETRY_AFTER_SECONDS})
    if status in (job_store.FAILED, job_store.CANCELLED):
        raise ApiError("jobFailed", {**params, "status": status})
    if status in (job_store.EXPIRED, job_store.DELETED):
        raise ApiError("fileExpired", params)
    expires_at = job["expires_at"]
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise ApiError("fileExpired", params)
    if not job["object_key"] or job["byte_size"] is None:
        raise ApiError("notFound", params)  # a job type that produced no file


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as ``[start, end)``; None means the whole file. Several ranges are
    answered with the whole file (RFC 9110 allows ignoring Range); unsatisfiable is 416."""
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - n), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _content_type(file_name: str) -> str:
    """CSV (extracts, bulk reports) unless the job named its file otherwise."""
    lower = file_name.lower()
    if lower.endswith(".json"):
        return "application/json"
    if lower.endswith(".txt"):
        return "text/plain; charset=utf-8"
    return CSV_CONTENT_TYPE


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _unsatisfiable(size: int) -> ApiError:
    return ApiError("rangeNotSatisfiable", {"size": size}, headers={"Content-Range": f"bytes */{size}"})


def _oc4_in_progress(request: web.Request, job: asyncpg.Record, err: ApiError) -> web.Response:
    """OC4 answers a poll of an unfinished job with 200 and the jobInProgress error body, and OC4
    clients (e.g. ehr2edc's OpenClinicaImportJobClient) retry only on exactly that, failing on any
    4xx. New clients should poll the job status endpoint named in ``statusUrl`` instead."""
    status_url, _ = job_urls(base_url(request), job["uuid"])
    body = {**err.body(), "params": {**err.params, "status": job["status"], "statusUrl": status_url}}
    return reply(ErrorBody, body, headers={**err.headers, "Cache-Control": "no-store"})


@operation(
    "Download the job's file (Range supported)",
    "jobs",
    # 200 with the jobInProgress body: OC4's polling answer, when the deployment keeps it (see docs).
    ok={200: {**CSV, "application/json": {"schema": ErrorBody}}, 206: CSV, 302: NO_CONTENT, 304: NO_CONTENT},
    query=[Query("redirect", FLAG_SCHEMA, "y: a 302 to a pre-signed storage URL, where storage can sign")],
    errors=(409, 410, 416),
)
async def download_file(request: web.Request) -> web.StreamResponse:
    storage = request.app[STORAGE]
    async with request.app[DB].acquire() as conn:
        actor, job = await _callers_job(request, conn)
        asks_redirect = query_flag(request, "redirect")  # a bad parameter is 400 whatever the job's state
        try:
            _check_downloadable(job)
        except ApiError as err:
            if err.code == "jobInProgress" and request.app[SETTINGS].oc4_polling_compat:
                return _oc4_in_progress(request, job, err)
            raise
        size: int = job["byte_size"]
        etag = f'"{job["sha256"]}"' if job["sha256"] else None
        redirect = asks_redirect and storage.can_sign
        byte_range = None
        if not redirect:
            if_range = request.headers.get("If-Range")
            if if_range is None or (etag is not None and if_range.strip() == etag):
                byte_range = _parse_range(request.headers.get("Range"), size)
        is_head = request.method == "HEAD"
        if etag is not None and not redirect and _matches(request.headers.get("If-None-Match"), etag):
            # The caller has this very file already: nothing is sent, so nothing is audited.
            return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "private, no-store"})
        if not is_head:
            await audit.record_on_job(
                conn,
                actor,
                "job.download",
                job,
                details={"range": byte_range is not None, "redirect": redirect},
            )
    params = {"jobUuid": str(job["uuid"])}
    try:
        if redirect:
            url = await storage.presigned_get_url(job["object_key"], REDIRECT_TTL)
            assert url is not None
            return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
        start, end = byte_range or (0, size)
        chunks = storage.read_stream(job["object_key"], start, end if byte_range else None)
        # Fetch the first chunk before sending headers, so a missing or unreachable object is
        # still an ordinary error response. HEAD sends the headers only: no body, no audit row.
        first = await anext(chunks, b"") if end > start and not is_head else b""
    except StorageNotFound:
        raise ApiError("fileExpired", params) from None
    except StorageUnavailable:
        raise ApiError("serviceUnavailable", params, headers={"Retry-After": "5"}) from None

    file_name = job["file_name"] or f"{job['uuid']}.csv"
    headers = {
        "Content-Type": _content_type(file_name),
        "Content-Disposition": content_disposition(file_name),
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-store",
        "Content-Length": str(end - start),
    }
    if etag:
        headers["ETag"] = etag
    status = 200
    if byte_range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if is_head:
        await chunks.aclose()
    elif first:
        await response.write(first)
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except StorageError as exc:
            # Headers are gone: all we can do is cut the connection, so the client sees a short body.
            log.warning("download interrupted", extra={"job_uuid": str(job["uuid"]), "error": type(exc).__name__})
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response
