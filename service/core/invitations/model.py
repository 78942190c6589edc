"""Invitations' answers and the template bodies operators send: pydantic models that validate input
and describe the wire (the OpenAPI document is generated from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["email", "sms"]
CHANNELS: tuple[Channel, ...] = ("email", "sms")
InvitationStatus = Literal["QUEUED", "SENT", "FAILED"]
AttemptOutcome = Literal["accepted", "retry", "failed"]

# What a template may name, in braces; ``{{`` and ``}}`` write a brace.
PLACEHOLDERS: tuple[str, ...] = ("firstName", "studyName", "accessLink", "accessCode", "portalUrl")
# A message must let the participant in: a link, or the code (with ``{portalUrl}``, say).
WAYS_IN: tuple[str, ...] = ("accessLink", "accessCode")

_NAMES = "|".join(PLACEHOLDERS)
_OTHER = "|".join(p for p in PLACEHOLDERS if p not in WAYS_IN)
_WAY_IN = "|".join(WAYS_IN)
# The grammar the service enforces, stated for clients (ECMA regex, no lookahead): text without
# single braces or NUL, known placeholders, and at least one way in for a body. The checks in
# templates.py say which rule a template breaks; these patterns accept exactly the same templates.
BODY_PATTERN = (
    rf"^(?:[^{{}}\x00]|\{{\{{|\}}\}}|\{{(?:{_OTHER})\}})*"
    rf"\{{(?:{_WAY_IN})\}}"
    rf"(?:[^{{}}\x00]|\{{\{{|\}}\}}|\{{(?:{_NAMES})\}})*$"
)
SUBJECT_PATTERN = rf"^(?:[^{{}}\x00-\x1f\x7f]|\{{\{{|\}}\}}|\{{(?:{_NAMES})\}})*$"
SUBJECT_MAX = 200
EMAIL_BODY_MAX = 10_000
# Twilio refuses a body over 1,600 characters: room is left for the link and the name.
SMS_BODY_MAX = 1_200


def _template(max_length: int, pattern: str) -> Any:
    # The pattern is stated, not enforced by pydantic: templates.check_template enforces it with an
    # errorCode that names the broken rule (an unknown placeholder, a single brace...).
    return Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": pattern})


class EmailTemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = _template(SUBJECT_MAX, SUBJECT_PATTERN)
    body: str = _template(EMAIL_BODY_MAX, BODY_PATTERN)


class SmsTemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = _template(SMS_BODY_MAX, BODY_PATTERN)


class TemplateOut(BaseModel):
    channel: Channel
    subject: str | None  # email only
    body: str
    custom: bool  # false: the built-in default, used until an operator sets one
    updatedAt: datetime | None
    updatedBy: str | None


class TemplateList(BaseModel):
    studyOid: str
    placeholders: list[str]
    templates: list[TemplateOut]


class InvitationAttempt(BaseModel):
    attempt: int
    at: datetime
    durationMs: int
    outcome: AttemptOutcome
    statusCode: int | None  # the SMTP reply code or the HTTP status
    error: str | None  # the kind of failure: never a server's own words, which may quote the address


class InvitationView(BaseModel):
    id: int
    channel: Channel
    status: InvitationStatus
    attempts: int
    createdAt: datetime
    createdBy: str
    nextAttemptAt: datetime | None  # QUEUED only
    sentAt: datetime | None
    lastError: str | None
    attemptLog: list[InvitationAttempt]


class InvitationList(BaseModel):
    invitations: list[InvitationView]


class StudyInvitation(InvitationView):
    """An invitation in an operator's study-wide list: which participant, at which site."""

    subjectKey: str
    siteOid: str | None


class StudyInvitationList(BaseModel):
    studyOid: str
    invitations: list[StudyInvitation]
    page: int
    pageSize: int
