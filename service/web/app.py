"""The aiohttp application factory."""

from __future__ import annotations

from aiohttp import web

from service.core.links import Links
from service.settings import Settings
from service.web.clients import proxies
from service.web.console.app import create_console_app
from service.web.logs import echo_request_id
from service.web.metrics import METRICS, Metrics
from service.web.middleware import error_middleware, nul_guard_middleware
from service.web.openapi import OPENAPI_DOCUMENT
from service.web.resources import LINKS, SETTINGS, TRUSTED_PROXIES, db_ctx, http_ctx, redis_ctx, storage_ctx
from service.web.routes import setup_routes
from service.web.timing import timing_middleware

JSON_BODY_LIMIT = 1024 * 1024  # single-participant and admin bodies; bulk uploads stream past this


def create_app(settings: Settings) -> web.Application:
    metrics = Metrics()  # a registry of its own: apps in one process never share counts
    app = web.Application(
        middlewares=[timing_middleware(metrics), error_middleware, nul_guard_middleware],
        client_max_size=JSON_BODY_LIMIT,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LINKS] = Links.told(metrics.count_link)
    app[TRUSTED_PROXIES] = proxies(settings.trusted_proxies, settings.forwarded_header)
    app[OPENAPI_DOCUMENT] = {}
    app.cleanup_ctx.extend([db_ctx, redis_ctx, http_ctx, storage_ctx])
    app.on_response_prepare.append(echo_request_id)
    setup_routes(app, settings.path_prefix)
    app.add_subapp(settings.path_prefix + "/console", create_console_app(app))
    return app
