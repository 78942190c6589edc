"""One middleware times every request once and reports it twice: the access-log line (web/logs.py)
and the Prometheus request counter and latency histogram (web/metrics.py), both with the status the
client actually received.

It runs outermost, before the error middleware: that one turns ApiErrors and HTTPExceptions >= 400
into JSON responses, but re-raises redirects (< 400), so an HTTPException reaching here is counted
with its own status (a console redirect is a 303, not a failure). Anything else that escapes is
a 500, or a connection the client dropped (cancellation).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Middleware

from service.web.logs import access_log, assign_request_id, route_template
from service.web.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def timing_middleware(metrics: Metrics) -> Middleware:
    """The middleware for an app whose request metrics go to ``metrics`` (bound once, not looked up
    per request)."""

    @web.middleware
    async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = assign_request_id(request)
        start = perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            # Until the handler returned: a streamed body may still be going out.
            seconds = perf_counter() - start
            route = route_template(request)
            if access_log.isEnabledFor(logging.INFO):  # the extras are built only to be written
                access_log.info(
                    "request",
                    extra={
                        "method": request.method,
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 2),
                        "request_id": request_id,
                    },
                )
            metrics.count_request(request.method, route, status, seconds)

    return timed
