"""The HTTP server under the app: aiohttp's own parse errors answered and logged the service's way.

A request aiohttp's HTTP parser refuses (a NUL or other control byte in a header, a request line or
header past the limits, too many headers, a malformed request line, broken chunked encoding) never
reaches the app, so no middleware sees it. aiohttp then answers a plain-text body quoting the bad
line and logs the error with a traceback on ``aiohttp.server``; both carry the first bytes of the
offending line, which may be a bearer token or a query string's values.

``ApiRunner`` (an ``AppRunner``) builds a server whose connections are ``ApiRequestHandler``:
``handle_error``, which aiohttp calls for every such failure (``web_protocol.RequestHandler``,
aiohttp 3.14: ``data_received`` turns a parser exception into an ``_ErrInfo`` message and ``start``
answers it through ``handle_error``), answers the usual ``{"message": "errorCode.X", "params"}``
body and logs one line naming the status and the exception's class, never its message.

Every way the service serves goes through ``service.cli._serve`` (``serve``, each process of
``serve --processes N``, ``dev``), which uses ``ApiRunner``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo
from aiohttp.web_request import BaseRequest

from service.core.errors import ApiError
from service.web.replies import error_response

log = logging.getLogger("participants.http")

# The parser's limits, set explicitly. aiohttp reports both a request line and a header line that
# is too long as the same ``LineTooLong``, with the limit it hit as its second argument: the two
# limits differ so that this argument tells a 414 (the request line, i.e. the URL) from a 431.
MAX_REQUEST_LINE = 8190  # aiohttp's default
MAX_FIELD_SIZE = 8192  # one header line (name and value)
MAX_HEADERS = 128  # aiohttp's default
# The message aiohttp's parsers (C and Python alike) give to "more than max_headers headers".
TOO_MANY_HEADERS = "Too many headers received"


def parse_error(exc: HttpProcessingError, max_line_size: int) -> ApiError:
    """The API's error for a request aiohttp's parser refused. Params name limits, never input."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == max_line_size:
            return ApiError("urlTooLong", {"maxBytes": limit})
        return ApiError("headersTooLarge", {"maxBytes": limit} if isinstance(limit, int) else {})
    if exc.message == TOO_MANY_HEADERS:
        return ApiError("headersTooLarge", {"maxHeaders": MAX_HEADERS})
    return ApiError("invalidRequest")


class ApiRequestHandler(RequestHandler):
    """aiohttp's connection handler, with the service's error answers and log lines."""

    __slots__ = ("_body",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._body: StreamReader | None = None  # the body the parser is filling, if any

    def data_received(self, data: bytes) -> None:
        """aiohttp's, plus: a parse error inside a body that arrives after its request's head (bad
        chunk framing) fails that body's reader. aiohttp's C parser only queues the error as a
        message of its own, answered after the request, whose handler meanwhile waits for the rest
        of its body until the client gives up (the pure-Python parser fails the reader itself)."""
        queued = len(self._messages)
        super().data_received(data)
        for i in range(queued, len(self._messages)):
            message, payload = self._messages[i]
            if not isinstance(message, _ErrInfo):
                self._body = payload
                continue
            body, self._body = self._body, None
            if body is None or body.is_eof():
                continue  # the error is in a request's head: handle_error answers it
            # The reader fails with a message of ours (its handler answers: the error middleware's
            # 400 invalidRequestBody, the bulk upload's own); the exception first, so a read
            # waiting for data wakes with it, then the end, so aiohttp does not drain the body
            # after the answer. One answer for the request, not a second for the queued error,
            # and the connection closes: where a next request would begin is unknown.
            body.set_exception(RequestPayloadError("malformed body framing"))
            body.feed_eof()
            del self._messages[i]
            self._request_count -= 1
            self.close()
            break

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp logs, with a traceback, an exception that escapes its draining of a body a
        handler left unread ("Unhandled exception"); a payload error's message may quote the body."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, (RequestPayloadError, HttpProcessingError)):
            log.info("request body refused while draining it", extra={"error": type(exc).__name__})
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # ``message`` is aiohttp's text for the client, quoting the request: never used.
        if isinstance(exc, HttpProcessingError):
            err = parse_error(exc, self.max_line_size)
            # Non-HTTP bytes (TLS, scanners) as a connection's first request are noise, not news:
            # aiohttp logs those at debug, and so do we.
            first_garbage = self._request_count == 1 and isinstance(exc, BadHttpMethod)
            log.log(
                logging.DEBUG if first_garbage else logging.INFO,
                "request refused by the HTTP parser",
                extra={"status": err.status, "error": type(exc).__name__},
            )
        else:
            # An exception that escaped every middleware (500), or a handler timeout (504). The
            # error middleware catches exceptions, so this is a bug of ours: the traceback helps,
            # as it does in the middleware's own log line.
            code = "internalError" if status == 500 else "serviceUnavailable"
            err = ApiError(code, status=status if status >= 500 else 500)
            log.error("request failed outside the middleware", extra={"status": err.status}, exc_info=exc)
        if request.writer.output_size > 0:
            # aiohttp's own rule: once bytes of a response went out, another one cannot follow.
            raise ConnectionError("Response is sent already, cannot send another response")
        resp = error_response(err)
        resp.force_close()  # the stream's state is unknown after a parse error: close, as aiohttp does
        return resp


class _ApiServer(web.Server):
    """aiohttp's ``Server`` (the protocol factory a site listens with), making ``ApiRequestHandler``s."""

    def __call__(self) -> RequestHandler:
        return ApiRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``AppRunner`` serving through ``ApiRequestHandler``, with the parser limits set here."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE)
        kwargs.setdefault("max_field_size", MAX_FIELD_SIZE)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        # AppRunner's own server (it also starts the app), rebuilt with the same arguments as ours.
        server = await super()._make_server()
        return _ApiServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
