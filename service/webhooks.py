"""The admin API of webhook endpoints and their deliveries (``/admin/api/webhooks``, admins only).

The jobs, audit and queue endpoints of the admin API are in ``admin_ops.py``; both are registered
here because ``routes.py`` calls this module's ``add_routes``.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import BaseModel

from . import admin, admin_ops
from . import webhook_store as ws
from .errors import ApiError, json_response
from .http_input import page_params, read_json_model
from .resources import DB, REDIS, SETTINGS
from .ssrf import AddressPolicy, BlockedAddress, check_url

log = logging.getLogger("participants.webhooks")

ADMIN = "/admin/api"
MAX_ID = 2**63 - 1


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return json_response(model.model_dump(mode="json"), status=status)


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


async def create_webhook(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    body = await read_json_model(request, ws.WebhookIn)
    await _check_target(request, body.url)
    async with request.app[DB].acquire() as conn:
        created = await ws.create_endpoint(conn, body)
    log.info("webhook endpoint created", extra={"endpoint_id": created.id})
    return model_response(created, 201)


async def list_webhooks(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    async with request.app[DB].acquire() as conn:
        return model_response(ws.WebhookList(webhooks=await ws.list_endpoints(conn)))


async def get_webhook(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    async with request.app[DB].acquire() as conn:
        return model_response(ws.endpoint_view(await ws.get_endpoint(conn, endpoint_id)))


async def patch_webhook(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    body = await read_json_model(request, ws.WebhookPatch)
    if body.url is not None:
        await _check_target(request, body.url)
    async with request.app[DB].acquire() as conn:
        return model_response(await ws.patch_endpoint(conn, endpoint_id, body))


async def delete_webhook(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    async with request.app[DB].acquire() as conn:
        await ws.delete_endpoint(conn, endpoint_id)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    body = await read_json_model(request, ws.RotateSecretIn)
    overlap = body.overlapSeconds
    if overlap is None:
        overlap = request.app[SETTINGS].webhook_default_overlap_seconds
    async with request.app[DB].acquire() as conn:
        rotated = await ws.rotate_secret(conn, endpoint_id, overlap)
    log.info("webhook secret rotated", extra={"endpoint_id": endpoint_id, "overlap_seconds": overlap})
    return model_response(rotated)


async def list_deliveries(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    endpoint_id = _int_param(request, "id")
    page, size = page_params(request, default_size=50, max_size=500)
    async with request.app[DB].acquire() as conn:
        return model_response(await ws.list_deliveries(conn, endpoint_id, page, size))


async def redeliver(request: web.Request) -> web.Response:
    await admin.require_admin(request)
    message_id = _int_param(request, "deliveryId")
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        row = await ws.redeliver(conn, message_id, settings.webhook_retry_hours)
        delivery = ws.message_view(row, [])
    # The row is the source of truth (the sweeper would find it); queueing now just saves the wait.
    await request.app[REDIS].enqueue_job(
        "deliver_webhook", message_id, _job_id=ws.delivery_job_id(message_id, row["attempts"]),
        _queue_name=settings.default_queue,
    )  # fmt: skip
    return model_response(delivery, 202)


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    """Admin routes live outside the OC4 prefix, like the rest of ``/admin/api``."""
    router.add_post(ADMIN + "/webhooks", create_webhook)
    router.add_get(ADMIN + "/webhooks", list_webhooks)
    router.add_post(ADMIN + "/webhooks/deliveries/{deliveryId}/redeliver", redeliver)
    router.add_get(ADMIN + "/webhooks/{id}", get_webhook)
    router.add_patch(ADMIN + "/webhooks/{id}", patch_webhook)
    router.add_delete(ADMIN + "/webhooks/{id}", delete_webhook)
    router.add_post(ADMIN + "/webhooks/{id}/rotate-secret", rotate_secret)
    router.add_get(ADMIN + "/webhooks/{id}/deliveries", list_deliveries)
    admin_ops.add_routes(router, prefix)
