"""The ``Idempotency-Key`` request header on the submits (add/update participant, extract submit,
bulk upload in both variants): the web half of ``core/idempotency.py``.

A handler makes its access checks first (a revoked user gets 403, never a replay), then hands its
work to ``once``, which claims the key, runs the work at most once, keeps the answer and replays
it to a retry with ``Idempotent-Replayed: true``. A streamed answer (the bulk summary) is recorded
as it is written: up to ``INLINE_MAX`` in the key's row, beyond that in object storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from typing import IO
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from service.core import idempotency
from service.core.errors import ApiError
from service.web.replies import error_response
from service.web.resources import SETTINGS, STORAGE

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
INLINE_MAX = 1024 * 1024
IDEMPOTENCY_PREFIX = "idempotency/"
NO_BODY = hashlib.sha256(b"").digest()  # the digest of a submit whose body is ignored


class Recorder:
    """A copy of a streamed answer's body, for the key's row (kept in a private temp file once it
    outgrows memory: it can hold a bulk summary of a million IDs)."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=INLINE_MAX)  # noqa: SIM115
        self.size = 0
        self.incomplete = False  # the answer was cut short: not one to replay
        # The participant the answer is about (a connect call's): erasing it forgets the answer.
        self.participant_id: int | None = None

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)


Work = Callable[[Recorder | None], Awaitable[web.StreamResponse]]


def _target(request: web.Request) -> str:
    """The path and query as the service understands them: ``%28`` and ``(`` are the same study,
    and the order of query parameters means nothing."""
    return request.path + "?" + urlencode(sorted(request.query.items()))


def requested_key(request: web.Request) -> str | None:
    key = request.headers.get(HEADER)
    return None if key is None else idempotency.check_key(key)


async def once(
    request: web.Request,
    conn: asyncpg.Connection,
    username: str,
    body_digest: bytes,
    work: Work,
    on_error: Callable[[ApiError], web.StreamResponse] = error_response,
) -> web.StreamResponse:
    """Run ``work`` unless this user's ``Idempotency-Key`` already has an answer; keep its answer."""
    key = requested_key(request)
    if key is None:
        return await work(None)
    settings = request.app[SETTINGS]
    print_ = idempotency.fingerprint(request.method, _target(request), body_digest)
    kept = await idempotency.claim(
        conn,
        username,
        key,
        print_,
        settings.idempotency_retention_seconds,
        settings.idempotency_lease_seconds,
    )
    if kept is not None:
        return await _replay(request, kept)
    recorder = Recorder()
    try:
        try:
            resp = await work(recorder)
        except ApiError as err:
            if err.status >= 500:
                raise
            resp = on_error(err)  # a 4xx is the answer to this request: a retry gets it again
        if not (idempotency.transient(resp.status) or recorder.incomplete):
            headers = {h: resp.headers[h] for h in idempotency.KEPT_HEADERS if h in resp.headers}
            body, body_key = await _body(request, resp, recorder)
            await idempotency.keep(
                conn, username, key, resp.status, headers, body, body_key, recorder.participant_id
            )
            return resp
    except BaseException:
        await _release(conn, username, key)
        raise
    finally:
        recorder.file.close()
    await _release(conn, username, key)  # not an answer to keep (5xx, 429, cut short): a retry runs the work
    return resp


async def _release(conn: asyncpg.Connection, username: str, key: str) -> None:
    # Best effort: a claim left behind (connection gone) is taken over when its lease ends.
    with contextlib.suppress(Exception):
        await asyncio.shield(idempotency.release(conn, username, key))


async def _body(
    request: web.Request, resp: web.StreamResponse, recorder: Recorder
) -> tuple[bytes | None, str | None]:
    if isinstance(resp, web.Response):
        body = resp.body
        return (bytes(body) if isinstance(body, bytes | bytearray) else b""), None
    recorder.file.seek(0)
    if recorder.size <= INLINE_MAX:
        return recorder.file.read(), None
    key = f"{IDEMPOTENCY_PREFIX}{uuid.uuid4()}.json"
    async with request.app[STORAGE].open_upload(key, content_type="application/json") as upload:
        while chunk := recorder.file.read(256 * 1024):
            await upload.write(chunk)
    return None, key


async def _replay(request: web.Request, kept: idempotency.Kept) -> web.StreamResponse:
    headers = {**kept.headers, REPLAYED: "true"}
    if kept.body_key is None:
        return web.Response(status=kept.status, body=kept.body or b"", headers=headers)
    resp = web.StreamResponse(status=kept.status, headers=headers)
    await resp.prepare(request)
    async for chunk in request.app[STORAGE].read_stream(kept.body_key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp
