"""Bulk participant upload from CSV: ``POST .../participants/bulk`` at study and site level.

The body streams through the CSV parser (``bulk_csv``) into a staging table by COPY, then one
transaction decides and inserts every row (``bulk_store``), and the summary is streamed back from
the staging table. Memory holds a chunk of the body and a batch of rows, never the file.

Every answer, failures included, has the seed's shape (``uploadCount``, ``failureCount``,
``message``, ``createdBy``, ``createdAt``, ``failedParticipants``, ``participants``); a
file-level failure carries its ``errorCode`` in ``message`` and the status of contract.md's table.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader
from aiohttp.web_protocol import RequestPayloadError

from service.core import job_queue
from service.core import jobs as job_store
from service.core.bulk import staging as bulk_store
from service.core.bulk.parser import BulkCsvParser
from service.core.bulk.spool import Spool, spool
from service.core.bulk.summary import (
    PARAMS_SHOWN,
    BulkResult,
    added_entries,
    check_bulk_allowed,
    failed_entries,
    failure_body,
    oc4_timestamp,
    result_file_name,
    summary_head,
    upload_object_key,
)
from service.core.errors import ApiError
from service.core.roles import Scope, load_scope
from service.core.storage import StorageError
from service.web.apidoc import PLAIN_JOB, Query, operation
from service.web.auth import authenticated_username
from service.web.idempotency import Recorder, once, requested_key
from service.web.input import FLAG_SCHEMA, accept_query, query_flag
from service.web.replies import job_submitted, reply
from service.web.resources import DB, REDIS, SETTINGS, STORAGE

log = logging.getLogger("participants.bulk")


CHUNK = 256 * 1024  # bytes read from the body at a time
# A multipart body carries some bytes besides the file; allow for them in the early size check.
MULTIPART_OVERHEAD = 64 * 1024
# What aiohttp's multipart reader raises on a body that is not well-formed multipart.
MALFORMED_MULTIPART = (ValueError, AssertionError, HttpProcessingError, RuntimeError, RequestPayloadError)


@operation(
    "Bulk add participant IDs from a CSV file",
    "participants",
    # With async=y the answer is OC4's `job uuid: <uuid>` text, like an extract submit.
    ok={200: {"application/json": {"schema": BulkResult}, **PLAIN_JOB}},
    query=[Query("async", FLAG_SCHEMA, "y/n: run as a job")],
    body_media={
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
        "text/csv": {"schema": {"type": "string"}},
    },
    error_model=BulkResult,
    errors=(409, 429),  # 429: the per-user quota of unfinished jobs
    idempotent=True,
)
async def bulk_upload(request: web.Request) -> web.StreamResponse:
    """POST .../participants/bulk: add the participant IDs of a CSV file, all or nothing."""
    created_at = oc4_timestamp(datetime.now(UTC))
    scope: Scope | None = None
    settings = request.app[SETTINGS]
    pool = request.app[DB]
    try:
        study_oid = request.match_info["studyOID"]
        site_oid = request.match_info.get("siteOID")
        username = await authenticated_username(request)
        async with pool.acquire() as conn:
            scope = await load_scope(conn, username, study_oid, site_oid)
            check_bulk_allowed(scope)
        accept_query(request)
        run_async = query_flag(request, "async")
        requested_key(request)  # a malformed Idempotency-Key is refused before the file is read
        # The file arrives with no connection held (spool.py): a trickling client holds a temp file.
        body = await upload_body(request, settings.bulk_max_bytes)
        with await spool(body, settings.bulk_max_bytes) as file:
            async with pool.acquire() as conn:
                scope = await load_scope(conn, username, study_oid, site_oid)  # the right may have ended meanwhile
                check_bulk_allowed(scope)
                work = submit_bulk_job if run_async else add_from_csv
                return await once(
                    request, conn, username, file.digest,
                    lambda recorder: work(request, conn, scope, file, created_at, recorder),
                    on_error=lambda err: _failure(err, scope, created_at),
                )  # fmt: skip
    except ApiError as err:
        return _failure(err, scope, created_at)


def _failure(err: ApiError, scope: Scope | None, created_at: str) -> web.Response:
    """A failure in the seed's summary shape, with the status of contract.md's table."""
    headers = dict(err.headers)
    if err.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    full_name = scope.full_name if scope is not None else ""
    params = err.params if err.code in PARAMS_SHOWN else None
    return reply(BulkResult, failure_body(err.code, full_name, created_at, params), err.status, headers)


# -- the body ----------------------------------------------------------------------------------


async def upload_body(request: web.Request, max_bytes: int) -> AsyncIterator[bytes]:
    """The CSV file's bytes, as a stream: the multipart part ``file`` or a raw ``text/csv`` body.

    Checks what can be checked before reading the file (media type, part name and file name,
    declared length); the stream itself raises ``fileTooLarge`` past ``max_bytes`` and
    ``notSupportedFileFormat`` on a malformed multipart body.
    """
    ctype = request.content_type
    declared = request.content_length
    if ctype == "multipart/form-data":
        if declared is not None and declared > max_bytes + MULTIPART_OVERHEAD:
            raise ApiError("fileTooLarge")
        part = await _file_part(request)
        return part_chunks(part)
    if ctype == "text/csv":
        if declared is not None and declared > max_bytes:
            raise ApiError("fileTooLarge")
        return _raw_chunks(request)
    raise ApiError("notSupportedFileFormat")


async def _file_part(request: web.Request) -> BodyPartReader:
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise ApiError("notSupportedFileFormat")
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not ours
            with warnings.catch_warnings():  # malformed Content-Disposition: no name, not the file
                warnings.simplefilter("ignore")
                name, filename = part.name, part.filename
            if name != "file":
                continue
            part_type = part.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if (filename or "").lower().endswith(".csv") or part_type == "text/csv":
                return part
            raise ApiError("notSupportedFileFormat")
    except MALFORMED_MULTIPART:
        raise ApiError("notSupportedFileFormat") from None


async def part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    """A multipart part's decoded bytes; a malformed body is ``notSupportedFileFormat``."""
    while True:
        try:
            chunk = await part.read_chunk(CHUNK)
            data = part.decode(chunk) if chunk else b""  # a Content-Transfer-Encoding, if any
        except MALFORMED_MULTIPART:
            raise ApiError("notSupportedFileFormat") from None
        if not chunk:
            return
        yield bytes(data)


