"""Structured logs: one JSON object a line, and one line per request.

The request line carries method, route template (not the raw path), status, milliseconds and the
request id; never a body, a query string or a header value, which is where personal data travels.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
access_log = logging.getLogger("participants.access")

def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _valid_request_id(value: str | None) -> bool:
    return bool(value) and len(value) <= 128 and value.isascii() and value.isprintable()  # type: ignore[union-attr]


@web.middleware
async def request_log_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID")
    request_id = incoming if _valid_request_id(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "route": route_template(request),
                "status": status,
                "ms": round((time.perf_counter() - start) * 1000, 2),
                "request_id": request_id,
            },
        )


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also reaches streamed responses, whose headers go out before the handler ends."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-ID"] = request_id
