"""Invitation templates: the built-in defaults, the grammar (checked when an operator sets one),
rendering (at each send, from the participant's current row), and the per-study store behind the
admin API.

A template is text with placeholders in braces (``{firstName}``); ``{{`` and ``}}`` write a brace.
Nothing else is special: rendering is a substitution of known names, never ``str.format`` (whose
``{x.attr}`` and ``{x[0]}`` reach into objects).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import asyncpg

from service.core import audit
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.invitations.model import (
    CHANNELS,
    PLACEHOLDERS,
    WAYS_IN,
    Channel,
    EmailTemplateIn,
    SmsTemplateIn,
    TemplateList,
    TemplateOut,
)

DEFAULT_SUBJECT = "Your invitation to {studyName}"
DEFAULT_EMAIL_BODY = """Hello {firstName},

Thank you for taking part in {studyName}. Follow this link to get started:

{accessLink}

If you did not expect this message, you can ignore it.
"""
DEFAULT_SMS_BODY = (
    "Hello {firstName}, thank you for taking part in {studyName}. Get started here: {accessLink}"
)

# Left to right: an escaped brace, a placeholder, a lone brace (an error), plain text.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]|[^{}]+")
_SUBJECT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Template:
    """What a message is rendered from: a subject (email only) and a body."""

    subject: str | None
    body: str


DEFAULTS: dict[Channel, Template] = {
    "email": Template(DEFAULT_SUBJECT, DEFAULT_EMAIL_BODY),
    "sms": Template(None, DEFAULT_SMS_BODY),
}


def _tokens(text: str, field: str) -> Iterator[tuple[str, str | None]]:
    """(literal text, None) and ("", placeholder name) pieces; a bad piece raises the 400."""
    for match in _TOKEN.finditer(text):
        piece = match.group(0)
        if piece in ("{{", "}}"):
            yield piece[0], None
        elif match.group(1) is not None:
            name = match.group(1)
            if name not in PLACEHOLDERS:
                raise ApiError("unknownTemplatePlaceholder", {"field": field, "placeholder": name[:50]})
            yield "", name
        elif piece in ("{", "}"):
            raise ApiError(
                "invalidTemplate", {"field": field, "reason": f"a single '{piece}': write '{piece * 2}'"}
            )
        else:
            yield piece, None


def check_text(text: str, field: str, *, needs_way_in: bool) -> None:
    """Refuse what the stated grammar (model.BODY_PATTERN / SUBJECT_PATTERN) does not allow."""
    if "\x00" in text:
        raise ApiError("invalidTemplate", {"field": field, "reason": "NUL character"})
    if field == "subject" and _SUBJECT_FORBIDDEN.search(text):
        raise ApiError("invalidTemplate", {"field": field, "reason": "control character"})
    names = {name for _, name in _tokens(text, field) if name}
    if needs_way_in and not names & set(WAYS_IN):
        reason = "needs " + " or ".join("{" + w + "}" for w in WAYS_IN)
        raise ApiError("invalidTemplate", {"field": field, "reason": reason})


def check_template(template: Template) -> None:
    if template.subject is not None:
        check_text(template.subject, "subject", needs_way_in=False)
    check_text(template.body, "body", needs_way_in=True)


def render_text(text: str, values: Mapping[str, str]) -> str:
    return "".join(literal if name is None else values[name] for literal, name in _tokens(text, "body"))


def render(template: Template, values: Mapping[str, str]) -> tuple[str | None, str]:
    """(subject, body). A subject is one header line: line breaks in a value become spaces."""
    subject = None
    if template.subject is not None:
        subject = _SUBJECT_FORBIDDEN.sub(" ", render_text(template.subject, values))
    return subject, render_text(template.body, values)


# --- The per-study store ----------------------------------------------------------------------


async def study_template(conn: asyncpg.Connection, study_id: int, channel: Channel) -> Template:
    """The study's template for the channel, or the default."""
    row = await conn.fetchrow(
        "SELECT subject, body FROM invitation_templates WHERE study_id = $1 AND channel = $2",
        study_id,
        channel,
    )
    return Template(row["subject"], row["body"]) if row else DEFAULTS[channel]


async def _study(conn: asyncpg.Connection, study_oid: str) -> int:
    study_id: int | None = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", study_oid)
    if study_id is None:
        raise ApiError("studyNotExist", {"studyOid": study_oid})
    return study_id


def _view(channel: Channel, row: asyncpg.Record | None) -> TemplateOut:
    if row is None:
        default = DEFAULTS[channel]
        return TemplateOut(
            channel=channel, subject=default.subject, body=default.body, custom=False, updatedAt=None, updatedBy=None
        )  # fmt: skip
    return TemplateOut(
        channel=channel,
        subject=row["subject"],
        body=row["body"],
        custom=True,
        updatedAt=row["updated_at"],
        updatedBy=row["updated_by"],
    )


async def list_templates(conn: asyncpg.Connection, study_oid: str) -> TemplateList:
    """Both channels' templates of a study, each the study's own or the default."""
    study_id = await _study(conn, study_oid)
    rows = await conn.fetch("SELECT * FROM invitation_templates WHERE study_id = $1", study_id)
    by_channel = {r["channel"]: r for r in rows}
    return TemplateList(
        studyOid=study_oid,
        placeholders=list(PLACEHOLDERS),
        templates=[_view(c, by_channel.get(c)) for c in CHANNELS],
    )


async def set_template(
    conn: asyncpg.Connection, study_oid: str, body: EmailTemplateIn | SmsTemplateIn, actor: Actor
) -> TemplateOut:
    """Set a study's template for the body's channel (checked first), with its audit row."""
    channel: Channel = "email" if isinstance(body, EmailTemplateIn) else "sms"
    template = Template(body.subject if isinstance(body, EmailTemplateIn) else None, body.body)
    check_template(template)
    async with conn.transaction():
        study_id = await _study(conn, study_oid)
        row = await conn.fetchrow(
            """INSERT INTO invitation_templates (study_id, channel, subject, body, updated_by)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (study_id, channel) DO UPDATE
               SET subject = excluded.subject, body = excluded.body, updated_at = now(), updated_by = excluded.updated_by
               RETURNING *""",
            study_id, channel, template.subject, template.body, actor.username,
        )  # fmt: skip
        await audit.record_by(
            conn, actor, "admin.invitationTemplate.set", {"studyOid": study_oid, "channel": channel}
        )
    return _view(channel, row)


async def reset_template(conn: asyncpg.Connection, study_oid: str, channel: Channel, actor: Actor) -> None:
    """Back to the default (no error when the study had none of its own)."""
    async with conn.transaction():
        study_id = await _study(conn, study_oid)
        await conn.execute(
            "DELETE FROM invitation_templates WHERE study_id = $1 AND channel = $2", study_id, channel
        )
        await audit.record_by(
            conn, actor, "admin.invitationTemplate.reset", {"studyOid": study_oid, "channel": channel}
        )
