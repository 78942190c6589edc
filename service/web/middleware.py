"""The error middleware: every failure becomes ``{"message": "errorCode.X", "params": {...}}``.

No input may produce a 500 with a traceback: unexpected exceptions are logged (without request
bodies, which can hold personal data) and answered with a bare ``errorCode.internalError``; a
dependency that is down is 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from service.core.db import forget_read_only
from service.core.errors import UNAVAILABLE, ApiError
from service.core.protection.keyring import UnknownDataKey, Unreadable
from service.core.redis import forget_connections
from service.web.apidoc import declared
from service.web.input import NUL_IN_QUERY
from service.web.logs import route_template
from service.web.oidc import ProviderUnavailable
from service.web.replies import error_response
from service.web.resources import DB, REDIS

log = logging.getLogger("participants.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# What an HTTPException from aiohttp itself (routing, body size, media type) means, as an errorCode.
HTTP_CODES = {404: "notFound", 405: "methodNotAllowed", 413: "fileTooLarge", 415: "unsupportedMediaType"}


def as_api_error(request: web.Request, exc: Exception, logger: logging.Logger = log) -> ApiError:
    """What a failure means to the client, whichever face answers it (the API's JSON here, the
    console's HTML page in web/console/guard.py). An HTTPException below 400 (a redirect) is not a
    failure: callers let it through. Unexpected ones are logged with the route template only, never
    the path's values, the query or the body (personal data), on each face's own ``logger``."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestPayloadError | UnicodeDecodeError):
        # The body could not be read as sent: a Content-Encoding that does not decode, or a form
        # that is not the text it claims to be.
        return ApiError("invalidRequestBody")
    if isinstance(exc, web.HTTPException):
        code = HTTP_CODES.get(exc.status, "invalidRequestBody" if exc.status < 500 else "internalError")
        # A 405 names the methods the path takes (RFC 9110 requires Allow on it).
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return ApiError(code, status=exc.status, headers=headers)
    if isinstance(exc, (*UNAVAILABLE, ProviderUnavailable)):
        logger.warning("dependency unavailable: %s", type(exc).__name__)
        return ApiError("serviceUnavailable", headers={"Retry-After": "5"})
    # Edited or moved by SQL, or under a data key the database no longer holds (after one re-read of
    # the keys): the extract job reports both as unreadableData too. The messages name a column or
    # a key id, never a value.
    if isinstance(exc, Unreadable | UnknownDataKey):
        logger.error("unreadable personal data on %s %s: %s", request.method, route_template(request), exc)
        return ApiError("unreadableData")
    logger.error("unhandled error on %s %s", request.method, route_template(request), exc_info=exc)
    return ApiError("internalError")


async def forget_broken_connections(request: web.Request, exc: BaseException) -> None:
    """A dependency failed under this request: drop the connections that may lead back to a server
    that is no longer primary (Postgres) or master (Redis), so the next requests connect afresh."""
    await forget_read_only(request.config_dict[DB], exc)
    await forget_connections(request.config_dict[REDIS], exc)


async def _once_more_after_schema_change(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A migration that changes a table's columns while the service serves (0026 drops the plain
    personal columns) outdates the statements each connection prepared before it: the first one
    used outside a transaction is prepared again by asyncpg; one used inside a transaction fails
    it, and asyncpg then drops the cached statements of the whole pool. The transaction was rolled
    back (and an idempotency key released), so the request runs again, once, as if it came now."""
    try:
        return await handler(request)
    except asyncpg.InvalidCachedStatementError:
        log.info("a statement prepared before a schema change: the request runs again")
        return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await _once_more_after_schema_change(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(as_api_error(request, exc))
    except Exception as exc:
        await forget_broken_connections(request, exc)
        return error_response(as_api_error(request, exc))


@web.middleware
async def nul_guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Postgres cannot store or compare text with NUL in it, so no NUL reaches a query from a URL:
    in a path parameter it becomes U+FFFD (then names nothing, e.g. ``studyNotExist``); in the query
    string it is a 400, but only after the access checks (OC4's order: who and where before what).
    Authenticated handlers refuse it through ``accept_query`` once they know the caller may act
    there; a public route (nothing to check first) refuses it here."""
    # One look at the decoded path and query string; the parts only when a NUL is there at all.
    if "\x00" in request.path:
        for key, value in list(request.match_info.items()):
            if "\x00" in value:
                request.match_info[key] = value.replace("\x00", "\ufffd")
    if "\x00" in request.query_string and any("\x00" in k or "\x00" in v for k, v in request.query.items()):
        op = declared(request.match_info.handler)
        if op is None or op.public:
            raise ApiError("invalidParameter", {"parameter": "query"})
        request[NUL_IN_QUERY] = True
    return await handler(request)
