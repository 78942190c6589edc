"""The webhook admin API's bodies and answers, and the event payload receivers get: pydantic models
that both validate input and describe the wire (the OpenAPI document is generated from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt
from pydantic.json_schema import JsonDict

from service.core.validation import integer_schema, whole_number

EventType = Literal["job.completed", "job.failed"]
EVENT_TYPES: tuple[EventType, ...] = ("job.completed", "job.failed")
MessageStatus = Literal["pending", "delivered", "failed"]
Outcome = Literal["success", "http_error", "timeout", "connection_error", "blocked", "gone"]
MAX_OVERLAP_SECONDS = 30 * 24 * 3600
OverlapSeconds = Annotated[
    StrictInt,
    Field(ge=0, le=MAX_OVERLAP_SECONDS),
    BeforeValidator(whole_number),
    integer_schema(0, MAX_OVERLAP_SECONDS),
]

# Postgres text cannot hold NUL: such input is a 400 here, not a failed query.
URL_PATTERN = r"^[^\x00-\x20\x7f]+$"  # no whitespace or control characters
# What ``ssrf.split_url`` accepts besides (scheme, a host, no credentials); stated for clients.
HTTP_URL: JsonDict = {"pattern": r"^https?://[^\x00-\x20\x7f/?#@:]+(:[0-9]{1,5})?([/?#][^\x00-\x20\x7f]*)?$"}
TEXT_PATTERN = r"^[^\x00]*$"


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048, pattern=URL_PATTERN, json_schema_extra=HTTP_URL)
    description: str = Field(default="", max_length=1000, pattern=TEXT_PATTERN)
    eventTypes: list[EventType] = Field(default=list(EVENT_TYPES), min_length=1, max_length=2)
    studyOid: str | None = Field(default=None, min_length=1, max_length=64, pattern=TEXT_PATTERN)
    enabled: StrictBool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(
        default=None, min_length=1, max_length=2048, pattern=URL_PATTERN, json_schema_extra=HTTP_URL
    )
    description: str | None = Field(default=None, max_length=1000, pattern=TEXT_PATTERN)
    eventTypes: list[EventType] | None = Field(default=None, min_length=1, max_length=2)
    # null: every study
    studyOid: str | None = Field(default=None, min_length=1, max_length=64, pattern=TEXT_PATTERN)
    enabled: StrictBool | None = None


class RotateSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlapSeconds: OverlapSeconds | None = None


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
