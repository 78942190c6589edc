"""The service's own face: liveness, readiness, Prometheus metrics, the OpenAPI document and its
reference page. All at the root (not under the OC4 prefix) and without authentication: they carry
no personal data. Put ``/metrics`` and ``/docs`` behind the network's edge if they must not be public.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .db import pending_migrations
from .errors import ApiError, json_response
from .metrics import METRICS
from .openapi import TITLE, build_openapi
from .resources import DB, REDIS, SETTINGS, STORAGE
from .storage import StorageNotFound

STATIC = Path(__file__).resolve().parent / "static"
REDOC = STATIC / "redoc.standalone.js"
CHECK_TIMEOUT_SECONDS = 3.0
READINESS_PROBE_KEY = "readyz/probe-that-never-exists"

DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE}</title>
</head>
<body>
<redoc spec-url="openapi.json" hide-download-button="false"></redoc>
<script src="docs/redoc.standalone.js"></script>
</body>
</html>
"""


async def healthz(request: web.Request) -> web.Response:
    """The process answers: nothing else is checked (a liveness probe must not restart us for Postgres)."""
    return json_response({"status": "ok"})


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        result = await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return name, "timeout"
    except Exception as exc:  # readiness reports every failure as "not ready", never as a 500
        return name, f"error: {type(exc).__name__}"
    return name, result or "ok"


async def _postgres(app: web.Application) -> str | None:
    async with app[DB].acquire() as conn:
        await conn.fetchval("SELECT 1")
        pending = await pending_migrations(conn)
    return f"migrations pending: {', '.join(pending)}" if pending else None


async def _redis(app: web.Application) -> None:
    await app[REDIS].ping()


async def _storage(app: web.Application) -> None:
    try:
        await app[STORAGE].head(READINESS_PROBE_KEY)
    except StorageNotFound:
        pass  # storage answered: the probe key is never there


async def readyz(request: web.Request) -> web.Response:
    """Postgres reachable with every migration applied, Redis and storage reachable."""
    app = request.app
    results = await asyncio.gather(
        _check("postgres", _postgres(app)), _check("redis", _redis(app)), _check("storage", _storage(app))
    )
    checks = dict(results)
    if any(v != "ok" for v in checks.values()):
        raise ApiError("serviceUnavailable", {"checks": checks}, headers={"Retry-After": "5"})
    return json_response({"status": "ready", "checks": checks})


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    m = app[METRICS]
    await m.jobs.refresh(app[DB], app[REDIS], app[SETTINGS])
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(build_openapi(request.app))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


async def docs_asset(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        REDOC, headers={"Content-Type": "text/javascript", "Cache-Control": "public, max-age=86400"}
    )


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    """At the root whatever the OC4 prefix: probes and scrapers look there."""
    router.add_get("/healthz", healthz, name="healthz")
    router.add_get("/readyz", readyz, name="readyz")
    router.add_get("/metrics", metrics, name="metrics")
    router.add_get("/openapi.json", openapi_json, name="openapi")
    router.add_get("/docs", docs, name="docs")
    router.add_get("/docs/redoc.standalone.js", docs_asset, name="docs_asset")
