"""The console's routes, its static assets (served from the package, never from a CDN) and the
session store it needs at startup."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from service.web.console import login, oidc_login, operator, site
from service.web.console.guard import SESSIONS
from service.web.console.render import SECURITY_HEADERS, STATIC
from service.web.console.sessions import SessionStore
from service.web.resources import REDIS, SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTE_NAME_PREFIX = "console.r"
ASSETS = {"console.css": "text/css", "console.js": "text/javascript"}


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    headers = {**SECURITY_HEADERS, "Content-Type": ASSETS[name], "Cache-Control": "public, max-age=3600"}
    return web.FileResponse(STATIC / name, headers=headers)


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    app[SESSIONS] = SessionStore(app[REDIS], s.console_idle_seconds, s.console_max_seconds)
    yield


def add_routes(app: web.Application, prefix: str) -> None:
    """Everything under ``{prefix}/console``; needs the Redis pool, so call after ``redis_ctx``."""
    app.cleanup_ctx.append(sessions_ctx)
    routes: list[tuple[str, str, Handler]] = []
    c = prefix + "/console"
    site_path = c + "/studies/{studyOID}/sites/{siteOID}"
    routes.append(("GET", c + "/static/{name}", asset))
    routes.append(("GET", c + "/login", login.login_page))
    routes.append(("POST", c + "/login", login.login_submit))
    routes.append(("GET", c + "/login/oidc", oidc_login.start))
    routes.append(("GET", c + "/login/oidc/callback", oidc_login.callback))
    routes.append(("POST", c + "/logout", login.logout))
    routes.append(("GET", c, site.home))
    routes.append(("GET", c + "/", site.home))
    routes.append(("GET", site_path, site.site_page))
    routes.append(("GET", site_path + "/jobs", site.jobs_fragment))
    routes.append(("POST", site_path + "/participants", site.save_participant_form))
    routes.append(("POST", site_path + "/extract", site.extract))
    routes.append(("POST", site_path + "/bulk", site.bulk_upload))
    routes.append(("GET", c + "/jobs/{jobUuid}", site.job_page))
    routes.append(("GET", c + "/jobs/{jobUuid}/download", site.download))
    routes.append(("POST", c + "/jobs/{jobUuid}/delete", site.delete))
    routes.append(("GET", c + "/ops", operator.queue))
    routes.append(("GET", c + "/ops/jobs", operator.job_list))
    routes.append(("GET", c + "/ops/jobs/{jobUuid}", operator.job_detail))
    routes.append(("POST", c + "/ops/jobs/{jobUuid}/retry", operator.job_retry))
    routes.append(("POST", c + "/ops/jobs/{jobUuid}/cancel", operator.job_cancel))
    routes.append(("GET", c + "/ops/webhooks", operator.webhook_list))
    routes.append(("GET", c + "/ops/webhooks/{id}/deliveries", operator.delivery_list))
    routes.append(("POST", c + "/ops/webhooks/deliveries/{deliveryId}/redeliver", operator.redeliver))
    routes.append(("GET", c + "/ops/audit", operator.audit_log))
    # Named "console.*": these are HTML pages, so the OpenAPI document of the API leaves them out.
    for i, (method, path, handler) in enumerate(routes):
        app.router.add_route(method, path, handler, name=f"{ROUTE_NAME_PREFIX}{i}")
