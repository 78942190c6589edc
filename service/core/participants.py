"""Adding, updating, reassigning, registering, removing and restoring one participant.

The rules of contract.md "Add or update one participant", over one connection, each change in one
transaction with its audit row. No HTTP here: callers pass a ``Scope`` already authorized.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, StrictStr

from service.core import audit
from service.core.errors import ApiError
from service.core.participant_ids import new_access_code, next_generated_id
from service.core.protection.fields import (
    CONTACT,
    PERSONAL,
    STORED_LIST,
    keys,
    opened,
    sealed,
    stored_values,
)
from service.core.roles import Action, Scope
from service.core.validation import contact_errors, participant_id_errors

STATUS_LABELS = {
    "available": "Available",
    "signed": "Signed",
    "removed": "Removed",
    "auto-removed": "Auto-Removed",
}
ENROLLED_STATUSES = ("available", "signed")
REMOVED_STATUSES = ("removed", "auto-removed")

# API field -> column
CONTACT_COLUMNS = {
    "firstName": "first_name",
    "lastName": "last_name",
    "emailAddress": "email",
    "phoneNumber": "phone",
    "identifier": "identifier",
}


class ParticipantIn(BaseModel):
    """Body of the add/update call. Unknown fields are ignored; absent or null fields are kept."""

    model_config = ConfigDict(extra="ignore")

    subjectKey: StrictStr | None = None
    firstName: StrictStr | None = None
    lastName: StrictStr | None = None
    emailAddress: StrictStr | None = None
    phoneNumber: StrictStr | None = None
    identifier: StrictStr | None = None


class ParticipantOut(BaseModel):
    subjectKey: str
    subjectOid: str
    status: str
    participateStatus: str
    siteOid: str | None


def view(row: asyncpg.Record | dict[str, Any], site_oid: str | None) -> ParticipantOut:
    return ParticipantOut(
        subjectKey=row["subject_key"],
        subjectOid=row["oid"],
        status=STATUS_LABELS[row["status"]],
        participateStatus=row["participate_status"],
        siteOid=site_oid,
    )


def _clean(value: str | None) -> str | None:
    return value.strip() if value is not None else None


SELECT_BY_KEY = """
SELECT p.*, s.oid AS site_oid FROM participants p LEFT JOIN sites s ON s.id = p.site_id
WHERE p.study_id = $1 AND lower(p.subject_key) = lower($2)
"""

# The personal columns are $4..$13 (fields.STORED: ciphertexts, then blind indexes).
INSERT_PARTICIPANT = f"""
INSERT INTO participants (study_id, site_id, subject_key, oid, {STORED_LIST}, participate_status,
                          created_by, updated_by)
