"""Reading job rows: one SELECT for every view (the owner's, an operator's, the worker's claim), with
the study's and site's OIDs, the owner's name and whether the owner still holds the right."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from service.core.errors import ApiError
from service.core.jobs.model import parse_job_uuid
from service.core.jobs.rights import OWNER_HOLDS_RIGHT_SQL

JOB_FROM = """
FROM jobs j JOIN studies st ON st.id = j.study_id LEFT JOIN sites si ON si.id = j.site_id
JOIN users u ON u.id = j.owner_id
"""
JOB_SELECT = f"""
SELECT j.*, st.oid AS study_oid, si.oid AS site_oid, u.username AS owner_username,
       {OWNER_HOLDS_RIGHT_SQL} AS owner_holds_right
{JOB_FROM}"""


async def get_owned_job(conn: asyncpg.Connection, raw_uuid: str, user_id: int | None) -> asyncpg.Record:
    """The job if ``user_id`` created it and still holds the right that made it; otherwise
    ``invalidUuid``, exactly as for an unknown job."""
    job_uuid = parse_job_uuid(raw_uuid)
    row = await conn.fetchrow(JOB_SELECT + " WHERE j.uuid = $1", job_uuid)
    if row is None or user_id is None or row["owner_id"] != user_id or not row["owner_holds_right"]:
        raise ApiError("invalidUuid", {"jobUuid": raw_uuid[:64]})
    return row


async def get_job(conn: asyncpg.Connection, job_uuid: UUID) -> asyncpg.Record:
    """Any job (an operator's view); ``invalidUuid`` when there is none."""
    row = await conn.fetchrow(JOB_SELECT + " WHERE j.uuid = $1", job_uuid)
    if row is None:
        raise ApiError("invalidUuid", {"jobUuid": str(job_uuid)})
    return row


OWNED_LIST_SQL = f"""{JOB_SELECT}
WHERE j.owner_id = $1 AND ($2::bigint IS NULL OR j.study_id = $2) AND ($3::bigint IS NULL OR j.site_id = $3)
  -- Status and download refuse a job whose right has ended: the list leaves it out too.
  AND {OWNER_HOLDS_RIGHT_SQL}
ORDER BY j.created_at DESC, j.uuid
LIMIT $4 OFFSET $5
"""


async def list_owned(
    conn: asyncpg.Connection,
    user_id: int | None,
    study_id: int | None,
    site_id: int | None,
    page: int,
    size: int,
) -> list[asyncpg.Record]:
    """The owner's jobs, newest first, where the owner still holds the right that made them."""
    rows: list[asyncpg.Record] = await conn.fetch(
        OWNED_LIST_SQL, user_id, study_id, site_id, size, (page - 1) * size
    )
    return rows


@dataclass(frozen=True)
class JobFilters:
    """An operator's filters over every job (each None: not filtered)."""

    status: str | None = None
    job_type: str | None = None
    study_oid: str | None = None
    site_oid: str | None = None
    owner: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None

    def args(self) -> tuple[object, ...]:
        return (self.status, self.job_type, self.study_oid, self.site_oid, self.owner,
                self.created_from, self.created_to)  # fmt: skip


FILTERED = """
WHERE ($1::text IS NULL OR j.status = $1) AND ($2::text IS NULL OR j.type = $2)
  AND ($3::text IS NULL OR st.oid = $3) AND ($4::text IS NULL OR si.oid = $4)
  AND ($5::text IS NULL OR u.username = $5)
  AND ($6::timestamptz IS NULL OR j.created_at >= $6) AND ($7::timestamptz IS NULL OR j.created_at < $7)
"""


async def list_filtered(
    conn: asyncpg.Connection, filters: JobFilters, page: int, size: int
) -> tuple[int, list[asyncpg.Record]]:
    """Every job the filters let through, newest first: (how many in all, this page's rows)."""
    total = await conn.fetchval("SELECT count(*) " + JOB_FROM + FILTERED, *filters.args())
    rows = await conn.fetch(
        JOB_SELECT + FILTERED + " ORDER BY j.created_at DESC, j.uuid LIMIT $8 OFFSET $9",
        *filters.args(), size, (page - 1) * size,
    )  # fmt: skip
    return total, rows


async def quota_reached(conn: asyncpg.Connection, owner_id: int, max_active: int) -> bool:
    """Whether the owner already has ``max_active`` unfinished jobs: a submit with work to do
    before ``create_job`` (storing an upload) refuses early. Unlocked, so only a first look: the
    count under the owner's lock in ``create_job`` decides."""
    return bool(
        await conn.fetchval(
            "SELECT count(*) >= $2 FROM jobs WHERE owner_id = $1 AND status IN ('IN_QUEUE', 'IN_PROGRESS')",
            owner_id,
            max_active,
        )
    )


async def study_and_site_ids(
    conn: asyncpg.Connection, study_oid: str | None, site_oid: str | None
) -> tuple[int | None, int | None]:
    """The ids a job list under a study (and site) path filters by: ``studyNotExist`` /
    ``siteNotExist`` when the OIDs name nothing."""
    study_id = site_id = None
    params: dict[str, str] = {}
    if study_oid is not None:
        params["studyOid"] = study_oid
        study_id = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", study_oid)
        if study_id is None:
            raise ApiError("studyNotExist", params)
    if site_oid is not None:
        params["siteOid"] = site_oid
        site_id = await conn.fetchval(
            "SELECT id FROM sites WHERE oid = $1 AND study_id = $2", site_oid, study_id
        )
        if site_id is None:
            raise ApiError("siteNotExist", params)
    return study_id, site_id
