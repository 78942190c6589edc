"""Webhook endpoints, secrets, outbox messages and attempts: the SQL. The models are in
``models.py``, the signing and retry rules in ``rules.py``.

Nothing here knows HTTP handlers; ``service/web/handlers/webhooks.py`` serves the admin API and
``service/worker/webhooks.py`` delivers.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from service.core.errors import ApiError
from service.core.webhooks.models import (
    AttemptOut,
    DeliveryList,
    DeliveryOut,
    SecretRotated,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from service.core.webhooks.rules import new_secret

# --- Endpoints --------------------------------------------------------------------------------

ENDPOINT_SELECT = """
SELECT e.*, st.oid AS study_oid FROM webhook_endpoints e LEFT JOIN studies st ON st.id = e.study_id
"""


def endpoint_view(row: asyncpg.Record) -> WebhookOut:
    return WebhookOut(
        id=row["id"],
        url=row["url"],
        description=row["description"],
        eventTypes=list(row["event_types"]),
        studyOid=row["study_oid"],
        enabled=row["enabled"],
        disabledReason=row["disabled_reason"],
        createdAt=row["created_at"],
        updatedAt=row["updated_at"],
    )


async def _study_id(conn: asyncpg.Connection, study_oid: str | None) -> int | None:
    if study_oid is None:
        return None
    study_id: int | None = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", study_oid)
    if study_id is None:
        raise ApiError("studyNotExist", {"studyOid": study_oid})
    return study_id


async def get_endpoint(conn: asyncpg.Connection, endpoint_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(ENDPOINT_SELECT + " WHERE e.id = $1", endpoint_id)
    if row is None:
        raise ApiError("webhookNotFound", {"id": endpoint_id})
    return row


async def create_endpoint(conn: asyncpg.Connection, body: WebhookIn) -> WebhookCreated:
    secret = new_secret()
    async with conn.transaction():
        study_id = await _study_id(conn, body.studyOid)
        endpoint_id = await conn.fetchval(
            "INSERT INTO webhook_endpoints (url, description, event_types, study_id, enabled)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            body.url, body.description, sorted(set(body.eventTypes)), study_id, body.enabled,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO webhook_secrets (endpoint_id, secret) VALUES ($1, $2)", endpoint_id, secret
        )
        row = await get_endpoint(conn, endpoint_id)
    return WebhookCreated(**endpoint_view(row).model_dump(), secret=secret)


async def list_endpoints(conn: asyncpg.Connection) -> list[WebhookOut]:
    return [endpoint_view(r) for r in await conn.fetch(ENDPOINT_SELECT + " ORDER BY e.id")]


async def patch_endpoint(conn: asyncpg.Connection, endpoint_id: int, patch: WebhookPatch) -> WebhookOut:
    given = patch.model_fields_set
    async with conn.transaction():
        row = await get_endpoint(conn, endpoint_id)
        changes: dict[str, Any] = {}
        if "url" in given and patch.url is not None:
            changes["url"] = patch.url
        if "description" in given and patch.description is not None:
            changes["description"] = patch.description
        if "eventTypes" in given and patch.eventTypes is not None:
            changes["event_types"] = sorted(set(patch.eventTypes))
        if "studyOid" in given:
            changes["study_id"] = await _study_id(conn, patch.studyOid)
        if "enabled" in given and patch.enabled is not None:
            changes["enabled"] = patch.enabled
            if patch.enabled:
                changes["disabled_reason"] = None
        if changes:
            sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(changes))
            await conn.execute(
                f"UPDATE webhook_endpoints SET {sets}, updated_at = now() WHERE id = $1",
                row["id"],
                *changes.values(),
            )
            row = await get_endpoint(conn, endpoint_id)
    return endpoint_view(row)


async def delete_endpoint(conn: asyncpg.Connection, endpoint_id: int) -> None:
    if await conn.fetchval("DELETE FROM webhook_endpoints WHERE id = $1 RETURNING id", endpoint_id) is None:
        raise ApiError("webhookNotFound", {"id": endpoint_id})


async def rotate_secret(conn: asyncpg.Connection, endpoint_id: int, overlap_seconds: int) -> SecretRotated:
    """A new current secret; the old ones keep signing (alongside) for ``overlap_seconds``."""
    secret = new_secret()
    async with conn.transaction():
        await get_endpoint(conn, endpoint_id)
        await conn.execute("SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR UPDATE", endpoint_id)
        expires = await conn.fetchval(
            """UPDATE webhook_secrets SET expires_at = least(coalesce(expires_at, 'infinity'),
                                                          now() + make_interval(secs => $2))
               WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now())
               RETURNING expires_at""",
            endpoint_id, float(overlap_seconds),
        )  # fmt: skip
        await conn.execute(
            "DELETE FROM webhook_secrets WHERE endpoint_id = $1 AND expires_at <= now()", endpoint_id
        )
        await conn.execute(
            "INSERT INTO webhook_secrets (endpoint_id, secret) VALUES ($1, $2)", endpoint_id, secret
        )
    return SecretRotated(
        id=endpoint_id, secret=secret, previousSecretsExpireAt=expires if overlap_seconds else None
    )


async def active_secrets(conn: asyncpg.Connection, endpoint_id: int) -> list[str]:
    """The current secret first, then those still inside their overlap."""
    rows = await conn.fetch(
        """SELECT secret FROM webhook_secrets WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now())
           ORDER BY expires_at DESC NULLS FIRST, id DESC""",
        endpoint_id,
    )
    return [r["secret"] for r in rows]


# --- Messages (the outbox) and attempts -------------------------------------------------------


def attempt_view(row: asyncpg.Record) -> AttemptOut:
    return AttemptOut(
        attempt=row["attempt"],
        at=row["at"],
        durationMs=row["duration_ms"],
        outcome=row["outcome"],
        httpStatus=row["http_status"],
        responseExcerpt=row["response_excerpt"],
        error=row["error"],
    )


def message_view(row: asyncpg.Record, attempts: list[AttemptOut]) -> DeliveryOut:
    return DeliveryOut(
        id=row["id"],
        eventId=row["msg_id"],
        endpointId=row["endpoint_id"],
        eventType=row["event_type"],
        jobUuid=row["job_uuid"],
        status=row["status"],
        attempts=row["attempts"],
        nextAttemptAt=row["next_attempt_at"] if row["status"] == "pending" else None,
        createdAt=row["created_at"],
        deliveredAt=row["delivered_at"],
        lastError=row["last_error"],
        attemptLog=attempts,
    )


async def list_deliveries(conn: asyncpg.Connection, endpoint_id: int, page: int, size: int) -> DeliveryList:
    await get_endpoint(conn, endpoint_id)
    rows = await conn.fetch(
        "SELECT * FROM webhook_messages WHERE endpoint_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        endpoint_id, size, (page - 1) * size,
    )  # fmt: skip
    return DeliveryList(deliveries=await _with_attempts(conn, rows), page=page, pageSize=size)


async def messages_for_job(conn: asyncpg.Connection, job_uuid: UUID) -> list[DeliveryOut]:
    rows = await conn.fetch("SELECT * FROM webhook_messages WHERE job_uuid = $1 ORDER BY id", job_uuid)
    return await _with_attempts(conn, rows)


async def _with_attempts(conn: asyncpg.Connection, messages: list[asyncpg.Record]) -> list[DeliveryOut]:
    """The messages' views, each with its attempts (one query for all of them)."""
    attempts = await conn.fetch(
        "SELECT * FROM webhook_attempts WHERE message_id = ANY($1::bigint[]) ORDER BY message_id, attempt, id",
        [r["id"] for r in messages],
    )
    by_message: dict[int, list[AttemptOut]] = {}
    for a in attempts:
        by_message.setdefault(a["message_id"], []).append(attempt_view(a))
    return [message_view(r, by_message.get(r["id"], [])) for r in messages]


async def redeliver(conn: asyncpg.Connection, message_id: int, retry_hours: float) -> asyncpg.Record:
    """Queue a message again (same webhook-id), whatever became of it, with a fresh retry window."""
    row = await conn.fetchrow(
        """UPDATE webhook_messages SET status = 'pending', next_attempt_at = now(), last_error = NULL,
                  retry_until = greatest(retry_until, now() + make_interval(secs => $2))
           WHERE id = $1 RETURNING *""",
        message_id, retry_hours * 3600.0,
    )  # fmt: skip
    if row is None:
        raise ApiError("webhookNotFound", {"deliveryId": message_id})
    return row