VALUES ($1, $2, $3, participant_oid($1, $3), $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
ON CONFLICT DO NOTHING
RETURNING *
"""

COUNT_ENROLLED = """
SELECT count(*) FROM participants WHERE study_id = $1 AND status = ANY($2::text[])
"""


async def lock_study_and_check_cap(conn: asyncpg.Connection, study: dict[str, Any], adding: int = 1) -> int:
    """How many of ``adding`` new participants the enrollment cap still admits.

    Takes the study row lock so concurrent adds to a capped study queue here and never overshoot.
    Studies without an enforced cap take no lock and admit everything.
    """
    if not study["enforce_enrollment_cap"]:
        return adding
    await conn.execute("SELECT 1 FROM studies WHERE id = $1 FOR UPDATE", study["id"])
    enrolled: int = await conn.fetchval(COUNT_ENROLLED, study["id"], list(ENROLLED_STATUSES))
    cap: int = study["expected_total_enrollment"]
    return max(0, min(adding, cap - enrolled))


async def save_participant(
    conn: asyncpg.Connection, scope: Scope, data: ParticipantIn, register: bool
) -> ParticipantOut:
    """Add, update, reassign and/or register one participant; return its view."""
    study, site = scope.study, scope.site
    assert study is not None
    params = dict(scope.params)
    if register and not study["participate_enabled"]:
        raise ApiError("participateNotEnabled", params)
    contact = {k: _clean(getattr(data, k)) for k in CONTACT_COLUMNS if getattr(data, k) is not None}
    if site is None and (contact or register):
        raise ApiError("studyLevelParticipantContactNotAllowed", params)

    key = _clean(data.subjectKey) or ""
    if key:
        params["subjectKey"] = key[:100]
    system_generated = study["participant_id_method"] == "system_generated"
    errors: list[str] = []
    if not key and not system_generated:
        errors.append("participantIDEmpty")
    if key:
        errors += participant_id_errors(key)
    errors += contact_errors(*(contact.get(k) for k in CONTACT_COLUMNS))
    if errors:
        raise ApiError(errors[0], params, errors=errors)

    if key and not system_generated and not study["enforce_enrollment_cap"]:
        # The common case, a new participant in a study without a cap: one statement inserts it
        # and its audit row, no explicit transaction. An existing ID falls through to the full path.
        created = await _create_in_one_statement(conn, scope, key, contact, register)
        if created is not None:
            return created

    async with conn.transaction():
        for _ in range(5):  # a concurrent insert of the same ID or access code: look again
            existing = (
                await conn.fetchrow(SELECT_BY_KEY + " FOR UPDATE OF p", study["id"], key) if key else None
            )
            if existing is not None:
                return await _update(conn, scope, existing, contact, register, params)
            if system_generated and key:
                raise ApiError("participantNotFound", params)
            created = await _create(conn, scope, key, contact, register, params)
            if created is not None:
                return created
        raise ApiError("participantIDNotUnique", params)


INSERT_PARTICIPANT_WITH_AUDIT = f"""
WITH created AS (
    INSERT INTO participants (study_id, site_id, subject_key, oid, {STORED_LIST}, participate_status,
                              created_by, updated_by)
    VALUES ($1, $2, $3, participant_oid($1, $3), $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
    ON CONFLICT DO NOTHING
    RETURNING *
), audited AS (
    INSERT INTO audit_log (user_id, username, action, study_id, site_id, participant_id, details)
    SELECT $15, $16, 'participant.create', $1, $2, id, $17 FROM created
)
SELECT * FROM created
"""


def _personal(
    conn: asyncpg.Connection, study_id: int, key: str, contact: dict[str, str | None], code: str | None
) -> list[Any]:
    """The stored personal columns of a new participant (fields.STORED, in order)."""
    values: dict[str, str | None] = {c: contact.get(f) or None for f, c in CONTACT_COLUMNS.items()}
    values["access_code"] = code
    return stored_values(keys(conn), study_id, key, values)


async def _create_in_one_statement(
    conn: asyncpg.Connection, scope: Scope, key: str, contact: dict[str, str | None], register: bool
) -> ParticipantOut | None:
    study, site = scope.study, scope.site
    assert study is not None
    fields = [k for k in CONTACT_COLUMNS if contact.get(k)]
    row = await conn.fetchrow(
        INSERT_PARTICIPANT_WITH_AUDIT,
        study["id"],
        site["id"] if site else None,
        key,
        *_personal(conn, study["id"], key, contact, new_access_code() if register else None),
        "CREATED" if register else "",
        scope.user_id,
        scope.username,
        {"fields": fields, "registered": register},
    )
    return view(row, scope.site_oid) if row is not None else None


async def _create(
    conn: asyncpg.Connection,
    scope: Scope,
    key: str,
    contact: dict[str, str | None],
    register: bool,
    params: dict[str, Any],
) -> ParticipantOut | None:
    study, site = scope.study, scope.site
    assert study is not None
    if await lock_study_and_check_cap(conn, study) < 1:
        raise ApiError("participantsEnrollmentCapReached", params)
    if not key:
        key = await next_generated_id(conn, scope)
        params["subjectKey"] = key
    code = new_access_code() if register else None
    row = await conn.fetchrow(
        INSERT_PARTICIPANT,
        study["id"],
        site["id"] if site else None,
        key,
        *_personal(conn, study["id"], key, contact, code),
        "CREATED" if register else "",
        scope.user_id,
    )
    if row is None:
        return None
    fields = [k for k in CONTACT_COLUMNS if contact.get(k)]
    await audit.record(
        conn,
        scope,
        "participant.create",
        participant_id=row["id"],
        details={"fields": fields, "registered": register},
    )
    return view(row, scope.site_oid)


async def contact_changes(
    conn: asyncpg.Connection, existing: asyncpg.Record, contact: dict[str, str | None]
) -> dict[str, str | None]:
    """Column -> new value for each contact field given that differs from ``existing`` ("" clears)."""
    current = await opened(conn, existing, CONTACT)
    changes: dict[str, str | None] = {}
    for field, column in CONTACT_COLUMNS.items():
        if field in contact:
            value = contact[field] or None
            if value != current[column]:
                changes[column] = value
    return changes


def stored_changes(
    conn: asyncpg.Connection, existing: asyncpg.Record, changes: dict[str, Any]
) -> dict[str, Any]:
    """``changes`` (column -> value) with each personal column replaced by its stored columns, and a
    row still holding plain columns (from before encryption) losing them: an update never leaves
    a value in clear."""
    personal = {c: v for c, v in changes.items() if c in PERSONAL}
    rest = {c: v for c, v in changes.items() if c not in PERSONAL}
    plain = {c: existing.get(c) for c in PERSONAL if existing.get(c) is not None}
    stored = sealed(keys(conn), existing["study_id"], existing["subject_key"], plain | personal)
    return rest | stored | dict.fromkeys(plain)  # the plain copies go in the same statement
    return changes | stored


async def _update(
    conn: asyncpg.Connection,
    scope: Scope,
    existing: asyncpg.Record,
    contact: dict[str, str | None],
    register: bool,
    params: dict[str, Any],
) -> ParticipantOut:
    site = scope.site
    if existing["status"] in REMOVED_STATUSES:
        raise ApiError("participantNotAvailable", params)
    target_site_id = site["id"] if site else None
    reassign = existing["site_id"] != target_site_id
    if reassign:
        if target_site_id is None:
            raise ApiError("participantSiteToStudyReassignmentNotAllowed", params)
        if not scope.may(Action.WRITE_AT_SITE, existing["site_id"]):
            # The ID is taken somewhere the caller may not act: from where they stand it is not unique.
            raise ApiError("participantIDNotUnique", params)

    changes: dict[str, Any] = await contact_changes(conn, existing, contact)
    registering = register and not is_registered(existing)
    if registering:
        changes["access_code"] = new_access_code()
        changes["participate_status"] = "CREATED"
    if reassign:
        changes["site_id"] = target_site_id
    if not changes:
        return view(existing, existing["site_oid"])

    fields = [f for f, c in CONTACT_COLUMNS.items() if c in changes]
    row = await update_columns(conn, existing, stored_changes(conn, existing, changes), scope.user_id)
    action = (
        "participant.reassign"
        if reassign
        else "participant.register"
        if registering
        else "participant.update"
    )
    details: dict[str, Any] = {"fields": fields, "registered": registering}
    if reassign:
        details["fromSiteId"] = existing["site_id"]
    await audit.record(conn, scope, action, participant_id=row["id"], details=details)
    return view(row, scope.site_oid)


def is_registered(row: asyncpg.Record) -> bool:
    """Registered for Participate: the row holds an access code (encrypted, or plain from before)."""
    return row["access_code_ct"] is not None or row.get("access_code") is not None


async def update_columns(
    conn: asyncpg.Connection, existing: asyncpg.Record, stored: dict[str, Any], user_id: int | None
) -> asyncpg.Record:
    """Write ``stored`` (column -> value, names from this module only) into ``existing``'s row."""
    assignments = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(stored))
    row = await conn.fetchrow(
        f"UPDATE participants SET {assignments}, updated_at = now(), updated_by = $2 WHERE id = $1 RETURNING *",
        existing["id"],
        user_id,
        *stored.values(),
    )
    assert row is not None
    return row


async def set_status(
    conn: asyncpg.Connection, scope: Scope, subject_key: str, remove: bool
) -> ParticipantOut:
    """Remove (soft) or restore a participant. Doing either twice is a no-op, not an error."""
    study, site = scope.study, scope.site
    assert study is not None
    params = {**scope.params, "subjectKey": subject_key[:100]}
    async with conn.transaction():
        row = await conn.fetchrow(SELECT_BY_KEY + " FOR UPDATE OF p", study["id"], subject_key)
        if row is None or (site is not None and row["site_id"] != site["id"]):
            raise ApiError("participantNotFound", params)
        removed = row["status"] in REMOVED_STATUSES
        if remove == removed:
            return view(row, row["site_oid"])
        if not remove and row["erased_at"] is not None:
            # Its personal data are gone for good: it stays removed (docs/erasure.md).
            raise ApiError("participantErased", params)
        if not remove and await lock_study_and_check_cap(conn, study) < 1:
            raise ApiError("participantsEnrollmentCapReached", params)
        updated = await conn.fetchrow(
            "UPDATE participants SET status = $2, updated_at = now(), updated_by = $3 WHERE id = $1 RETURNING *",
            row["id"],
            "removed" if remove else "available",
            scope.user_id,
        )
        assert updated is not None
        await audit.record(
            conn,
            scope,
            "participant.remove" if remove else "participant.restore",
            site_id=row["site_id"],
            participant_id=row["id"],
        )
        return view(updated, row["site_oid"])
