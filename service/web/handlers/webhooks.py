"""The admin API of webhook endpoints and their deliveries (``/admin/api/webhooks``, admins only).

Parse, call core (core/webhooks/admin.py for changes, core/webhooks/store.py for reads), reply.
The jobs, audit and queue endpoints of the admin API are in ``admin_jobs.py``.
"""

from __future__ import annotations

from aiohttp import web

from service.core.webhooks import admin, store
from service.core.webhooks.models import (
    DeliveryList,
    DeliveryOut,
    RotateSecretIn,
    SecretRotated,
    WebhookCreated,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
)
from service.web.apidoc import NO_CONTENT, SMALL_PAGE, operation
from service.web.auth import require_admin
from service.web.input import page_params, path_id, read_json_model
from service.web.replies import reply
from service.web.resources import CONNECTIONS, DB


@operation(
    "Register a webhook endpoint (answers the secret, once)",
    "webhooks",
    body=WebhookIn,
    ok={201: WebhookCreated},
    errors=(409,),  # webhookAddressNotAllowed: the address policy refuses the URL's host
)
async def create_webhook(request: web.Request) -> web.Response:
    user = await require_admin(request)
    body = await read_json_model(request, WebhookIn)
    return reply(await admin.create_webhook(request.app[CONNECTIONS], user.actor, body), 201)


@operation("List webhook endpoints", "webhooks", ok={200: WebhookList})
async def list_webhooks(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return reply(WebhookList(webhooks=await store.list_endpoints(conn)))


@operation("One webhook endpoint", "webhooks", ok={200: WebhookOut})
async def get_webhook(request: web.Request) -> web.Response:
    await require_admin(request)
    endpoint_id = path_id(request, "id")
    async with request.app[DB].acquire() as conn:
        return reply(store.endpoint_view(await store.get_endpoint(conn, endpoint_id)))


@operation("Change a webhook endpoint", "webhooks", body=WebhookPatch, ok={200: WebhookOut}, errors=(409,))
async def patch_webhook(request: web.Request) -> web.Response:
    user = await require_admin(request)
    endpoint_id = path_id(request, "id")
    body = await read_json_model(request, WebhookPatch)
    return reply(await admin.patch_webhook(request.app[CONNECTIONS], user.actor, endpoint_id, body))


@operation("Delete a webhook endpoint", "webhooks", ok={204: NO_CONTENT})
async def delete_webhook(request: web.Request) -> web.Response:
    user = await require_admin(request)
    await admin.delete_webhook(request.app[CONNECTIONS], user.actor, path_id(request, "id"))
    return web.Response(status=204)


@operation(
    "Rotate the signing secret (old ones sign alongside for the overlap)",
    "webhooks",
    body=RotateSecretIn,
    ok={200: SecretRotated},
)
async def rotate_secret(request: web.Request) -> web.Response:
    user = await require_admin(request)
    endpoint_id = path_id(request, "id")
    body = await read_json_model(request, RotateSecretIn)
    return reply(
        await admin.rotate_secret(request.app[CONNECTIONS], user.actor, endpoint_id, body.overlapSeconds)
    )


@operation("An endpoint's deliveries and every attempt", "webhooks", ok={200: DeliveryList}, query=SMALL_PAGE)
async def list_deliveries(request: web.Request) -> web.Response:
    await require_admin(request)
    endpoint_id = path_id(request, "id")
    page, size = page_params(request, default_size=50, max_size=500)
    async with request.app[DB].acquire() as conn:
        return reply(await store.list_deliveries(conn, endpoint_id, page, size))


@operation("Queue a delivery again (same webhook-id)", "webhooks", ok={202: DeliveryOut})
async def redeliver(request: web.Request) -> web.Response:
    user = await require_admin(request)
    message_id = path_id(request, "deliveryId")
    return reply(await admin.redeliver(request.app[CONNECTIONS], user.actor, message_id), 202)
