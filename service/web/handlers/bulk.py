"""Bulk participant upload from CSV: ``POST .../participants/bulk`` at study and site level.

The body streams through the CSV parser (core/bulk/parser.py) into a staging table by COPY, then
one transaction decides and inserts every row (core/bulk/staging.py), and the summary is streamed
back from the staging table. With ``async=y`` the file becomes a job (core/bulk/submit.py). Memory holds a chunk of the body and a batch of rows, never the file.

Every answer, failures included, has the seed's shape (``uploadCount``, ``failureCount``,
``message``, ``createdBy``, ``createdAt``, ``failedParticipants``, ``participants``); a
file-level failure carries its ``errorCode`` in ``message`` and the status of contract.md's table.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg
import orjson
from aiohttp import web

from service.core.bulk import staging
from service.core.bulk.spool import Spool, spool
from service.core.bulk.submit import submit_bulk_job
from service.core.bulk.summary import (
    BulkResult,
    added_entries,
    failed_entries,
    failure_body,
    oc4_timestamp,
    shown_params,
    summary_head,
)
from service.core.errors import ApiError
from service.core.roles import Scope, check_bulk_allowed, check_register_allowed, load_scope
from service.web.apidoc import PLAIN_JOB, Query, operation
from service.web.auth import authenticated_username
from service.web.idempotency import Recorder, once, requested_key
from service.web.input import FLAG_SCHEMA, accept_query, parse_register, query_flag
from service.web.replies import base_url, reply, submitted_reply
from service.web.resources import CONNECTIONS, DB, SETTINGS
from service.web.uploads import upload_body

log = logging.getLogger("participants.bulk")


@operation(
    "Bulk add participant IDs from a CSV file",
    "participants",
    # With async=y the answer is OC4's `job uuid: <uuid>` text, like an extract submit.
    ok={200: {"application/json": {"schema": BulkResult}, **PLAIN_JOB}},
    query=[
        Query("async", FLAG_SCHEMA, "y/n: run as a job"),
        Query("register", FLAG_SCHEMA, "y: register every added participant for Participate (default n)"),
    ],
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
        register = parse_register(request)
        check_register_allowed(scope, register)
        requested_key(request)  # a malformed Idempotency-Key is refused before the file is read
        # The file arrives with no connection held (spool.py): a trickling client holds a temp file.
        body = await upload_body(request, settings.bulk_max_bytes)
        with await spool(body, settings.bulk_max_bytes) as file:
            async with pool.acquire() as conn:
                scope = await load_scope(
                    conn, username, study_oid, site_oid
                )  # the right may have ended meanwhile
                check_bulk_allowed(scope)
                check_register_allowed(scope, register)
                work = _submit_job if run_async else add_from_csv
                return await once(
                    request, conn, username, file.digest,
                    lambda recorder: work(request, conn, scope, file, created_at, register, recorder),
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
    params = shown_params(err.code, err.params)
    return reply(
        BulkResult.model_validate(failure_body(err.code, full_name, created_at, params)), err.status, headers
    )


# -- the synchronous upload --------------------------------------------------------------------


async def add_from_csv(
    request: web.Request, conn: asyncpg.Connection, scope: Scope, file: Spool, created_at: str, register: bool,
    recorder: Recorder | None,
) -> web.StreamResponse:  # fmt: skip
    settings = request.app[SETTINGS]
    try:
        parser = await staging.stage_csv(conn, file.chunks(), scope, settings.bulk_max_bytes, register)
        outcome = await staging.apply(
            conn, scope, parser.valid_rows, {"rows": parser.data_rows, "bytes": parser.bytes_read},
            register=register,
        )  # fmt: skip
        return await stream_summary(request, conn, scope, outcome, created_at, recorder)
    finally:
        await staging.drop_staging(conn)


async def stream_summary(
    request: web.Request, conn: asyncpg.Connection, scope: Scope, outcome: staging.Outcome, created_at: str,
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
        async for rows in staging.failed_rows(conn):
            await write((b"" if first else b",") + orjson.dumps(failed_entries(rows))[1:-1])
            first = False
        await write(b'],"participants":[')
        first = True
        async for rows in staging.added_rows(conn):
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


async def _submit_job(
    request: web.Request, conn: asyncpg.Connection, scope: Scope, file: Spool, created_at: str, register: bool,
    recorder: Recorder | None,
) -> web.StreamResponse:  # fmt: skip
    """``async=y``: the upload becomes a job; answered like an extract submit."""
    submitted = await submit_bulk_job(
        request.app[CONNECTIONS], conn, scope, file, created_at, base_url(request), register=register
    )
    return submitted_reply(request, submitted)
