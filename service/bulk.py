"""Bulk participant upload from CSV: ``POST .../participants/bulk`` at study and site level.

The body streams through the CSV parser (``bulk_csv``) into a staging table by COPY, then one
transaction decides and inserts every row (``bulk_store``), and the summary is streamed back from
the staging table. Memory holds a chunk of the body and a batch of rows, never the file.

Every answer, failures included, has the seed's shape (``uploadCount``, ``failureCount``,
``message``, ``createdBy``, ``createdAt``, ``failedParticipants``, ``participants``); a
file-level failure carries its ``errorCode`` in ``message`` and the status of contract.md's table.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.multipart import BodyPartReader

from . import audit, bulk_store, job_store
from .auth import authenticated_username
from .bulk_csv import BulkCsvParser
from .errors import ApiError
from .extracts import base_url
from .http_input import query_flag
from .resources import DB, REDIS, SETTINGS, STORAGE
from .roles import Action, Scope, authorize, load_scope
from .storage import Storage, StorageError

log = logging.getLogger("participants.bulk")

STUDY_PATH = "/pages/auth/api/clinicaldata/studies/{studyOID}/participants/bulk"
SITE_PATH = "/pages/auth/api/clinicaldata/studies/{studyOID}/sites/{siteOID}/participants/bulk"

CHUNK = 256 * 1024  # bytes read from the body at a time
# A multipart body carries some bytes besides the file; allow for them in the early size check.
MULTIPART_OVERHEAD = 64 * 1024


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    """Register this module's routes under the OC4 path prefix."""
    router.add_post(prefix + STUDY_PATH, bulk_upload, name="bulk_upload_study")
    router.add_post(prefix + SITE_PATH, bulk_upload, name="bulk_upload_site")


def oc4_timestamp(moment: datetime) -> str:
    """OC4's ``d-M-yyyy HH:mm:ss`` (UTC)."""
    return f"{moment.day}-{moment.month}-{moment.year} {moment:%H:%M:%S}"


def summary_head(
    upload_count: int, failure_count: int, message: str, created_by: str, created_at: str
) -> dict[str, Any]:
    return {
        "uploadCount": upload_count,
        "failureCount": failure_count,
        "message": message,
        "createdBy": created_by,
        "createdAt": created_at,
    }


def failure_body(code: str, created_by: str, created_at: str) -> dict[str, Any]:
    """A file-level failure in the seed's shape."""
    return {
        **summary_head(0, 0, f"errorCode.{code}", created_by, created_at),
        "failedParticipants": [],
        "participants": [],
    }


def failed_entries(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {"subjectKey": r["subject_key"], "message": [f"errorCode.{e}" for e in r["errors"]]} for r in rows
    ]


def added_entries(rows: list[Any]) -> list[dict[str, Any]]:
    return [{"subjectKey": r["subject_key"], "status": "Available"} for r in rows]


def check_bulk_allowed(scope: Scope) -> None:
    """Bulk has the rights of the single add at that level, and needs manual participant IDs."""
    authorize(scope, Action.WRITE_AT_SITE if scope.site_oid is not None else Action.WRITE_AT_STUDY)
    assert scope.study is not None
    if scope.study["participant_id_method"] == "system_generated":
        raise ApiError("bulkUploadNotSupportSystemGeneratedSetting", scope.params)


