"""The admin API of webhook endpoints and their deliveries (``/admin/api/webhooks``, admins only).

The jobs, audit and queue endpoints of the admin API are in ``operations.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from aiohttp import web

from service.core import audit
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.webhooks import models as wm
from service.core.webhooks import store as ws
from service.core.webhooks.outbox import enqueue_delivery
from service.core.webhooks.ssrf import AddressPolicy, BlockedAddress, check_url
from service.web.apidoc import NO_CONTENT, SMALL_PAGE, operation
from service.web.handlers import directory as admin
from service.web.input import page_params, read_json_model
from service.web.replies import model_response
from service.web.resources import DB, REDIS, SETTINGS

log = logging.getLogger("participants.webhooks")

MAX_ID = 2**63 - 1


def _int_param(request: web.Request, name: str, code: str = "webhookNotFound") -> int:
    raw = request.match_info[name]
    if len(raw) > 19 or not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
        raise ApiError(code, {name: raw[:40]})
    return int(raw)


async def _check_target(request: web.Request, url: str) -> None:
    """A URL we would refuse to call is refused now, with the reason (not later, silently)."""
    s = request.app[SETTINGS]
    try:
        await asyncio.wait_for(
            check_url(url, AddressPolicy(s.webhook_allow_private, s.webhook_allowed_networks)), 5.0
        )
    except TimeoutError:
        return  # a slow resolver: every delivery checks again
    except BlockedAddress as exc:
        if exc.reason == "host does not resolve":
            return  # may resolve later (new DNS record); every delivery checks again
        raise ApiError("webhookUrlNotAllowed", {"fields": ["url"], "reason": exc.reason}) from None


@operation(
    "Register a webhook endpoint (answers the secret, once)",
    "webhooks",
    body=wm.WebhookIn,
    ok={201: wm.WebhookCreated},
)
async def create_webhook(request: web.Request) -> web.Response:
    actor = await admin.require_admin(request)
    body = await read_json_model(request, wm.WebhookIn)
    await _check_target(request, body.url)
    async with request.app[DB].acquire() as conn, conn.transaction():
        created = await ws.create_endpoint(conn, body)
        await _audit(conn, actor, "admin.webhook.create", created.id, audit.field_names(body))
    log.info("webhook endpoint created", extra={"endpoint_id": created.id})
    return model_response(created, 201)


@operation("List webhook endpoints", "webhooks", ok={200: wm.WebhookList})
async def list_webhooks(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    async with request.app[DB].acquire() as conn:
        return model_response(wm.WebhookList(webhooks=await ws.list_endpoints(conn)))


@operation("One webhook endpoint", "webhooks", ok={200: wm.WebhookOut})
async def get_webhook(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    async with request.app[DB].acquire() as conn:
        return model_response(ws.endpoint_view(await ws.get_endpoint(conn, endpoint_id)))


@operation("Change a webhook endpoint", "webhooks", body=wm.WebhookPatch, ok={200: wm.WebhookOut})
async def patch_webhook(request: web.Request) -> web.Response:
    actor = await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    body = await read_json_model(request, wm.WebhookPatch)
    if body.url is not None:
        await _check_target(request, body.url)
    async with request.app[DB].acquire() as conn, conn.transaction():
        patched = await ws.patch_endpoint(conn, endpoint_id, body)
        await _audit(conn, actor, "admin.webhook.update", endpoint_id, audit.field_names(body))
    return model_response(patched)


@operation("Delete a webhook endpoint", "webhooks", ok={204: NO_CONTENT})
async def delete_webhook(request: web.Request) -> web.Response:
    actor = await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    async with request.app[DB].acquire() as conn, conn.transaction():
        await ws.delete_endpoint(conn, endpoint_id)
        await _audit(conn, actor, "admin.webhook.delete", endpoint_id)
    return web.Response(status=204)


@operation(
    "Rotate the signing secret (old ones sign alongside for the overlap)",
    "webhooks",
    body=wm.RotateSecretIn,
    ok={200: wm.SecretRotated},
)
async def rotate_secret(request: web.Request) -> web.Response:
    actor = await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    body = await read_json_model(request, wm.RotateSecretIn)
    overlap = body.overlapSeconds
    if overlap is None:
        overlap = request.app[SETTINGS].webhook_default_overlap_seconds
    async with request.app[DB].acquire() as conn, conn.transaction():
        rotated = await ws.rotate_secret(conn, endpoint_id, overlap)
        await _audit(conn, actor, "admin.webhook.rotateSecret", endpoint_id, overlapSeconds=overlap)
    log.info("webhook secret rotated", extra={"endpoint_id": endpoint_id, "overlap_seconds": overlap})
    return model_response(rotated)


@operation(
    "An endpoint's deliveries and every attempt", "webhooks", ok={200: wm.DeliveryList}, query=SMALL_PAGE
)
async def list_deliveries(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    page, size = page_params(request, default_size=50, max_size=500)
    async with request.app[DB].acquire() as conn:
        return model_response(await ws.list_deliveries(conn, endpoint_id, page, size))


@operation("Queue a delivery again (same webhook-id)", "webhooks", ok={202: wm.DeliveryOut})
async def redeliver(request: web.Request) -> web.Response:
    actor = await admin.require_admin(request)
    message_id = _int_param(request, "deliveryId")
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn, conn.transaction():
        row = await ws.redeliver(conn, message_id, settings.webhook_retry_hours)
        delivery = ws.message_view(row, [])
        await audit.record_by(conn, actor, "admin.webhook.redeliver", {"deliveryId": message_id})
    # The row is the source of truth (the sweeper would find it); queueing now just saves the wait.
    await enqueue_delivery(request.app[REDIS], settings, message_id, row["attempts"])
    return model_response(delivery, 202)


async def _audit(
    conn: asyncpg.Connection,
    actor: Actor,
    action: str,
    endpoint_id: int,
    fields: list[str] | None = None,
    **more: Any,
) -> None:
    """An admin's change to an endpoint: its id and the names of the fields set, never the URL (it
    may carry a receiver's token) or a secret."""
    details: dict[str, Any] = {"endpointId": endpoint_id, **more}
    if fields is not None:
        details["fields"] = fields
    await audit.record_by(conn, actor, action, details)
