"""The console as an aiohttp sub-app, mounted by the API's app at ``{prefix}/console``.

The sub-app owns its routes, its middlewares (service/web/console/guard.py: sessions, CSRF, the
admin flag, HTML error pages), its Jinja environment and its session store; the resources it uses
(DB, REDIS, SETTINGS, STORAGE, CONNECTIONS, OIDC, ...) stay on the parent, so console code reads
them through ``request.config_dict`` (inside a sub-app ``request.app`` is the sub-app).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from service.core.deployment_key import deployment_key
from service.web.console.guard import SESSIONS, html_error_middleware, session_middleware
from service.web.console.render import JINJA, add_security_headers, build_environment
from service.web.console.routes import add_routes
from service.web.console.sessions import SessionStore
from service.web.resources import REDIS, SETTINGS


def create_console_app(parent: web.Application) -> web.Application:
    """The console app for ``parent``, to mount with ``parent.add_subapp(prefix + "/console", ...)``.
    Built whole before mounting: mounting freezes its routes, middlewares and signals."""
    # The error middleware outermost, so a refusal of the session middleware is a page too.
    console = web.Application(middlewares=[html_error_middleware, session_middleware])
    add_routes(console)
    console[JINJA] = build_environment(console.router)
    console.on_response_prepare.append(add_security_headers)

    async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
        # aiohttp starts a parent's cleanup_ctx before its sub-apps' (the parent's on_startup runs
        # its own cleanup_ctx first, the sub-apps' startup after), so the Redis pool exists here.
        # Nothing to close: the pool is the parent's, and the parent closes it.
        s = parent[SETTINGS]
        app[SESSIONS] = SessionStore(parent[REDIS], s.console_idle_seconds, s.console_max_seconds)
        await deployment_key(parent[REDIS])  # made (once per deployment) or read now, not per visitor
        yield

    console.cleanup_ctx.append(sessions_ctx)
    return console
