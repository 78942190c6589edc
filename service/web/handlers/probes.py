"""The service's own face: liveness, readiness, Prometheus metrics, the OpenAPI document and its
reference page. All at the root (not under the OC4 prefix) and without a user's token: they carry
no personal data. ``/metrics`` takes its own bearer token when ``PARTICIPANTS_METRICS_TOKEN`` is set;
otherwise put it and ``/docs`` behind the network's edge if they must not be public.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import BaseModel

from service.core.db import is_standby, pending_migrations, server_address
from service.core.errors import ApiError
from service.core.storage import StorageNotFound
from service.web.apidoc import operation
from service.web.metrics import METRICS
from service.web.openapi import OPENAPI_DOCUMENT, TITLE, build_openapi
from service.web.replies import reply
from service.web.resources import DB, REDIS, SETTINGS, STORAGE

STATIC = Path(__file__).resolve().parent.parent / "static"
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
<redoc spec-url="/openapi.json" hide-download-button="false"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
"""


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
    # The Postgres server this process's connections reach (host:port as the DSN names it): with a
    # multi-host DSN, the one that is primary now.
    postgresPrimary: str | None = None


def _service(summary: str, media: dict[str, Any] | type[BaseModel], *errors: int) -> Any:
    return operation(summary, "service", ok={200: media}, public=True, errors=errors)


@_service("The process is alive", Health)
async def healthz(request: web.Request) -> web.Response:
    """The process answers: nothing else is checked (a liveness probe must not restart us for Postgres)."""
    return reply(Health(status="ok"))


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        result = await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return name, "timeout"
    except Exception as exc:  # readiness reports every failure as "not ready", never as a 500
        return name, f"error: {type(exc).__name__}"
    return name, result or "ok"


async def _postgres(app: web.Application, found: dict[str, str]) -> str | None:
    async with app[DB].acquire() as conn:
        if await is_standby(conn):
            return f"read-only (a standby): {server_address(conn)}"
        found["primary"] = server_address(conn)
        pending = await pending_migrations(conn)
    return f"migrations pending: {', '.join(pending)}" if pending else None


async def _redis(app: web.Application) -> None:
    await app[REDIS].ping()


async def _storage(app: web.Application) -> None:
    with contextlib.suppress(StorageNotFound):  # storage answered: the probe key is never there
        await app[STORAGE].head(READINESS_PROBE_KEY)


@_service("Postgres, Redis and storage reachable, migrations applied", Readiness, 503)
async def readyz(request: web.Request) -> web.Response:
    """Postgres reachable with every migration applied, Redis and storage reachable."""
    app = request.app
    found: dict[str, str] = {}
    results = await asyncio.gather(
        _check("postgres", _postgres(app, found)),
        _check("redis", _redis(app)),
        _check("storage", _storage(app)),
    )
    checks = dict(results)
    primary = found.get("primary")
    if any(v != "ok" for v in checks.values()):
        params = {"checks": checks, "postgresPrimary": primary}
        raise ApiError("serviceUnavailable", params, headers={"Retry-After": "5"})
    return reply(Readiness(status="ready", checks=checks, postgresPrimary=primary))


def _scrape_allowed(request: web.Request) -> bool:
    token = request.app[SETTINGS].metrics_token
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@_service("Prometheus metrics (a bearer token when PARTICIPANTS_METRICS_TOKEN is set)",
          {"text/plain": {"schema": {"type": "string"}}}, 401)  # fmt: skip
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    if not _scrape_allowed(request):
        raise ApiError("unauthenticated", headers={"WWW-Authenticate": "Bearer"})
    m = app[METRICS]
    await m.jobs.ensure_fresh(app[DB], app[REDIS], app[SETTINGS])
    return web.Response(body=generate_latest(m.exposed()), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


@_service("This document", {"application/json": {"schema": {"type": "object"}}})
async def openapi_json(request: web.Request) -> web.Response:
    # The document depends on the routes alone, frozen once the app runs: built on the first request
    # (tens of milliseconds of CPU) and served from memory after, so callers cannot stall the loop.
    cache = request.app[OPENAPI_DOCUMENT]
    if "json" not in cache:
        cache["json"] = orjson.dumps(build_openapi(request.app))
    return web.Response(body=cache["json"], content_type="application/json")


@_service("API reference page", {"text/html": {"schema": {"type": "string"}}})
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


@_service("The reference page's script (vendored)", {"text/javascript": {"schema": {"type": "string"}}})
async def docs_asset(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        REDOC, headers={"Content-Type": "text/javascript", "Cache-Control": "public, max-age=86400"}
    )
