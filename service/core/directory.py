"""The deployment's directory: studies, sites, users and role assignments.

Used by the admin API, the CLI (``create-user``, ``disable-user``, ``enable-user``), the demo seed
and the tests: one way to set things up. Functions take a connection and plain values and raise
``ApiError`` on conflicts.
"""

from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt

from service.core import accounts, audit
from service.core.errors import ApiError
from service.core.participant_ids import template_errors
from service.core.roles import ALL_ROLES
from service.core.validation import integer_schema, whole_number

MAX_ENROLLMENT = 100_000_000
Enrollment = Annotated[
    StrictInt,
    Field(ge=0, le=MAX_ENROLLMENT),
    BeforeValidator(whole_number),
    integer_schema(0, MAX_ENROLLMENT),
]

Status = Literal["available", "frozen", "locked", "removed"]
OID_PATTERN = r"^[A-Za-z0-9_()\-. ]{1,64}$"
# What ``template_errors`` accepts, for clients: literal ID characters and the fields {site}, {study},
# {seq} or {seq:0N}, with {seq} at least once. A template renders no longer than itself (each field
# is at least as long as what it renders in the check), so at most 30 characters keeps the schema's
# word exact: every template it admits renders a valid participant ID.
TEMPLATE_MAX = 30
_LITERAL = r"[^{}<>\x00-\x1f\x7f-\x9f\ufeff]"  # what a participant ID may hold
_FIELD = r"\{site\}|\{study\}|\{seq(?::0[1-8])?\}"
TEMPLATE_PATTERN = rf"^(?:{_LITERAL}|{_FIELD})*\{{seq(?::0[1-8])?\}}(?:{_LITERAL}|{_FIELD})*$"
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no control characters: names reach pages, files and logs


class StudyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    oid: str = Field(pattern=OID_PATTERN)
    name: str = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)
    status: Status = "available"
    participantIdMethod: Literal["manual", "system_generated"] = "manual"
    idTemplate: str = Field(
        default="{site}-{seq:04}", max_length=TEMPLATE_MAX, json_schema_extra={"pattern": TEMPLATE_PATTERN}
    )
    participateEnabled: StrictBool = False
    expectedTotalEnrollment: Enrollment = 0
    enforceEnrollmentCap: StrictBool = False


class StudyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=255, pattern=NAME_PATTERN)
    status: Status | None = None
    participantIdMethod: Literal["manual", "system_generated"] | None = None
    idTemplate: str | None = Field(
        default=None, max_length=TEMPLATE_MAX, json_schema_extra={"pattern": TEMPLATE_PATTERN}
    )
    participateEnabled: StrictBool | None = None
    expectedTotalEnrollment: Enrollment | None = None
    enforceEnrollmentCap: StrictBool | None = None


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    oid: str = Field(pattern=OID_PATTERN)
    name: str = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)
    status: Status = "available"


class SitePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=255, pattern=NAME_PATTERN)
    status: Status | None = None


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
    fullName: str = Field(default="", max_length=255, pattern=r"^[^\x00-\x1f\x7f]*$")
    admin: StrictBool = False


class UserPatch(BaseModel):
    """Switch a person off (``disabled``) or take the admin flag away; absent keeps the value."""

    model_config = ConfigDict(extra="forbid")
    disabled: StrictBool | None = None
    admin: StrictBool | None = None


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    studyOid: str = Field(max_length=64)
    siteOid: str | None = Field(default=None, max_length=64)
    # Checked by grant/revoke (their error names the allowed roles); the enum tells clients up front.
    role: str = Field(json_schema_extra={"enum": [*sorted(ALL_ROLES)]})


# --- Answers of the admin API ---


class StudyOut(StudyIn):
    pass


class StudyList(BaseModel):
    studies: list[StudyOut]


class SiteOut(BaseModel):
    oid: str
    name: str
    status: Status
    studyOid: str


class SiteList(BaseModel):
    sites: list[SiteOut]


class UserOut(BaseModel):
    username: str
    fullName: str
    admin: bool
    disabled: bool = False


class UserList(BaseModel):
    users: list[UserOut]


class RoleOut(BaseModel):
    studyOid: str
    siteOid: str | None
    role: str


class RoleList(BaseModel):
    roles: list[RoleOut]


STUDY_COLUMNS = {
    "name": "name",
    "status": "status",
    "participantIdMethod": "participant_id_method",
    "idTemplate": "id_template",
    "participateEnabled": "participate_enabled",
    "expectedTotalEnrollment": "expected_total_enrollment",
    "enforceEnrollmentCap": "enforce_enrollment_cap",
}


def study_view(row: asyncpg.Record) -> StudyOut:
    return StudyOut.model_validate(
        {"oid": row["oid"], **{api: row[col] for api, col in STUDY_COLUMNS.items()}}
    )


