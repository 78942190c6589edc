"""What an operator does with webhook endpoints and deliveries, for the admin API and the console
alike: each change and its audit row in one transaction. The audit row names the endpoint and the
fields set, never the URL (it may carry a receiver's token) or a secret."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from service.core import audit
from service.core.audit import Actor
from service.core.connections import Connections
from service.core.errors import ApiError
from service.core.webhooks import store
from service.core.webhooks.models import (
    DeliveryOut,
    SecretRotated,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from service.core.webhooks.outbox import enqueue_delivery
from service.core.webhooks.ssrf import AddressPolicy, BlockedAddress, check_url
from service.settings import Settings

log = logging.getLogger("participants.webhooks")


async def check_target(settings: Settings, url: str) -> None:
    """A URL we would refuse to call is refused now, with the reason (not later, silently)."""
    try:
        await asyncio.wait_for(
            check_url(url, AddressPolicy(settings.webhook_allow_private, settings.webhook_allowed_networks)),
            5.0,
        )
    except TimeoutError:
        return  # a slow resolver: every delivery checks again
    except BlockedAddress as exc:
        if exc.reason == "host does not resolve":
            return  # may resolve later (new DNS record); every delivery checks again
        code = "webhookAddressNotAllowed" if exc.reason == "address not allowed" else "webhookUrlNotAllowed"
        raise ApiError(code, {"fields": ["url"], "reason": exc.reason}) from None


async def _audit(
    conn: asyncpg.Connection, actor: Actor, action: str, endpoint_id: int, fields: list[str] | None = None,
    **more: Any,
) -> None:  # fmt: skip
    details: dict[str, Any] = {"endpointId": endpoint_id, **more}
    if fields is not None:
        details["fields"] = fields
    await audit.record_by(conn, actor, action, details)


async def create_webhook(conns: Connections, actor: Actor, body: WebhookIn) -> WebhookCreated:
    await check_target(conns.settings, body.url)
    async with conns.db.acquire() as conn, conn.transaction():
        created = await store.create_endpoint(conn, body)
        await _audit(conn, actor, "admin.webhook.create", created.id, audit.field_names(body))
    log.info("webhook endpoint created", extra={"endpoint_id": created.id})
    return created


async def patch_webhook(conns: Connections, actor: Actor, endpoint_id: int, body: WebhookPatch) -> WebhookOut:
    if body.url is not None:
        await check_target(conns.settings, body.url)
    async with conns.db.acquire() as conn, conn.transaction():
        patched = await store.patch_endpoint(conn, endpoint_id, body)
        await _audit(conn, actor, "admin.webhook.update", endpoint_id, audit.field_names(body))
    return patched


async def delete_webhook(conns: Connections, actor: Actor, endpoint_id: int) -> None:
    async with conns.db.acquire() as conn, conn.transaction():
        await store.delete_endpoint(conn, endpoint_id)
        await _audit(conn, actor, "admin.webhook.delete", endpoint_id)


async def rotate_secret(
    conns: Connections, actor: Actor, endpoint_id: int, overlap: int | None
) -> SecretRotated:
    """A new signing secret; the old ones sign alongside for ``overlap`` seconds (default: the setting)."""
    if overlap is None:
        overlap = conns.settings.webhook_default_overlap_seconds
    async with conns.db.acquire() as conn, conn.transaction():
        rotated = await store.rotate_secret(conn, endpoint_id, overlap)
        await _audit(conn, actor, "admin.webhook.rotateSecret", endpoint_id, overlapSeconds=overlap)
    log.info("webhook secret rotated", extra={"endpoint_id": endpoint_id, "overlap_seconds": overlap})
    return rotated


async def redeliver(conns: Connections, actor: Actor, message_id: int) -> DeliveryOut:
    """Queue a delivery again (same webhook-id), whatever became of it."""
    settings = conns.settings
    async with conns.db.acquire() as conn, conn.transaction():
        row = await store.redeliver(conn, message_id, settings.webhook_retry_hours)
        delivery = store.message_view(row, [])
        await audit.record_by(conn, actor, "admin.webhook.redeliver", {"deliveryId": message_id})
    # The row is the source of truth (the sweeper would find it); queueing now just saves the wait.
    await enqueue_delivery(conns.redis, settings, message_id, row["attempts"])
    return delivery
