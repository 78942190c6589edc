"""One middleware times every request once and reports it twice: the access-log line (web/logs.py)
and the Prometheus request counter and latency histogram (web/metrics.py), both with the status the
client actually received.

It runs outermost, before the error middleware: that one turns ApiErrors and HTTPExceptions >= 400
into JSON responses, but re-raises redirects (< 400), so an HTTPException reaching here is counted
with its own status (a console redirect is a 303, not a failure). Anything else that escapes is
a 500, or a connection the client dropped (cancellation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter

from aiohttp import web

from service.web.logs import access_log, assign_request_id, route_template
from service.web.metrics import METRICS


@web.middleware
async def timing_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
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
        metrics = request.config_dict.get(METRICS)
        if metrics is not None:  # an app built without a registry still logs
            metrics.count_request(request.method, route, status, seconds)