def site_view(row: asyncpg.Record, study_oid: str) -> SiteOut:
    return SiteOut(oid=row["oid"], name=row["name"], status=row["status"], studyOid=study_oid)


def user_view(row: asyncpg.Record) -> UserOut:
    return UserOut(
        username=row["username"], fullName=row["full_name"], admin=row["admin"], disabled=row["disabled"]
    )


def _check_template(template: str | None) -> None:
    if template is not None and (problems := template_errors(template)):
        raise ApiError("invalidRequestBody", {"fields": ["idTemplate"], "reason": problems[0]})


async def create_study(conn: asyncpg.Connection, s: StudyIn) -> StudyOut:
    _check_template(s.idTemplate)
    if await conn.fetchval("SELECT 1 FROM sites WHERE oid = $1", s.oid):
        raise ApiError("alreadyExists", {"studyOid": s.oid})  # study and site OIDs share one namespace
    row = await conn.fetchrow(
        """INSERT INTO studies (oid, name, status, participant_id_method, id_template, participate_enabled,
                                expected_total_enrollment, enforce_enrollment_cap)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (oid) DO NOTHING RETURNING *""",
        s.oid, s.name, s.status, s.participantIdMethod, s.idTemplate, s.participateEnabled,
        s.expectedTotalEnrollment, s.enforceEnrollmentCap,
    )  # fmt: skip
    if row is None:
        raise ApiError("alreadyExists", {"studyOid": s.oid})
    return study_view(row)


async def get_study(conn: asyncpg.Connection, oid: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM studies WHERE oid = $1", oid)
    if row is None:
        raise ApiError("studyNotExist", {"studyOid": oid})
    return row


async def patch_study(conn: asyncpg.Connection, oid: str, patch: StudyPatch) -> StudyOut:
    _check_template(patch.idTemplate)
    changes = {STUDY_COLUMNS[k]: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
    row = await get_study(conn, oid)
    if changes:
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(changes))
        row = await conn.fetchrow(
            f"UPDATE studies SET {sets} WHERE oid = $1 RETURNING *", oid, *changes.values()
        )
    return study_view(row)


async def list_studies(conn: asyncpg.Connection) -> StudyList:
    return StudyList(studies=[study_view(r) for r in await conn.fetch("SELECT * FROM studies ORDER BY oid")])


async def create_site(conn: asyncpg.Connection, study_oid: str, s: SiteIn) -> SiteOut:
    study = await get_study(conn, study_oid)
    if await conn.fetchval("SELECT 1 FROM studies WHERE oid = $1", s.oid):
        raise ApiError("alreadyExists", {"siteOid": s.oid})
    row = await conn.fetchrow(
        "INSERT INTO sites (study_id, oid, name, status) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (oid) DO NOTHING RETURNING *",
        study["id"], s.oid, s.name, s.status,
    )  # fmt: skip
    if row is None:
        raise ApiError("alreadyExists", {"siteOid": s.oid})
    return site_view(row, study_oid)


async def list_sites(conn: asyncpg.Connection, study_oid: str) -> SiteList:
    study = await get_study(conn, study_oid)
    rows = await conn.fetch("SELECT * FROM sites WHERE study_id = $1 ORDER BY oid", study["id"])
    return SiteList(sites=[site_view(r, study_oid) for r in rows])


async def patch_site(conn: asyncpg.Connection, study_oid: str, site_oid: str, patch: SitePatch) -> SiteOut:
    study = await get_study(conn, study_oid)
    row = await conn.fetchrow("SELECT * FROM sites WHERE oid = $1 AND study_id = $2", site_oid, study["id"])
    if row is None:
        raise ApiError("siteNotExist", {"studyOid": study_oid, "siteOid": site_oid})
    changes = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
    if changes:
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(changes))
        row = await conn.fetchrow(
            f"UPDATE sites SET {sets} WHERE id = $1 RETURNING *", row["id"], *changes.values()
        )
    return site_view(row, study_oid)


async def create_user(conn: asyncpg.Connection, u: UserIn) -> UserOut:
    row = await conn.fetchrow(
        "INSERT INTO users (username, full_name, admin) VALUES ($1, $2, $3)"
        " ON CONFLICT (username) DO NOTHING RETURNING *",
        u.username, u.fullName, u.admin,
    )  # fmt: skip
    if row is None:
        raise ApiError("alreadyExists", {"username": u.username})
    return user_view(row)


