"""The floor for HTTP benchmarks: an aiohttp app whose handler returns a small JSON object,
run exactly like the service (same event loop, one process, no access log)."""

from __future__ import annotations

import sys

from aiohttp import web


async def handler(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"subjectKey": "X", "status": "Available"})


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
