"""Reading participants as OC4's participant calls answer: one participant with or without its
Participate information, its account (``OCUserDTO``), the registered participants, the search by
fields, and the access link.

Who sees what (docs/contract.md, "One participant"): any role that reaches the participant's site
sees that the participant exists; contact data and the access code only ``Action.READ_CONTACT``
roles. A participant the caller may not see is ``participantNotFound``, exactly as one that does
not exist. Every answer that holds an access code writes an audit row first (who, which
participant, which call; never the code).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
from pydantic import BaseModel

from service.core import audit
from service.core.access_links import AccessLink, access_link
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.participants import REMOVED_STATUSES, STATUS_LABELS
from service.core.protection.fields import CONTACT, blind_of, keys, opened, opened_rows
from service.core.roles import WRITERS, Action, Scope
from service.settings import Settings

# OC4's UserStatus: the enum name goes on the wire in account answers, the label in the detail.
PARTICIPATE_LABELS = {
    "CREATED": "Created",
    "INVITED": "Invited",
    "ACTIVE": "Active",
    "INACTIVE": "Inactive",
    "CONTACT_INFO_ENTERED": "Contact Info Entered",
}

# p.*: the stored (encrypted) personal columns, and the plain ones while a database from before
# encryption still has them (core/protection/fields.py).
_SELECT = """
SELECT p.*, s.oid AS site_oid, s.status AS site_status, cu.username AS created_by,
       uu.username AS updated_by
FROM participants p
LEFT JOIN sites s ON s.id = p.site_id
LEFT JOIN users cu ON cu.id = p.created_by
LEFT JOIN users uu ON uu.id = p.updated_by
"""
SELECT_ONE = _SELECT + "WHERE p.study_id = $1 AND lower(p.subject_key) = lower($2)"


class ParticipantDetail(BaseModel):
    """OC4's ``StudyParticipantDetailDTO``: the site-level one-participant read."""

    subjectKey: str
    subjectOid: str
    status: str | None = None  # the Participate status label, with includeParticipateInfo=y
    createdBy: str | None = None
    createdAt: str | None = None
    lastModified: str | None = None
    lastModifiedBy: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    secondaryID: str | None = None
    email: str | None = None
    mobileNumber: str | None = None
    accessCode: str | None = None


class ParticipantAccount(BaseModel):
    """OC4's ``OCUserDTO``: a participant as the Participate side knows it."""

    viewStudySubjectId: int
    participantId: str
    username: str
    userType: str = "PARTICIPANT"
    status: str | None = None  # CREATED, INVITED, ACTIVE, INACTIVE, CONTACT_INFO_ENTERED
    firstName: str | None = None
    lastName: str | None = None
    email: str | None = None
    phoneNumber: str | None = None
    identifier: str | None = None
    createdBy: str | None = None
    createdDate: str | None = None
    lastModifiedBy: str | None = None
    lastModifiedDate: str | None = None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _text(value: str | None) -> str:
    return value or ""  # OC4 answers an empty string for a contact field never given


async def find_visible(
    conn: asyncpg.Connection, scope: Scope, subject_key: str, *, lock: bool = False
) -> asyncpg.Record:
    """The participant ``subject_key`` names in the scope's study (and site, on a site path), if
    the caller may see it; else ``participantNotFound``. ``lock``: its row is locked for the
    caller's transaction (a change follows)."""
    assert scope.study is not None
    params = {**scope.params, "subjectKey": subject_key[:100]}
    query = SELECT_ONE + " FOR UPDATE OF p" if lock else SELECT_ONE
    row = await conn.fetchrow(query, scope.study["id"], subject_key.strip())
    if row is None or not scope.sees(row["site_id"]):
        raise ApiError("participantNotFound", params)
    if scope.site is not None and row["site_id"] != scope.site["id"]:
        raise ApiError("participantNotFound", params)
    return row


def may_read_contact(scope: Scope, row: asyncpg.Record | dict[str, Any]) -> bool:
    site_id = row["site_id"]
    if site_id is None:
        return bool(scope.study_roles & WRITERS)
    return scope.may(Action.READ_CONTACT, site_id)


async def audit_code_read(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record, via: str) -> None:
    actor = Actor(scope.user_id, scope.username)
    await audit.record_on_participant(conn, actor, "participant.accessCode.read", row, {"via": via})