async def patch_user(conn: asyncpg.Connection, username: str, patch: UserPatch) -> UserOut:
    """Takes effect at once: every check that reads the user reads these flags (no token cache).
    A change of either flag moves the credentials epoch (``credentials_changed_at``) in the same
    statement: the user's console sessions end and tokens issued before are refused, so disable,
    reset the password, enable revives nothing."""
    row = await conn.fetchrow(
        """UPDATE users SET disabled = coalesce($2, disabled), admin = coalesce($3, admin),
               credentials_changed_at = CASE
                   WHEN coalesce($2, disabled) <> disabled OR coalesce($3, admin) <> admin THEN now()
                   ELSE credentials_changed_at END
           WHERE username = $1 RETURNING *""",
        username, patch.disabled, patch.admin,
    )  # fmt: skip
    if row is None:
        raise ApiError("userNotFound", {"username": username[:255]})
    return user_view(row)


async def update_user(
    conn: asyncpg.Connection, actor: audit.Actor, username: str, patch: UserPatch
) -> UserOut:
    """``patch_user`` and its audit row (``admin.user.update``: the user and the flags set), in one
    transaction: the admin API's ``PATCH /admin/api/users/{username}`` and the CLI's
    ``disable-user`` / ``enable-user`` (actor ``audit.CLI``) change a user the same way."""
    async with conn.transaction():
        user = await patch_user(conn, username, patch)
        changes = patch.model_dump(exclude_none=True)
        await audit.record_by(conn, actor, "admin.user.update", {"user": username, **changes})
    return user


async def revoke_user_sessions(
    conn: asyncpg.Connection, actor: audit.Actor, username: str, action: str = "admin.user.revokeSessions"
) -> None:
    """Sign ``username`` out everywhere (``accounts.revoke_sessions``) and its audit row, in one
    transaction: the admin API's ``POST /admin/api/users/{username}/sessions/revoke`` and the
    console's own "sign out everywhere" (``action`` ``user.revokeSessions``, the user as actor)."""
    async with conn.transaction():
        await accounts.revoke_sessions(conn, username)
        await audit.record_by(conn, actor, action, {"user": username})


async def get_user(conn: asyncpg.Connection, username: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM users WHERE username = $1", username)
    if row is None:
        raise ApiError("userNotFound", {"username": username[:255]})
    return row


async def list_users(conn: asyncpg.Connection) -> UserList:
    return UserList(users=[user_view(r) for r in await conn.fetch("SELECT * FROM users ORDER BY username")])


async def _role_target(conn: asyncpg.Connection, r: RoleIn) -> tuple[int, int | None]:
    if r.role not in ALL_ROLES:
        raise ApiError("invalidRequestBody", {"fields": ["role"], "allowed": sorted(ALL_ROLES)})
    study = await get_study(conn, r.studyOid)
    site_id = None
    if r.siteOid is not None:
        site_id = await conn.fetchval(
            "SELECT id FROM sites WHERE oid = $1 AND study_id = $2", r.siteOid, study["id"]
        )
        if site_id is None:
            raise ApiError("siteNotExist", {"studyOid": r.studyOid, "siteOid": r.siteOid})
    return study["id"], site_id


async def grant_role(conn: asyncpg.Connection, username: str, r: RoleIn) -> RoleOut:
    user = await get_user(conn, username)
    study_id, site_id = await _role_target(conn, r)
    inserted = await conn.fetchval(
        "INSERT INTO role_assignments (user_id, study_id, site_id, role) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING RETURNING id",
        user["id"], study_id, site_id, r.role,
    )  # fmt: skip
    if inserted is None:
        raise ApiError("alreadyExists", {"username": username, "role": r.role})
    return RoleOut(studyOid=r.studyOid, siteOid=r.siteOid, role=r.role)


async def revoke_role(conn: asyncpg.Connection, username: str, r: RoleIn) -> None:
    user = await get_user(conn, username)
    study_id, site_id = await _role_target(conn, r)
    deleted = await conn.fetchval(
        "DELETE FROM role_assignments WHERE user_id = $1 AND study_id = $2"
        " AND site_id IS NOT DISTINCT FROM $3 AND role = $4 RETURNING id",
        user["id"], study_id, site_id, r.role,
    )  # fmt: skip
    if deleted is None:
        raise ApiError("roleNotFound", {"username": username, "role": r.role})


async def list_roles(conn: asyncpg.Connection, username: str) -> RoleList:
    user = await get_user(conn, username)
    rows = await conn.fetch(
        """SELECT st.oid AS study_oid, si.oid AS site_oid, r.role FROM role_assignments r
           JOIN studies st ON st.id = r.study_id LEFT JOIN sites si ON si.id = r.site_id
           WHERE r.user_id = $1 ORDER BY st.oid, si.oid NULLS FIRST, r.role""",
        user["id"],
    )
    return RoleList(
        roles=[RoleOut(studyOid=r["study_oid"], siteOid=r["site_oid"], role=r["role"]) for r in rows]
    )