async def bulk_upload(request: web.Request) -> web.StreamResponse:
    """POST .../participants/bulk: add the participant IDs of a CSV file, all or nothing."""
    created_at = oc4_timestamp(datetime.now(UTC))
    scope: Scope | None = None
    try:
        study_oid = request.match_info["studyOID"]
        site_oid = request.match_info.get("siteOID")
        username = await authenticated_username(request)
        async with request.app[DB].acquire() as conn:
            scope = await load_scope(conn, username, study_oid, site_oid)
            check_bulk_allowed(scope)
            run_async = query_flag(request, "async")
            body = await upload_body(request, request.app[SETTINGS].bulk_max_bytes)
            if run_async:
                return await submit_bulk_job(request, conn, scope, body, created_at)
            return await add_from_csv(request, conn, scope, body, created_at)
    except ApiError as err:
        headers = dict(err.headers)
        if err.status == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        full_name = scope.full_name if scope is not None else ""
        return web.Response(
            body=orjson.dumps(failure_body(err.code, full_name, created_at)),
            status=err.status,
            content_type="application/json",
            headers=headers,
        )


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
        return _part_chunks(part)
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
    except (ValueError, AssertionError, HttpProcessingError, RuntimeError):
        raise ApiError("notSupportedFileFormat") from None


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        try:
            chunk = await part.read_chunk(CHUNK)
            data = part.decode(chunk) if chunk else b""  # a Content-Transfer-Encoding, if any
        except (ValueError, HttpProcessingError, RuntimeError, RequestPayloadError):
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
    request: web.Request, conn: asyncpg.Connection, scope: Scope, body: AsyncIterator[bytes], created_at: str
) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    try:
        parser = await bulk_store.stage_csv(conn, body, scope.site is not None, settings.bulk_max_bytes)
        outcome = await bulk_store.apply(
            conn, scope, parser.valid_rows, {"rows": parser.data_rows, "bytes": parser.bytes_read}
        )
        return await stream_summary(request, conn, scope, outcome, created_at)
    finally:
        try:
            await bulk_store.drop_staging(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pass  # a broken connection takes its temp table with it


async def stream_summary(
    request: web.Request, conn: asyncpg.Connection, scope: Scope, outcome: bulk_store.Outcome, created_at: str
) -> web.StreamResponse:
    """The seed's summary, written as it is read from the staging table (committed already)."""
    head = summary_head(outcome.added, outcome.failed, "SUCCESS", scope.full_name, created_at)
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    try:
        await resp.write(orjson.dumps(head)[:-1] + b',"failedParticipants":[')
        first = True
        async for rows in bulk_store.failed_rows(conn):
            await resp.write((b"" if first else b",") + orjson.dumps(failed_entries(rows))[1:-1])
            first = False
        await resp.write(b'],"participants":[')
        first = True
        async for rows in bulk_store.added_rows(conn):
            await resp.write((b"" if first else b",") + orjson.dumps(added_entries(rows))[1:-1])
            first = False
        await resp.write(b"]}")
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client left; the upload is committed all the same
    except Exception as exc:  # noqa: BLE001 - headers are sent: no error response is possible
        # Headers are gone (and the upload committed): all we can do is cut the body short.
        log.warning("bulk summary interrupted", extra={"error": type(exc).__name__})
        if request.transport is not None:
            request.transport.close()
    return resp


# -- the asynchronous upload -------------------------------------------------------------------

BULK_FUNCTION = "bulk_add_participants_job"
# The async path parses only this much in the web process, to refuse a file without a header (or
# not a CSV at all) at once; the job parses the whole file.
SNIFF_BYTES = 64 * 1024


def upload_object_key(job_uuid: UUID) -> str:
    return f"bulk/{job_uuid}/upload.csv"


def result_object_key(job_uuid: UUID, attempt: int) -> str:
    """One object per attempt: a superseded attempt never overwrites the file of the one that won."""
    return f"bulk/{job_uuid}/result-{attempt}.csv"


def result_file_name(study_oid: str, site_oid: str | None, at: datetime) -> str:
    """Named like the extract file: ``{studyOID}[-{siteOID}]_Bulk Participant Upload_{yyyy-MM-dd-HHmmssSSS}Z.csv``."""
    at = at.astimezone(UTC)
    stamp = at.strftime("%Y-%m-%d-%H%M%S") + f"{at.microsecond // 1000:03d}"
    where = f"{study_oid}-{site_oid}" if site_oid else study_oid
    return f"{where}_Bulk Participant Upload_{stamp}Z.csv"


async def submit_bulk_job(
    request: web.Request, conn: asyncpg.Connection, scope: Scope, body: AsyncIterator[bytes], created_at: str
) -> web.StreamResponse:
    """Store the upload as it streams in, then create and enqueue the job; answer like the extract."""
    settings = request.app[SETTINGS]
    storage = request.app[STORAGE]
    assert scope.study is not None and scope.user_id is not None
    job_uuid = uuid.uuid4()
    key = upload_object_key(job_uuid)
    sniffer = BulkCsvParser(scope.site is not None, settings.bulk_max_bytes)
    size = 0
    try:
        async with storage.open_upload(key, content_type="text/csv") as upload:
            async for chunk in body:
                if size < SNIFF_BYTES and not sniffer.header_seen:
                    sniffer.feed(chunk)  # file-level errors of the first bytes, at once
                size += len(chunk)
                if size > settings.bulk_max_bytes:
                    raise ApiError("fileTooLarge")
                await upload.write(chunk)
            if sniffer.bytes_read == size:
                sniffer.close()  # the whole file went through: a blank one is refused now
    except StorageError:
        raise ApiError("serviceUnavailable", scope.params, headers={"Retry-After": "5"}) from None
    try:
        async with conn.transaction():
            await job_store.create_job(
                conn,
                job_type=job_store.BULK_ADD_PARTICIPANTS,
                study_id=scope.study["id"],
                site_id=scope.site["id"] if scope.site else None,
                owner_id=scope.user_id,
                file_name=result_file_name(scope.study_oid, scope.site_oid, datetime.now(UTC)),
                params={"uploadKey": key, "uploadBytes": size, "createdAt": created_at},
                job_uuid=job_uuid,
            )
            await audit.record(conn, scope, "bulk.submit", job_uuid=job_uuid, details={"bytes": size})
        await job_store.enqueue_job(request.app[REDIS], BULK_FUNCTION, job_uuid, settings.default_queue)
    except Exception:
        # The caller never learns this UUID: withdraw the job and its upload (best effort: if
        # Postgres is gone too, the sweeper runs the job later, which is harmless).
        await _withdraw(conn, storage, job_uuid, key)
        raise
    status_url, download_url = job_store.job_urls(base_url(request), job_uuid)
    headers = {"Location": status_url}
    if "application/json" in request.headers.get("Accept", ""):
        data = {
            "jobUuid": str(job_uuid),
            "status": job_store.IN_QUEUE,
            "statusUrl": status_url,
            "downloadUrl": download_url,
        }
        return web.Response(body=orjson.dumps(data), content_type="application/json", headers=headers)
    return web.Response(text=f"job uuid: {job_uuid}", content_type="text/plain", headers=headers)


async def _withdraw(conn: asyncpg.Connection, storage: Storage, job_uuid: UUID, key: str) -> None:
    try:
        await conn.execute("DELETE FROM jobs WHERE uuid = $1 AND status = 'IN_QUEUE'", job_uuid)
        await storage.delete(key)
    except Exception:  # noqa: BLE001 - best effort, see the caller
        log.warning("could not withdraw an unqueued bulk job", extra={"job_uuid": str(job_uuid)})
