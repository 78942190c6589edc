"""The audit log: one row per change or extract/download, naming fields, never their values.

One writer (``_insert``) behind three ways to say where the act happened: inside an authorized
``Scope`` (participants), on a job (its study, site and UUID), or nowhere in particular
(admin acts on the service itself). Two rows are written by the statement of the change they
record, to save it a round trip: a new participant's (core/participants.py) and a job submit's
(core/jobs.py). The audit log has no foreign keys, so writing a row takes no
lock on the rows it names.
"""

from __future__ import annotations

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


async def record_by(
    conn: asyncpg.Connection, actor: Actor, action: str, details: dict[str, Any] | None = None
) -> None:
    """An act on the service itself (an admin's), tied to no study."""
    await _insert(conn, actor.user_id, actor.username, action, details=details)


def field_names(body: BaseModel) -> list[str]:
    """What a request set, for an audit row: the names of the fields, never their values."""
    return sorted(body.model_fields_set)
