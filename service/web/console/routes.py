"""The console's routes, relative to the console app's mount point (``{prefix}/console``), each with
its name (templates and redirects build links from names: ``render.console_url``) and who may use
it (``guard.Access``); and its static assets, served from the package, never from a CDN."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

from service.web.console import dashboard, login, oidc_login, operator, operator_webhooks, participant, site
from service.web.console.guard import ACCESS, OPERATOR, OWN_CSRF, PUBLIC, SIGNED_IN, Access
from service.web.console.render import ROUTE_NAME_PREFIX, STATIC

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ASSETS = {
    "console.css": "text/css",
    "console.js": "text/javascript",
    "times.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
SITE = "/studies/{studyOID}/sites/{siteOID}"
DELIVERY = "/ops/webhooks/deliveries/{deliveryId}"
PARTICIPANT = SITE + "/participants/{subjectKey}"


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    headers = {"Content-Type": ASSETS[name], "Cache-Control": "public, max-age=3600"}
    return web.FileResponse(STATIC / name, headers=headers)


class Route(NamedTuple):
    method: str
    path: str
    handler: Handler
    name: str  # one name per path: the GET and the POST of one path share it
    access: Access = SIGNED_IN


ROUTES = (
    Route("GET", "/static/{name}", asset, "asset", PUBLIC),
    Route("GET", "/login", login.login_page, "login", PUBLIC),
    Route("POST", "/login", login.login_submit, "login", PUBLIC),
    Route("GET", "/login/oidc", oidc_login.start, "oidc_login", PUBLIC),
    Route("GET", "/login/oidc/callback", oidc_login.callback, "oidc_callback", PUBLIC),
    Route("POST", "/logout", login.logout, "logout", PUBLIC),  # works without a session too
    Route("GET", "", site.home, "root"),  # /console without the slash
    Route("GET", "/", site.home, "home"),
    Route("POST", "/sessions/revoke", site.sign_out_everywhere, "sign_out_everywhere"),
    Route("GET", SITE, site.site_page, "site"),
    Route("GET", SITE + "/jobs", site.jobs_fragment, "site_jobs"),
    Route("POST", SITE + "/participants", site.save_participant_form, "site_participants"),
    Route("POST", SITE + "/extract", site.extract, "site_extract"),
    Route("POST", SITE + "/bulk", site.bulk_upload, "site_bulk", OWN_CSRF),  # the token is a multipart part
    Route("GET", PARTICIPANT, participant.participant_page, "participant"),
    Route("POST", PARTICIPANT + "/reveal", participant.reveal_code, "participant_reveal"),
    Route("POST", PARTICIPANT + "/reset", participant.reset_code, "participant_reset"),
    Route("POST", PARTICIPANT + "/register", participant.register, "participant_register"),
    Route("POST", PARTICIPANT + "/invite", participant.invite, "participant_invite"),
    Route("POST", PARTICIPANT + "/contact", participant.save_contact, "participant_contact"),
    Route("POST", PARTICIPANT + "/remove", participant.remove, "participant_remove"),
    Route("POST", PARTICIPANT + "/restore", participant.restore, "participant_restore"),
    Route("POST", PARTICIPANT + "/erase", participant.erase, "participant_erase"),
    Route("GET", "/jobs/{jobUuid}", site.job_page, "job"),
    Route("GET", "/jobs/{jobUuid}/download", site.download, "job_download"),
    Route("POST", "/jobs/{jobUuid}/delete", site.delete, "job_delete"),
    Route("GET", "/ops", operator.queue, "ops_queue", OPERATOR),
    Route("GET", "/ops/jobs", operator.job_list, "ops_jobs", OPERATOR),
    Route("GET", "/ops/jobs/{jobUuid}", operator.job_detail, "ops_job", OPERATOR),
    Route("POST", "/ops/jobs/{jobUuid}/retry", operator.job_retry, "ops_job_retry", OPERATOR),
    Route("POST", "/ops/jobs/{jobUuid}/cancel", operator.job_cancel, "ops_job_cancel", OPERATOR),
    Route("GET", "/ops/dashboard", dashboard.dashboard, "ops_dashboard", OPERATOR),
    Route("GET", "/ops/webhooks", operator_webhooks.webhook_list, "ops_webhooks", OPERATOR),
    Route("POST", "/ops/webhooks", operator_webhooks.create, "ops_webhooks", OPERATOR),
    Route("POST", "/ops/webhooks/{id}/rotate", operator_webhooks.rotate, "ops_webhook_rotate", OPERATOR),
    Route(
        "POST",
        "/ops/webhooks/{id}/{switch:enable|disable}",
        operator_webhooks.set_enabled,
        "ops_webhook_switch",
        OPERATOR,
    ),
    Route("GET", "/ops/webhooks/{id}/deliveries", operator.delivery_list, "ops_deliveries", OPERATOR),
    Route("POST", DELIVERY + "/redeliver", operator.redeliver_delivery, "ops_redeliver", OPERATOR),
    Route("GET", "/ops/audit", operator.audit_log, "ops_audit", OPERATOR),
)


def add_routes(console: web.Application) -> None:
    """Every route of ``ROUTES`` on the console app, and the table the session middleware reads."""
    access: dict[str, Access] = {}
    for route in ROUTES:
        name = ROUTE_NAME_PREFIX + route.name
        console.router.add_route(route.method, route.path, route.handler, name=name)
        # Per name (one path), not per method: a path whose GET and POST differed needs two names.
        if access.setdefault(name, route.access) != route.access:
            raise ValueError(f"{name}: one Access per route name")
    console[ACCESS] = access