async def _raw_chunks(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            yield chunk
    except RequestPayloadError:  # a Content-Encoding that does not decode
        raise ApiError("notSupportedFileFormat") from None


# -- the synchronous upload --------------------------------------------------------------------


async def add_from_csv(
    request: web.Request, conn: asyncpg.Connection, scope: Scope, file: Spool, created_at: str,
    recorder: Recorder | None,
) -> web.StreamResponse:  # fmt: skip
    settings = request.app[SETTINGS]
    try:
        parser = await bulk_store.stage_csv(conn, file.chunks(), scope.site is not None, settings.bulk_max_bytes)
        outcome = await bulk_store.apply(
            conn, scope, parser.valid_rows, {"rows": parser.data_rows, "bytes": parser.bytes_read}
        )
        return await stream_summary(request, conn, scope, outcome, created_at, recorder)
    finally:
        try:
            await bulk_store.drop_staging(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pass  # a broken connection takes its temp table with it


async def stream_summary(
    request: web.Request, conn: asyncpg.Connection, scope: Scope, outcome: bulk_store.Outcome, created_at: str,
    recorder: Recorder | None = None,
) -> web.StreamResponse:  # fmt: skip
    """The seed's summary, written as it is read from the staging table (committed already)."""
    head = summary_head(outcome.added, outcome.failed, "SUCCESS", scope.full_name, created_at)
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await resp.prepare(request)

    client_gone = False

    async def write(data: bytes) -> None:
        nonlocal client_gone
        if recorder is not None:
            recorder.write(data)  # kept for an Idempotency-Key's retry
        if client_gone:
            return
        try:
            await resp.write(data)
        except ConnectionResetError:
            if recorder is None:
                raise
            # A client that timed out is the one that retries: finish the copy it will be given.
            client_gone = True

    try:
        await write(orjson.dumps(head)[:-1] + b',"failedParticipants":[')
        first = True
        async for rows in bulk_store.failed_rows(conn):
            await write((b"" if first else b",") + orjson.dumps(failed_entries(rows))[1:-1])
            first = False
        await write(b'],"participants":[')
        first = True
        async for rows in bulk_store.added_rows(conn):
            await write((b"" if first else b",") + orjson.dumps(added_entries(rows))[1:-1])
            first = False
        await write(b"]}")
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client left; the upload is committed all the same
    except Exception as exc:  # noqa: BLE001 - headers are sent: no error response is possible
        # Headers are gone (and the upload committed): all we can do is cut the body short.
        log.warning("bulk summary interrupted", extra={"error": type(exc).__name__})
        if recorder is not None:
            recorder.incomplete = True  # never replay half a summary
        if request.transport is not None:
            request.transport.close()
    return resp


# -- the asynchronous upload -------------------------------------------------------------------

# The async path parses only this much in the web process, to refuse a file without a header (or
# not a CSV at all) at once; the job parses the whole file.
SNIFF_BYTES = 64 * 1024


async def submit_bulk_job(
    request: web.Request, conn: asyncpg.Connection, scope: Scope, file: Spool, created_at: str,
    recorder: Recorder | None,
) -> web.StreamResponse:  # fmt: skip
    """Store the upload, then create and enqueue the job; answer like the extract."""
    settings = request.app[SETTINGS]
    storage = request.app[STORAGE]
    assert scope.study is not None and scope.user_id is not None
    job_uuid = uuid.uuid4()
    key = upload_object_key(job_uuid)
    sniffer = BulkCsvParser(scope.site is not None, settings.bulk_max_bytes)
    sniffer.feed(file.head(SNIFF_BYTES))  # file-level errors of the first bytes, at once
    if file.size <= SNIFF_BYTES:
        sniffer.close()  # the whole file went through: a blank one is refused now
    size = file.size
    if await job_store.quota_reached(conn, scope.user_id, settings.max_active_jobs_per_user):
        raise job_store.quota_error(settings.max_active_jobs_per_user)  # before storing a file for nothing
    try:
        async with storage.open_upload(key, content_type="text/csv") as upload:
            async for chunk in file.chunks():
                await upload.write(chunk)
    except StorageError:
        raise ApiError("serviceUnavailable", scope.params, headers={"Retry-After": "5"}) from None
    try:
        # One statement, its own transaction: the job, its audit row and the quota check.
        await job_store.create_job(
            conn,
            job_type=job_store.BULK_ADD_PARTICIPANTS,
            study_id=scope.study["id"],
            site_id=scope.site["id"] if scope.site else None,
            owner_id=scope.user_id,
            file_name=result_file_name(scope.study_oid, scope.site_oid, datetime.now(UTC)),
            params={"uploadKey": key, "uploadBytes": size, "createdAt": created_at},
            job_uuid=job_uuid,
            max_active=settings.max_active_jobs_per_user,
            audit=job_store.Submitted(scope.username, "bulk.submit", {"bytes": size}),
        )
    except Exception:
        # No job was committed, so nobody will ever read the upload: drop it (best effort).
        with contextlib.suppress(Exception):
            await storage.delete(key)
        raise
    await job_queue.enqueue_or_withdraw(
        conn, request.app[REDIS], settings, job_store.BULK_ADD_PARTICIPANTS, job_uuid, storage, key
    )
    return job_submitted(request, job_uuid, job_store.IN_QUEUE)
