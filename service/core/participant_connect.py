"""OC4's ``connect`` call and the Participate status an integration reports: update a participant's
contact data, register it for Participate, reset its access code, invite it by email and/or SMS,
all in one transaction with their audit rows (docs/contract.md, "Participate").

``connect`` registers a participant that has no access code yet when the study has Participate on,
as OC4's ``UserServiceImpl.connectParticipant`` does; a reset issues a new code in the same row,
so the old one stops working everywhere at once (reads, access links, the next extract).
"""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr

from service.core import audit, invitations
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.participant_ids import new_access_code
from service.core.participant_reads import ParticipantAccount, account, find_visible
from service.core.participants import (
    CONTACT_COLUMNS,
    REMOVED_STATUSES,
    contact_changes,
    is_registered,
    stored_changes,
    update_columns,
)
from service.core.roles import Action, Scope
from service.core.validation import contact_errors
from service.settings import Settings


class ConnectIn(BaseModel):
    """OC4's ``OCParticipantDTO``. Absent or null contact fields keep their values; "" clears."""

    model_config = ConfigDict(extra="ignore")

    firstName: StrictStr | None = None
    lastName: StrictStr | None = None
    email: StrictStr | None = None
    phoneNumber: StrictStr | None = None
    identifier: StrictStr | None = None
    inviteParticipant: StrictBool = False
    inviteViaSms: StrictBool = False
    resetAccessCode: StrictBool = False


# OCParticipantDTO field -> the add call's field, whose rules and column it shares
CONNECT_FIELDS = {
    "firstName": "firstName",
    "lastName": "lastName",
    "email": "emailAddress",
    "phoneNumber": "phoneNumber",
    "identifier": "identifier",
}


def _check_writable(scope: Scope, row: asyncpg.Record, params: dict[str, Any]) -> None:
    """The caller may change this participant: a writer where it is, the study and its site
    available, the participant not removed."""
    assert scope.study is not None
    if not scope.may(Action.WRITE_AT_SITE, row["site_id"]) and not (
        row["site_id"] is None and scope.may(Action.WRITE_AT_STUDY, None)
    ):
        raise ApiError("noSufficientPrivileges", params)
    if scope.study["status"] != "available":
        raise ApiError("studyNotAvailable", params)
    if row["site_status"] not in (None, "available"):
        raise ApiError("siteNotAvailable", params)
    if row["status"] in REMOVED_STATUSES:
        raise ApiError("participantNotAvailable", params)


async def _locked(
    conn: asyncpg.Connection, scope: Scope, subject_key: str
) -> tuple[asyncpg.Record, dict[str, Any]]:
    row = await find_visible(conn, scope, subject_key, lock=True)
    return row, {**scope.params, "subjectKey": row["subject_key"]}


async def connect(
    conn: asyncpg.Connection, settings: Settings, scope: Scope, subject_key: str, body: ConnectIn
) -> ParticipantAccount:
    """``POST .../studies/{s}/participants/{SSID}/connect``."""
    assert scope.study is not None
    participate = bool(scope.study["participate_enabled"])
    async with conn.transaction():
        row, params = await _locked(conn, scope, subject_key)
        _check_writable(scope, row, params)
        contact = {
            CONNECT_FIELDS[k]: v.strip() for k in CONNECT_FIELDS if (v := getattr(body, k)) is not None
        }
        if contact and row["site_id"] is None:
            raise ApiError("studyLevelParticipantContactNotAllowed", params)
        errors = contact_errors(*(contact.get(k) for k in CONTACT_COLUMNS))
        if errors:
            raise ApiError(errors[0], params, errors=errors)
        wants_participate = body.resetAccessCode or body.inviteParticipant or body.inviteViaSms
        if wants_participate and not participate:
            raise ApiError("participateNotEnabled", params)

        changes: dict[str, Any] = await contact_changes(conn, row, contact)
        registering = participate and not is_registered(row)
        if registering:
            changes["access_code"] = new_access_code()
            changes["participate_status"] = "CREATED"
        elif body.resetAccessCode:
            changes["access_code"] = new_access_code()
        actor = Actor(scope.user_id, scope.username)
        if changes:
            await _apply(conn, scope, row, changes)
            fields = [f for f, c in CONTACT_COLUMNS.items() if c in changes]
            if fields or registering:
                action = "participant.register" if registering else "participant.update"
                details = {"fields": fields, "registered": registering, "via": "connect"}
                await audit.record_on_participant(conn, actor, action, row, details)
            if body.resetAccessCode and not registering:
                await audit.record_on_participant(
                    conn, actor, "participant.accessCode.reset", row, {"via": "connect"}
                )
        if body.inviteParticipant:
            await invitations.queue_invitation(
                conn, participant_id=row["id"], channel="email", actor=actor, settings=settings
            )
        if body.inviteViaSms:
            await invitations.queue_invitation(
                conn, participant_id=row["id"], channel="sms", actor=actor, settings=settings
            )
        return await _answer(conn, scope, row, changed=bool(changes))


async def _apply(
    conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record, changes: dict[str, Any]
) -> None:
    await update_columns(conn, row, stored_changes(conn, row, changes), scope.user_id)


async def _answer(
    conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record, *, changed: bool
) -> ParticipantAccount:
    """The account as it now stands: read again only when this call changed it."""
    return await account(conn, scope, await find_visible(conn, scope, row["subject_key"]) if changed else row)


ParticipateStatus = Literal["CREATED", "INVITED", "ACTIVE", "INACTIVE", "CONTACT_INFO_ENTERED"]


class ParticipateStatusIn(BaseModel):
    """What the Participate side saw happen, reported by an integration."""

    model_config = ConfigDict(extra="ignore")

    status: ParticipateStatus


async def report_participate_status(
    conn: asyncpg.Connection, scope: Scope, subject_key: str, body: ParticipateStatusIn
) -> ParticipantAccount:
    """``PUT .../participants/{SSID}/participateStatus``: the transitions this service cannot see
    (a participant signing in to the portal, entering contact data, being deactivated) reported
    by the integration that can. Only a registered participant has a Participate status."""
    async with conn.transaction():
        row, params = await _locked(conn, scope, subject_key)
        _check_writable(scope, row, params)
        assert scope.study is not None
        if not scope.study["participate_enabled"]:
            raise ApiError("participateNotEnabled", params)
        if not is_registered(row):
            raise ApiError("participantNotRegistered", params)
        changed = row["participate_status"] != body.status
        if changed:
            await _apply(conn, scope, row, {"participate_status": body.status})
            details = {"from": row["participate_status"], "to": body.status}
            actor = Actor(scope.user_id, scope.username)
            await audit.record_on_participant(conn, actor, "participant.participateStatus", row, details)
        return await _answer(conn, scope, row, changed=changed)