async def participant_detail(
    conn: asyncpg.Connection, scope: Scope, subject_key: str, include_participate: bool
) -> ParticipantDetail:
    """``GET .../participant?participantID=&includeParticipateInfo=``. A removed participant is
    ``participantNotAvailable``, as in OC4."""
    row = await find_visible(conn, scope, subject_key)
    if row["status"] in REMOVED_STATUSES:
        raise ApiError("participantNotAvailable", {**scope.params, "subjectKey": row["subject_key"]})
    detail = ParticipantDetail(
        subjectKey=row["subject_key"],
        subjectOid=row["oid"],
        createdBy=row["created_by"],
        createdAt=_iso(row["created_at"]),
        lastModified=_iso(row["updated_at"]),
        lastModifiedBy=row["updated_by"],
    )
    participate = include_participate and bool(scope.study and scope.study["participate_enabled"])
    if participate and row["participate_status"]:
        detail.status = PARTICIPATE_LABELS.get(row["participate_status"], row["participate_status"])
    if may_read_contact(scope, row):
        personal = await opened(conn, row)
        detail.firstName = _text(personal["first_name"])
        detail.lastName = _text(personal["last_name"])
        detail.secondaryID = _text(personal["identifier"])
        detail.email = _text(personal["email"])
        detail.mobileNumber = _text(personal["phone"])
        if participate and personal["access_code"] is not None:
            await audit_code_read(conn, scope, row, "participant")
            detail.accessCode = personal["access_code"]
    return detail


async def account(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record) -> ParticipantAccount:
    """One participant as ``OCUserDTO``, its contact data only for roles that may read it."""
    fields: dict[str, Any] = {
        "viewStudySubjectId": row["id"],
        "participantId": row["subject_key"],
        "username": f"{scope.study_oid}.{row['oid']}",
        "userType": "PARTICIPANT",
        "createdBy": row["created_by"],
        "createdDate": _iso(row["created_at"]),
        "lastModifiedBy": row["updated_by"],
        "lastModifiedDate": _iso(row["updated_at"]),
    }
    if row["participate_status"]:
        fields["status"] = row["participate_status"]
    if may_read_contact(scope, row):
        personal = await opened(conn, row, CONTACT)
        fields |= {
            "firstName": _text(personal["first_name"]),
            "lastName": _text(personal["last_name"]),
            "email": _text(personal["email"]),
            "phoneNumber": _text(personal["phone"]),
            "identifier": _text(personal["identifier"]),
        }
    return ParticipantAccount(**fields)


async def participant_account(conn: asyncpg.Connection, scope: Scope, subject_key: str) -> ParticipantAccount:
    """``GET .../studies/{s}/participants/{SSID}``."""
    return await account(conn, scope, await find_visible(conn, scope, subject_key))


LIST_REGISTERED = (
    _SELECT
    + """WHERE p.study_id = $1 AND p.access_code_ct IS NOT NULL
  AND ($2::bigint[] IS NULL OR p.site_id = ANY($2))
ORDER BY p.subject_key, p.id
LIMIT $3 OFFSET $4"""
)


async def registered_accounts(
    conn: asyncpg.Connection, scope: Scope, page: int, size: int
) -> list[ParticipantAccount]:
    """``GET .../studies/{s}/participantUsers``: the participants registered for Participate at
    the sites the caller sees, in participant ID order, one page at a time."""
    assert scope.study is not None
    rows = await conn.fetch(
        LIST_REGISTERED, scope.study["id"], scope.visible_site_ids(), size, (page - 1) * size
    )
    return [await account(conn, scope, r) for r in rows]


SEARCH = (
    _SELECT
    + """WHERE p.study_id = $1
  AND ($2::bigint[] IS NULL OR p.site_id = ANY($2))
  AND ($3::text IS NULL OR lower(p.subject_key) = $3)
  AND ($4::bytea IS NULL OR p.first_name_bidx = $4)
  AND ($5::bytea IS NULL OR p.last_name_bidx = $5)
  AND ($6::bytea IS NULL OR p.identifier_bidx = $6)
ORDER BY p.subject_key, p.id
LIMIT $7"""
)
SEARCH_LIMIT = 1000


