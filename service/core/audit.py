"""The audit log: one row per change or extract/download, naming fields, never their values.

One writer (``_insert``) behind three ways to say where the act happened: inside an authorized
``Scope`` (participants), on a job (its study, site and UUID), or nowhere in particular
(admin acts on the service itself). Two rows are written by the statement of the change they
record, to save it a round trip: a new participant's (core/participants.py) and a job submit's
(core/jobs/lifecycle.py). The audit log has no foreign keys, so writing a row takes no
lock on the rows it names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from service.core.roles import Scope


@dataclass(frozen=True)
class Actor:
    """Who did it: the user's id (None for a name not in the users table) and name."""

    user_id: int | None
    username: str


# Acts done with the ``participants`` command (an operator at the service's own machine): no user id,
# so never mistaken for a user who happens to be called "cli".
CLI = Actor(user_id=None, username="cli")


_INSERT = """
INSERT INTO audit_log (user_id, username, action, study_id, site_id, participant_id, job_uuid, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""


async def _insert(
    conn: asyncpg.Connection,
    user_id: int | None,
    username: str,
    action: str,
    *,
    study_id: int | None = None,
    site_id: int | None = None,
    participant_id: int | None = None,
    job_uuid: UUID | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        _INSERT, user_id, username, action, study_id, site_id, participant_id, job_uuid, details or {}
    )


async def record(
    conn: asyncpg.Connection,
    scope: Scope,
    action: str,
    *,
    site_id: int | None = None,
    participant_id: int | None = None,
    job_uuid: UUID | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """An act inside ``scope``: its study, and its site unless ``site_id`` names another."""
    if site_id is None and scope.site is not None:
        site_id = scope.site["id"]
    await _insert(
        conn,
        scope.user_id,
        scope.username,
        action,
        study_id=scope.study["id"] if scope.study else None,
        site_id=site_id,
        participant_id=participant_id,
        job_uuid=job_uuid,
        details=details,
    )


async def record_on_job(
    conn: asyncpg.Connection,
    actor: Actor,
    action: str,
    job: asyncpg.Record,
    details: dict[str, Any] | None = None,
) -> None:
    """An act on a job (download, delete, retry, cancel): the job's study, site and UUID."""
    await _insert(
        conn,
        actor.user_id,
        actor.username,
        action,
        study_id=job["study_id"],
        site_id=job["site_id"],
        job_uuid=job["uuid"],
        details=details,
    )


async def record_on_participant(
    conn: asyncpg.Connection,
    actor: Actor,
    action: str,
    participant: asyncpg.Record,
    details: dict[str, Any] | None = None,
) -> None:
    """An act on one participant (an invitation): the participant's study, site and id."""
    await _insert(
        conn,
        actor.user_id,
        actor.username,
        action,
        study_id=participant["study_id"],
        site_id=participant["site_id"],
        participant_id=participant["id"],
        details=details,
    )


async def record_by(
    conn: asyncpg.Connection, actor: Actor, action: str, details: dict[str, Any] | None = None
) -> None:
    """An act on the service itself (an admin's), tied to no study."""
    await _insert(conn, actor.user_id, actor.username, action, details=details)


def field_names(body: BaseModel) -> list[str]:
    """What a request set, for an audit row: the names of the fields, never their values."""
    return sorted(body.model_fields_set)


# --- Reading it (the admin API's audit log and a job's detail) --------------------------------


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    username: str | None
    action: str
    studyOid: str | None
    siteOid: str | None
    subjectKey: str | None
    jobUuid: UUID | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    page: int
    pageSize: int
    total: int


@dataclass(frozen=True)
class AuditFilters:
    """An operator's filters over the audit log (each None: not filtered)."""

    username: str | None = None
    action: str | None = None
    study_oid: str | None = None
    site_oid: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None


AUDIT_FROM = """
FROM audit_log a LEFT JOIN studies st ON st.id = a.study_id LEFT JOIN sites si ON si.id = a.site_id
LEFT JOIN participants p ON p.id = a.participant_id
"""
AUDIT_SELECT = "SELECT a.*, st.oid AS study_oid, si.oid AS site_oid, p.subject_key" + AUDIT_FROM
AUDIT_FILTERED = """
WHERE ($1::text IS NULL OR a.username = $1) AND ($2::text IS NULL OR a.action = $2)
  AND ($3::text IS NULL OR st.oid = $3) AND ($4::text IS NULL OR si.oid = $4)
  AND ($5::timestamptz IS NULL OR a.at >= $5) AND ($6::timestamptz IS NULL OR a.at < $6)
"""


def audit_entry(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        username=row["username"],
        action=row["action"],
        studyOid=row["study_oid"],
        siteOid=row["site_oid"],
        subjectKey=row["subject_key"],
        jobUuid=row["job_uuid"],
        details=row["details"] or {},
    )


async def list_entries(conn: asyncpg.Connection, filters: AuditFilters, page: int, size: int) -> AuditPage:
    """The audit log, newest first, filtered."""
    args = (filters.username, filters.action, filters.study_oid, filters.site_oid, filters.start, filters.end)
    total = await conn.fetchval("SELECT count(*)" + AUDIT_FROM + AUDIT_FILTERED, *args)
    rows = await conn.fetch(
        AUDIT_SELECT + AUDIT_FILTERED + " ORDER BY a.at DESC, a.id DESC LIMIT $7 OFFSET $8",
        *args,
        size,
        (page - 1) * size,
    )
    return AuditPage(entries=[audit_entry(r) for r in rows], page=page, pageSize=size, total=total)


async def entries_for_job(conn: asyncpg.Connection, job_uuid: UUID) -> list[AuditEntry]:
    rows = await conn.fetch(AUDIT_SELECT + " WHERE a.job_uuid = $1 ORDER BY a.at, a.id", job_uuid)
    return [audit_entry(r) for r in rows]
