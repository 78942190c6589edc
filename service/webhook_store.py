"""Webhook endpoints, secrets, outbox messages and attempts: the models, the SQL, and the pure rules
of Standard Webhooks v1 (signing, the retry schedule, what a receiver's answer means).

Nothing here knows HTTP handlers; ``service/webhooks.py`` serves the admin API and
``worker/webhooks.py`` delivers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from .errors import ApiError
from .settings import Settings

EventType = Literal["job.completed", "job.failed"]
EVENT_TYPES: tuple[str, ...] = ("job.completed", "job.failed")
MessageStatus = Literal["pending", "delivered", "failed"]
Outcome = Literal["success", "http_error", "timeout", "connection_error", "blocked", "gone"]
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
EXCERPT_CHARS = 500
MAX_OVERLAP_SECONDS = 30 * 24 * 3600


# --- The admin API's bodies and answers -------------------------------------------------------


# Postgres text cannot hold NUL: such input is a 400 here, not a failed query.
URL_PATTERN = r"^[^\x00-\x20\x7f]+$"  # no whitespace or control characters
TEXT_PATTERN = r"^[^\x00]*$"


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048, pattern=URL_PATTERN)
    description: str = Field(default="", max_length=1000, pattern=TEXT_PATTERN)
    eventTypes: list[EventType] = Field(default=list(EVENT_TYPES), min_length=1, max_length=2)
    studyOid: str | None = Field(default=None, min_length=1, max_length=64, pattern=TEXT_PATTERN)
    enabled: StrictBool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, min_length=1, max_length=2048, pattern=URL_PATTERN)
    description: str | None = Field(default=None, max_length=1000, pattern=TEXT_PATTERN)
    eventTypes: list[EventType] | None = Field(default=None, min_length=1, max_length=2)
    studyOid: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=TEXT_PATTERN
    )  # null: every study
    enabled: StrictBool | None = None


class RotateSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlapSeconds: StrictInt | None = Field(default=None, ge=0, le=MAX_OVERLAP_SECONDS)


class WebhookOut(BaseModel):
    id: int
    url: str
    description: str
    eventTypes: list[str]
    studyOid: str | None
    enabled: bool
    disabledReason: str | None
    createdAt: datetime
    updatedAt: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_...: shown once, here")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class SecretRotated(BaseModel):
    id: int
    secret: str = Field(description="the new whsec_ secret, shown once")
    previousSecretsExpireAt: datetime | None


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    durationMs: int
    outcome: str
    httpStatus: int | None
    responseExcerpt: str | None
    error: str | None


class DeliveryOut(BaseModel):
    id: int = Field(description="the deliveryId of the redeliver call")
    eventId: str = Field(description="the webhook-id header: the same on every attempt")
    endpointId: int
    eventType: str
    jobUuid: UUID | None
    status: MessageStatus
    attempts: int
    nextAttemptAt: datetime | None
    createdAt: datetime
    deliveredAt: datetime | None
    lastError: str | None
    attemptLog: list[AttemptOut]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    page: int
    pageSize: int


# --- The event itself (what a receiver gets) --------------------------------------------------


class JobEventData(BaseModel):
    jobUuid: UUID
    jobType: str
    status: str
    studyOid: str
    siteOid: str | None
    rowCount: int | None
    byteSize: int | None
    sha256: str | None
    fileName: str | None
    expiresAt: datetime | None
    statusUrl: str
    downloadUrl: str | None


class JobEvent(BaseModel):
    """The body of every webhook request: thin, and without personal data."""

    type: EventType
    timestamp: datetime
    data: JobEventData


# --- Pure rules -------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (Standard Webhooks v1)."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()).decode()


def signature_header(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per active secret, space-separated: receivers accept any that matches."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def backoff_seconds(attempt: int, settings: Settings, rand: Callable[[], float] = random.random) -> float:
    """Delay after failed attempt number ``attempt`` (1-based): exponential, capped, with ±25% jitter."""
    base = settings.webhook_backoff_base_seconds * 2 ** min(attempt - 1, 40)
    return min(base, settings.webhook_backoff_max_seconds) * (0.75 + 0.5 * rand())


def classify(http_status: int) -> Outcome:
    if 200 <= http_status < 300:
        return "success"
    if http_status == 410:
        return "gone"
    return "http_error"  # 3xx (never followed), 4xx, 5xx: a failed attempt, retried


def next_attempt_at(
    attempt: int,
    now: datetime,
    retry_until: datetime,
    settings: Settings,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> datetime | None:
    """When to try again after failed attempt ``attempt``; None once the retry window is over.

    ``Retry-After`` (from a 429 or 5xx) replaces the computed backoff, within the same cap. The last
    attempt is made at the end of the window rather than skipped.
    """
    if now >= retry_until:
        return None
    if retry_after is not None:
        delay = min(max(retry_after, 1.0), settings.webhook_backoff_max_seconds)
    else:
        delay = backoff_seconds(attempt, settings, rand)
    return min(now + timedelta(seconds=delay), retry_until)


def excerpt(body: bytes) -> str:
    """The start of a receiver's answer, storable whatever it holds (Postgres text refuses NUL)."""
    return body[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS].replace("\x00", "\ufffd")


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
    study_id = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", study_oid)
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


def delivery_job_id(message_id: int, attempts: int) -> str:
    """arq job id of one attempt: enqueueing the same attempt twice is a no-op."""
    return f"webhook-delivery:{message_id}:{attempts}"
