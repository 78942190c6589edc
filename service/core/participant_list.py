"""OC4's participant list of a study or site: IDs, statuses and who changed them, never personal data."""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import BaseModel

from service.core.participants import STATUS_LABELS
from service.core.roles import Scope


class ListedParticipant(BaseModel):
    subjectKey: str
    subjectOid: str
    status: str
    siteOid: str | None
    createdBy: Any = None
    createdAt: str | None = None
    lastModifiedBy: Any = None
    lastModified: str | None = None
    participateStatus: str | None = None  # only for a registered participant (not in OC4's list)


class ParticipantList(BaseModel):
    studyParticipants: list[ListedParticipant]


LIST_PARTICIPANTS = """
SELECT p.subject_key, p.oid, p.status, s.oid AS site_oid, cu.username AS created_by, p.created_at,
       uu.username AS updated_by, p.updated_at, p.participate_status
FROM participants p
LEFT JOIN sites s ON s.id = p.site_id
LEFT JOIN users cu ON cu.id = p.created_by
LEFT JOIN users uu ON uu.id = p.updated_by
WHERE p.study_id = $1
  AND ($2::bigint IS NULL OR p.site_id = $2)
  AND ($3::bigint[] IS NULL OR p.site_id = ANY($3))
ORDER BY p.subject_key, p.id
LIMIT $4 OFFSET $5
"""


async def list_participants(conn: asyncpg.Connection, scope: Scope, page: int, size: int) -> ParticipantList:
    """OC4's listing shape, without personal data. Site-level roles see their own sites only."""
    assert scope.study is not None
    rows = await conn.fetch(
        LIST_PARTICIPANTS,
        scope.study["id"],
        scope.site["id"] if scope.site else None,
        scope.visible_site_ids(),
        size,
        (page - 1) * size,
    )
    listed = [
        ListedParticipant(
            subjectKey=r["subject_key"],
            subjectOid=r["oid"],
            status=STATUS_LABELS[r["status"]],
            siteOid=r["site_oid"],
            createdBy=r["created_by"],
            createdAt=r["created_at"].isoformat(),
            lastModifiedBy=r["updated_by"],
            lastModified=r["updated_at"].isoformat(),
            **({"participateStatus": r["participate_status"]} if r["participate_status"] else {}),
        )
        for r in rows
    ]
    return ParticipantList(studyParticipants=listed)
