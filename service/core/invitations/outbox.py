"""Queueing an invitation and reading them back: the outbox rows, in the caller's transaction.

``queue_invitation`` writes one ``invitations`` row (participant, study, channel, status and
schedule: no address, no name, no code, no message) and its audit row, inside the caller's open
transaction, so an invitation asked for with a contact update commits or rolls back with it. The
worker's sweeper (service/worker/invitations.py) finds the row within seconds and delivers it
(core/invitations/delivery.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from service.core import audit
from service.core.access_links import portal_host
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.invitations.model import (
    Channel,
    InvitationAttempt,
    InvitationList,
    InvitationView,
    StudyInvitation,
    StudyInvitationList,
)
from service.core.invitations.transports import configured
from service.core.protection.fields import with_personal
from service.settings import Settings

REMOVED_STATUSES = ("removed", "auto-removed")
NOT_CONFIGURED = {"email": "emailNotConfigured", "sms": "smsNotConfigured"}
NO_ADDRESS = {"email": ("email", "participantHasNoEmail"), "sms": ("phone", "participantHasNoPhone")}

PARTICIPANT = """
SELECT p.*, st.participate_enabled
FROM participants p JOIN studies st ON st.id = p.study_id WHERE p.id = $1
"""


def check_invitable(row: asyncpg.Record, channel: Channel) -> None:
    """The participant can be invited on this channel now; else the 409 that says why."""
    params = {"participantID": row["subject_key"]}
    if row["status"] in REMOVED_STATUSES:
        raise ApiError("participantNotAvailable", params)
    if not row["participate_enabled"]:
        raise ApiError("participateNotEnabled", params)
    if not row["access_code"]:
        raise ApiError("participantNotRegistered", params)
    column, code = NO_ADDRESS[channel]
    if not row[column]:
        raise ApiError(code, params)


async def queue_invitation(
    conn: asyncpg.Connection,
    *,
    participant_id: int,
    channel: Channel,
    actor: Actor,
    settings: Settings,
) -> InvitationView:
    """Queue one invitation of a registered participant, in the caller's transaction.

    Refused (409) when the channel has no transport configured, no Participate portal URL is set
    (the message's link), or the participant is removed, not registered, or has no address for
    the channel; 404 when there is no such participant. Authorization is the caller's.
    """
    if not configured(settings, channel):
        raise ApiError(NOT_CONFIGURED[channel])
    portal_host(settings)  # 409 participateUrlNotConfigured: the message could hold no link
    row = await with_personal(conn, await conn.fetchrow(PARTICIPANT, participant_id))
    if row is None:
        raise ApiError("participantNotFound")
    check_invitable(row, channel)
    invitation = await conn.fetchrow(
        """INSERT INTO invitations (participant_id, study_id, channel, message_id, retry_until, created_by)
           VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6) RETURNING *""",
        participant_id, row["study_id"], channel, f"inv-{uuid.uuid4().hex}",
        settings.invitation_retry_hours * 3600.0, actor.username,
    )  # fmt: skip
    await audit.record_on_participant(conn, actor, "participant.invite", row, {"channel": channel})
    return invitation_view(invitation, [])


# --- Reading ------------------------------------------------------------------------------------


def attempt_view(row: asyncpg.Record) -> InvitationAttempt:
    return InvitationAttempt(
        attempt=row["attempt"],
        at=row["at"],
        durationMs=row["duration_ms"],
        outcome=row["outcome"],
        statusCode=row["status_code"],
        error=row["error"],
    )


def _fields(row: asyncpg.Record, attempts: list[InvitationAttempt]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "channel": row["channel"],
        "status": row["status"],
        "attempts": row["attempts"],
        "createdAt": row["created_at"],
        "createdBy": row["created_by"],
        "nextAttemptAt": row["next_attempt_at"] if row["status"] == "QUEUED" else None,
        "sentAt": row["sent_at"],
        "lastError": row["last_error"],
        "attemptLog": attempts,
    }


def invitation_view(row: asyncpg.Record, attempts: list[InvitationAttempt]) -> InvitationView:
    return InvitationView(**_fields(row, attempts))


async def _attempts(conn: asyncpg.Connection, ids: list[int]) -> dict[int, list[InvitationAttempt]]:
    rows = await conn.fetch(
        "SELECT * FROM invitation_attempts WHERE invitation_id = ANY($1::bigint[]) ORDER BY invitation_id, attempt, id",
        ids,
    )
    found: dict[int, list[InvitationAttempt]] = {}
    for r in rows:
        found.setdefault(r["invitation_id"], []).append(attempt_view(r))
    return found


async def list_invitations(conn: asyncpg.Connection, participant_id: int) -> InvitationList:
    """A participant's invitations, newest first, each with every attempt and its outcome."""
    rows = await conn.fetch(
        "SELECT * FROM invitations WHERE participant_id = $1 ORDER BY created_at DESC, id DESC",
        participant_id,
    )
    attempts = await _attempts(conn, [r["id"] for r in rows])
    return InvitationList(invitations=[invitation_view(r, attempts.get(r["id"], [])) for r in rows])


async def list_study_invitations(
    conn: asyncpg.Connection, study_oid: str, status: str | None, page: int, size: int
) -> StudyInvitationList:
    """An operator's view of a study's invitations (e.g. the FAILED ones), newest first."""
    study_id = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", study_oid)
    if study_id is None:
        raise ApiError("studyNotExist", {"studyOid": study_oid})
    rows = await conn.fetch(
        """SELECT i.*, p.subject_key, si.oid AS site_oid
           FROM invitations i JOIN participants p ON p.id = i.participant_id LEFT JOIN sites si ON si.id = p.site_id
           WHERE i.study_id = $1 AND ($2::text IS NULL OR i.status = $2)
           ORDER BY i.created_at DESC, i.id DESC LIMIT $3 OFFSET $4""",
        study_id, status, size, (page - 1) * size,
    )  # fmt: skip
    attempts = await _attempts(conn, [r["id"] for r in rows])
    found = [
        StudyInvitation(
            **_fields(r, attempts.get(r["id"], [])), subjectKey=r["subject_key"], siteOid=r["site_oid"]
        )
        for r in rows
    ]
    return StudyInvitationList(studyOid=study_oid, invitations=found, page=page, pageSize=size)
