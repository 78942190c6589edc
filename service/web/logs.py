"""Structured logs: one JSON object a line, and one line per request.

The request line (written by web/timing.py's middleware) carries method, route template (not the
raw path), status, milliseconds and the request id; never a body, a query string or a header value,
which is where personal data travels.
"""

from __future__ import annotations

import logging
import secrets
from typing import TypeGuard

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
access_log = logging.getLogger("participants.access")


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _valid_request_id(value: str | None) -> TypeGuard[str]:
    return value is not None and 0 < len(value) <= 128 and value.isascii() and value.isprintable()


def assign_request_id(request: web.Request) -> str:
    """The caller's ``X-Request-ID`` when it is a sane one (so its logs and ours join), else a fresh
    id; kept on the request for the access log and ``echo_request_id``."""
    incoming = request.headers.get("X-Request-ID")
    request_id = incoming if _valid_request_id(incoming) else secrets.token_hex(16)
    request[REQUEST_ID] = request_id
    return request_id


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also reaches streamed responses, whose headers go out before the handler ends."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-ID"] = request_id
