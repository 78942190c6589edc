"""Sending a job's file to its owner, for the API's ``downloadFile`` and the console's download link
alike: Range and If-Range, ETag and If-None-Match, HEAD, a redirect to a pre-signed URL, streamed
from storage chunk by chunk. Generic over job types: it serves ``jobs.object_key`` under
``jobs.file_name`` whatever produced it."""

from __future__ import annotations

import datetime as dt
import logging
import re

import asyncpg
from aiohttp import web

from service.core.audit import Actor
from service.core.errors import ApiError, ErrorBody
from service.core.files import CSV_CONTENT_TYPE, content_disposition
from service.core.jobs import owned
from service.core.storage import StorageError, StorageNotFound, StorageUnavailable
from service.core.urls import job_urls
from service.web.input import accept_query, query_flag
from service.web.replies import base_url, reply
from service.web.resources import DB, SETTINGS, STORAGE

log = logging.getLogger("participants.jobs")

REDIRECT_TTL = dt.timedelta(minutes=5)
# ASCII digits only, and no more than 18 of them (Python refuses to convert very long digit strings;
# a Range that does not match is ignored, as RFC 9110 allows).
_RANGE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$")


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
    return reply(ErrorBody.model_validate(body), headers={**err.headers, "Cache-Control": "no-store"})


async def send_job_file(request: web.Request, actor: Actor) -> web.StreamResponse:
    """The file of the job the path names (``jobUuid``), to its owner: whole, a range, a 304, or a
    302 to a pre-signed URL when asked and storage can sign. Audited, except a HEAD or a 304."""
    storage = request.config_dict[STORAGE]
    async with request.config_dict[DB].acquire() as conn:
        job = await owned.owned_job(conn, actor, request.match_info["jobUuid"])
        accept_query(request)
        asks_redirect = query_flag(request, "redirect")  # a bad parameter is 400 whatever the job's state
        inline = query_flag(request, "open")
        try:
            owned.check_downloadable(job)
        except ApiError as err:
            if err.code == "jobInProgress" and request.config_dict[SETTINGS].oc4_polling_compat:
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
            await owned.record_download(conn, actor, job, ranged=byte_range is not None, redirect=redirect)
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
        "Content-Disposition": content_disposition(file_name, inline=inline),
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
            log.warning(
                "download interrupted", extra={"job_uuid": str(job["uuid"]), "error": type(exc).__name__}
            )
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response
