"""Operators' webhook pages: the endpoints, a form to add one, and per endpoint rotate its secret,
disable or enable it. The admin API's use-cases (core/webhooks/admin.py), with their checks (the
address policy, the study) and audit rows.

A new secret is shown once, on the page that answers the form (as the admin API answers it once):
it is never stored where a later page could show it again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from service.core.errors import ApiError
from service.core.webhooks import admin
from service.core.webhooks.models import EVENT_TYPES, WebhookIn, WebhookList, WebhookPatch
from service.core.webhooks.store import list_endpoints
from service.web.console.render import explain, redirect, render
from service.web.console.sessions import ACCOUNT
from service.web.input import path_id
from service.web.replies import wire_data
from service.web.resources import CONNECTIONS, DB

NOTICES = {
    "disabled": "The endpoint is disabled: no deliveries until it is enabled again.",
    "enabled": "The endpoint is enabled: new events are delivered to it.",
}


async def _page(request: web.Request, status: int = 200, **extra: Any) -> web.Response:
    async with request.config_dict[DB].acquire() as conn:
        data = WebhookList(webhooks=await list_endpoints(conn))
    context = {
        "data": wire_data(data),
        "event_types": EVENT_TYPES,
        "notice": NOTICES.get(request.query.get("done", "")),
        "values": {},
        **extra,
    }
    return render(request, "ops_webhooks.html", context, status=status)


async def webhook_list(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values = {
        "url": str(form.get("url") or "").strip(),
        "description": str(form.get("description") or ""),
        "studyOid": str(form.get("studyOid") or "").strip(),
        "eventTypes": [str(v) for v in form.getall("eventTypes", [])],
    }
    body: dict[str, Any] = {
        "url": values["url"],
        "description": values["description"],
        "eventTypes": values["eventTypes"] or list(EVENT_TYPES),
        "studyOid": values["studyOid"] or None,
    }
    try:
        endpoint = WebhookIn.model_validate(body)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors(include_input=False)})
        error = f"{explain('invalidRequestBody')} ({', '.join(fields)})"
        return await _page(request, 400, error=error, values=values)
    try:
        created = await admin.create_webhook(
            request.config_dict[CONNECTIONS], request[ACCOUNT].actor, endpoint
        )
    except ApiError as err:
        if err.status not in (400, 404, 409):
            raise
        return await _page(request, err.status, error=explain(err.code), values=values)
    return await _page(request, 201, secret=created.secret, secret_for=created.id, secret_what="created")


async def rotate(request: web.Request) -> web.StreamResponse:
    endpoint_id = path_id(request, "id")
    rotated = await admin.rotate_secret(
        request.config_dict[CONNECTIONS], request[ACCOUNT].actor, endpoint_id, None
    )
    until = rotated.previousSecretsExpireAt.isoformat() if rotated.previousSecretsExpireAt else None
    return await _page(
        request, secret=rotated.secret, secret_for=endpoint_id, secret_what="rotated", secret_until=until
    )


async def set_enabled(request: web.Request) -> web.StreamResponse:
    endpoint_id = path_id(request, "id")
    enabled = request.match_info["switch"] == "enable"
    actor = request[ACCOUNT].actor
    await admin.patch_webhook(
        request.config_dict[CONNECTIONS], actor, endpoint_id, WebhookPatch(enabled=enabled)
    )
    raise redirect(request, "ops_webhooks", query="done=" + ("enabled" if enabled else "disabled"))