async def search_by_fields(
    conn: asyncpg.Connection,
    scope: Scope,
    *,
    participant_id: str | None,
    first_name: str | None,
    last_name: str | None,
    identifier: str | None,
) -> list[ParticipantAccount]:
    """``GET .../participants/searchByFields``: exact matches, ignoring case and surrounding
    spaces, of every field given (a blank one is not given). Names and the identifier are matched
    by their blind indexes (NFKC, case-folded, trimmed), never decrypted to compare. A search by
    contact data is a read of it, so only roles that read contact data search, and only at the
    sites where they do (a study-level participant needs such a role on the study)."""
    assert scope.study is not None
    study_id = scope.study["id"]
    given = [v if v is not None and v.strip() else None for v in
             (participant_id, first_name, last_name, identifier)]  # fmt: skip
    sites = scope.sites_allowed(Action.READ_CONTACT)
    if sites == []:
        raise ApiError("noSufficientPrivileges", scope.params)
    if not any(given):
        return []  # no criterion matches nothing (never the whole study's contact data)
    ring = keys(conn)
    terms = [
        given[0].strip().lower() if given[0] else None,
        *(
            blind_of(ring, c, v, study_id)
            for c, v in zip(("first_name", "last_name", "identifier"), given[1:], strict=True)
        ),
    ]
    rows = await conn.fetch(SEARCH, study_id, sites, *terms, SEARCH_LIMIT)
    return [await account(conn, scope, r) for r in rows if may_read_contact(scope, r)]


async def participant_access_link(
    conn: asyncpg.Connection, settings: Settings, scope: Scope, subject_key: str, include_code: bool
) -> AccessLink:
    """``GET .../participants/{SSID}/accessLink?includeAccessCode=``: the portal link of a
    registered participant. With the code: contact readers only, audited."""
    row = await find_visible(conn, scope, subject_key)
    params = {**scope.params, "subjectKey": row["subject_key"]}
    assert scope.study is not None
    if not scope.study["participate_enabled"]:
        raise ApiError("participateNotEnabled", params)
    if include_code and not may_read_contact(scope, row):
        raise ApiError("noSufficientPrivileges", params)
    if row["status"] in REMOVED_STATUSES:
        raise ApiError("participantNotAvailable", params)
    code = (await opened(conn, row, ("access_code",)))["access_code"]
    if code is None:
        raise ApiError("participantNotRegistered", params)
    link = access_link(settings, code, include_code=include_code)
    if include_code:
        await audit_code_read(conn, scope, row, "accessLink")
    return link


class RosterRow(BaseModel):
    """One participant in a site's list as site staff see it: contact data for the roles that read it."""

    subjectKey: str
    status: str
    participateStatus: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    email: str | None = None
    phoneNumber: str | None = None


class Roster(BaseModel):
    participants: list[RosterRow]
    total: int  # participants matching the search at the site
    page: int
    pageSize: int


ROSTER_WHERE = "p.site_id = $1 AND ($2::text IS NULL OR lower(p.subject_key) LIKE $2 || '%')"
ROSTER = f"""
SELECT p.* FROM participants p WHERE {ROSTER_WHERE}
ORDER BY p.subject_key, p.id
LIMIT $3 OFFSET $4
"""
ROSTER_COUNT = f"SELECT count(*) FROM participants p WHERE {ROSTER_WHERE}"


def _like_prefix(prefix: str) -> str:
    """``prefix`` lower-cased with LIKE's wildcards escaped, so an ID with % or _ is found as typed."""
    return prefix.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def site_roster(
    conn: asyncpg.Connection, scope: Scope, prefix: str | None, page: int, size: int
) -> Roster:
    """A site's participants in ID order, those whose ID starts with ``prefix`` (any case), one page
    at a time, with the total; names and contact data only for the roles that read them."""
    assert scope.site is not None
    pattern = _like_prefix(prefix) if prefix and prefix.strip() else None
    rows = await conn.fetch(ROSTER, scope.site["id"], pattern, size, (page - 1) * size)
    total: int = await conn.fetchval(ROSTER_COUNT, scope.site["id"], pattern)
    contact = scope.may(Action.READ_CONTACT, scope.site["id"])
    personal = await opened_rows(conn, rows, ("first_name", "last_name", "email", "phone")) if contact else []
    listed = []
    for i, r in enumerate(rows):
        row: dict[str, Any] = {"subjectKey": r["subject_key"], "status": STATUS_LABELS[r["status"]]}
        if r["participate_status"]:
            row["participateStatus"] = r["participate_status"]
        if contact:
            c = personal[i]
            row |= {"firstName": _text(c["first_name"]), "lastName": _text(c["last_name"]),
                    "email": _text(c["email"]), "phoneNumber": _text(c["phone"])}  # fmt: skip
        listed.append(RosterRow(**row))
    return Roster(participants=listed, total=total, page=page, pageSize=size)
