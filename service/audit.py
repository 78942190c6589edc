"""The audit log: one row per change or extract/download, naming fields, never their values."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from .roles import Scope

INSERT_AUDIT = """
INSERT INTO audit_log (user_id, username, action, study_id, site_id, participant_id, job_uuid, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""


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
    study_id = scope.study["id"] if scope.study else None
    if site_id is None and scope.site is not None:
        site_id = scope.site["id"]
    await conn.execute(
        INSERT_AUDIT,
        scope.user_id,
        scope.username,
        action,
        study_id,
        site_id,
        participant_id,
        job_uuid,
        details or {},
    )
