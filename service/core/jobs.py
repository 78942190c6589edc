"""Background jobs: the row in Postgres (the source of truth) and the arq message that carries
the work. Shared by every job type (extracts, async bulk uploads).

Life of a job: ``create_job`` writes the row (``IN_QUEUE``) and its audit row in one statement; after
commit, ``job_queue.enqueue`` hands arq the job's UUID as arq's own job id (so enqueueing twice is
harmless). The worker claims an attempt (core/job_attempts.py: ``IN_PROGRESS``, one more attempt),
beats a heartbeat, and ``finish_job``es it (``COMPLETED``/``FAILED``/``CANCELLED``) only if its
attempt is still the current one. Redis only carries work: the sweeper (worker/maintenance.py)
re-enqueues what Postgres says is unfinished.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from service.core.errors import ApiError
from service.core.roles import ALLOWED, Action
from service.core.storage import Storage, StorageError
from service.core.urls import job_urls
from service.core.webhooks import outbox
from service.settings import Settings

log = logging.getLogger("participants.jobs")

EXTRACT_PARTICIPANTS = "EXTRACT_PARTICIPANTS"
BULK_ADD_PARTICIPANTS = "BULK_ADD_PARTICIPANTS"

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
EXPIRED = "EXPIRED"
DELETED = "DELETED"
JOB_STATUSES = (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, EXPIRED, DELETED)
UNFINISHED = (IN_QUEUE, IN_PROGRESS)
FINAL_WITH_EVENT = (COMPLETED, FAILED)  # the statuses webhooks announce

# The arq function names: the worker registers its functions under these names
# (``func(fn, name=...)``) and everything else enqueues by them, never importing worker code.
EXTRACT_FUNCTION = "extract_participants_job"
BULK_FUNCTION = "bulk_add_participants_job"
# Job type -> (arq function name, the Settings field naming its queue): how a submit, an admin
# retry and the sweeper enqueue a job of that type. Each job type adds its line here.
JOB_FUNCTIONS: dict[str, tuple[str, str]] = {
    EXTRACT_PARTICIPANTS: (EXTRACT_FUNCTION, "extract_queue"),
    BULK_ADD_PARTICIPANTS: (BULK_FUNCTION, "default_queue"),
}
JOB_TYPES = tuple(JOB_FUNCTIONS)
QUOTA_RETRY_AFTER = "30"  # seconds: a job of the owner's is likely to have finished by then
# What an admin may run again once FAILED. A bulk job's upload is deleted when the job ends (it holds
# personal data), so a failed bulk upload is uploaded again by its owner, not retried.
RETRYABLE_TYPES = frozenset({EXTRACT_PARTICIPANTS})


def parse_job_uuid(raw: str) -> UUID:
    """A job UUID from a path; anything malformed is ``invalidUuid`` (404), as if unknown."""
    try:
        if len(raw) > 64:
            raise ValueError
        return UUID(raw)
    except ValueError:
        raise ApiError("invalidUuid", {"jobUuid": raw[:64]}) from None


# The SQLSTATE enforce_job_quota (migration 0015) raises beyond the owner's quota.
QUOTA_SQLSTATE = "P0429"

CREATE_JOB_SQL = """
WITH job AS (
    INSERT INTO jobs (uuid, type, study_id, site_id, owner_id, file_name, object_key, params)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING *
), audited AS (
    -- The submit's audit row, in the job's own statement (as a participant's is in its insert).
    INSERT INTO audit_log (user_id, username, action, study_id, site_id, job_uuid, details)
    SELECT owner_id, $10, $11, study_id, site_id, uuid, $12 FROM job WHERE $11::text IS NOT NULL
)
SELECT * FROM job WHERE enforce_job_quota(owner_id, uuid, $9)
"""


@dataclass(frozen=True)
class Submitted:
    """The audit row of a submit: who (by name; the owner is the user id), which act, what."""

    username: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)


async def create_job(
    conn: asyncpg.Connection,
    *,
    job_type: str,
    study_id: int,
    site_id: int | None,
    owner_id: int,
    file_name: str | None = None,
    object_key: str | None = None,
    params: dict[str, Any] | None = None,
    job_uuid: UUID | None = None,
    max_active: int | None = None,
    audit: Submitted | None = None,
) -> asyncpg.Record:
    """Insert the job row (``IN_QUEUE``) and its submit's ``audit`` row in one statement; enqueue it
    with ``enqueue`` after it commits.

    ``max_active``: the owner's quota of unfinished jobs (every submit passes the configured one);
    beyond it 429 ``tooManyJobs``. The owner's row is locked for the count (enforce_job_quota), so
    concurrent submits of one user cannot overshoot it together; other users are not held up. The
    lock lasts until the commit: run outside a transaction (a submit does), the statement is its
    own transaction and the lock is held for the count and the commit, no round trip more.
    """
    job_uuid = job_uuid or uuid.uuid4()
    try:
        row = await conn.fetchrow(
            CREATE_JOB_SQL,
            job_uuid,
            job_type,
            study_id,
            site_id,
            owner_id,
            file_name,
            object_key,
            params or {},
            max_active,
            audit.username if audit else None,
            audit.action if audit else None,
            audit.details if audit else {},
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == QUOTA_SQLSTATE:
            raise quota_error(max_active) from None
        raise
    assert row is not None
    return row


def quota_error(max_active: int | None) -> ApiError:
    return ApiError("tooManyJobs", {"maxActiveJobs": max_active}, headers={"Retry-After": QUOTA_RETRY_AFTER})


async def quota_reached(conn: asyncpg.Connection, owner_id: int, max_active: int) -> bool:
    """Whether the owner already has ``max_active`` unfinished jobs: a submit with work to do
    before ``create_job`` (storing an upload) refuses early. Unlocked, so only a first look: the
    count under the owner's lock in ``create_job`` decides."""
    return await conn.fetchval(
        "SELECT count(*) >= $2 FROM jobs WHERE owner_id = $1 AND status IN ('IN_QUEUE', 'IN_PROGRESS')",
        owner_id,
        max_active,
    )


async def finish_job(
    conn: asyncpg.Connection,
    job_uuid: UUID,
    status: str,
    *,
    attempt: int | None = None,
    error: str | None = None,
    retention: dt.timedelta | None = None,
    row_count: int | None = None,
    byte_size: int | None = None,
    sha256: str | None = None,
    object_key: str | None = None,
    result: dict[str, Any] | None = None,
    rows_expected: int | None = None,
    unless_cancelled: bool = False,
) -> bool:
    """Set the final status of an unfinished job and write its webhook event, in one statement.

    Only an unfinished job changes (a FAILED job is never later reported COMPLETED), with
    ``attempt`` only if that attempt is still the current one, and with ``unless_cancelled`` only
    if no cancel was requested meanwhile. Returns whether the row changed. One statement: one
    round trip and atomic on its own, no transaction to open and commit around it (inside a
    caller's transaction, e.g. a bulk job's insert, it commits with it).
    """
    row = await conn.fetchrow(
        FINISH_SQL,
        job_uuid,
        status,
        error[:1000] if error else None,
        retention or dt.timedelta(0),
        row_count,
        byte_size,
        sha256,
        object_key,
        result,
        attempt,
        rows_expected,
        unless_cancelled,
    )
    assert row is not None
    return bool(row["changed"])


FINISH_SQL = f"""
WITH done AS (
    UPDATE jobs SET status = $2, completed_at = t.now, heartbeat_at = t.now,
                    error = $3,
                    expires_at = CASE WHEN $2 = 'COMPLETED' THEN t.now + $4::interval END,
                    row_count = coalesce($5, row_count),
                    rows_done = coalesce($5, rows_done),
                    byte_size = coalesce($6, byte_size),
                    sha256 = coalesce($7, sha256),
                    object_key = coalesce($8, object_key),
                    result = coalesce($9, result),
                    rows_expected = coalesce($11, rows_expected)
    -- The wall clock now, not the transaction's start: a bulk job's insert runs in its transaction.
    FROM (SELECT clock_timestamp() AS now) t
    WHERE uuid = $1 AND status IN ('IN_QUEUE', 'IN_PROGRESS')
      AND ($10::int IS NULL OR attempts = $10)
      AND NOT ($12::bool AND cancel_requested)
    RETURNING jobs.*
), {outbox.JOB_EVENT_CTES}
-- "notified" is named so that it runs (a plain SELECT in WITH runs only when read).
SELECT (SELECT count(*) FROM done) AS changed, (SELECT count(*) FROM notified) AS notified
"""


async def get_owned_job(conn: asyncpg.Connection, raw_uuid: str, user_id: int | None) -> asyncpg.Record:
    """The job if ``user_id`` created it and still holds the right that made it; otherwise
    ``invalidUuid``, exactly as for an unknown job."""
    job_uuid = parse_job_uuid(raw_uuid)
    row = await conn.fetchrow(JOB_SELECT + " WHERE j.uuid = $1", job_uuid)
    if row is None or user_id is None or row["owner_id"] != user_id or not row["owner_holds_right"]:
        raise ApiError("invalidUuid", {"jobUuid": raw_uuid[:64]})
    return row


# What a job's owner must still hold, at the job's study and site, to see its status and file, and
# for an extract to start: the right that created it (a bulk result needs a role there). A role
# revoked, a user disabled or unknown ends access to what the role made.
RIGHT_FOR_TYPE = {EXTRACT_PARTICIPANTS: Action.EXTRACT, BULK_ADD_PARTICIPANTS: Action.LIST}


def _owner_holds_right_sql() -> str:
    """Whether a job's owner still holds the right that made it, as an SQL condition on ``jobs j``:
    the owner is not disabled and has a role at the job's study and site that ``roles.authorize``
    allows ``RIGHT_FOR_TYPE`` there. Written from the same allow table (roles.ALLOWED) and the
    same rule for a study-level LIST (any role in the study); tests/test_access_revoked.py checks
    that it agrees with ``authorize`` for every role and level. As SQL, a list filters by it in its
    one query (paging counts only what is shown) and a claim or a lookup reads it with the row."""

    def roles(names: frozenset[str]) -> str:
        return "ARRAY[" + ", ".join(f"'{n}'" for n in sorted(names)) + "]::text[]" if names else "ARRAY[]::text[]"

    cases = []
    for job_type, action in sorted(RIGHT_FOR_TYPE.items()):
        at_study, at_site = ALLOWED[action]
        held = (
            f"(r.site_id IS NULL AND r.role = ANY({roles(at_study)}))"
            f" OR (r.site_id = j.site_id AND r.role = ANY({roles(at_site)}))"
        )
        if action is Action.LIST:
            held += " OR j.site_id IS NULL"  # at study level any role in the study may list
        cases.append(f"WHEN '{job_type}' THEN EXISTS (SELECT 1 FROM role_assignments r"
                     f" WHERE r.user_id = j.owner_id AND r.study_id = j.study_id AND ({held}))")
    return (
        "(NOT (SELECT disabled FROM users WHERE id = j.owner_id)"
        f" AND CASE j.type {' '.join(cases)} ELSE true END)"
    )


OWNER_HOLDS_RIGHT_SQL = _owner_holds_right_sql()


JOB_SELECT = f"""
SELECT j.*, st.oid AS study_oid, si.oid AS site_oid, u.username AS owner_username,
       {OWNER_HOLDS_RIGHT_SQL} AS owner_holds_right
FROM jobs j JOIN studies st ON st.id = j.study_id LEFT JOIN sites si ON si.id = j.site_id
JOIN users u ON u.id = j.owner_id
"""


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


class JobProgress(BaseModel):
    rowsDone: int
    rowsExpected: int | None


class JobView(BaseModel):
    """A job as its owner sees it (``job_json`` fills it)."""

    jobUuid: UUID
    type: str
    status: str
    studyOid: str
    siteOid: str | None
    createdAt: str | None
    startedAt: str | None
    completedAt: str | None
    attempts: int
    progress: JobProgress
    rowCount: int | None
    byteSize: int | None
    sha256: str | None
    fileName: str | None
    expiresAt: str | None
    error: str | None
    statusUrl: str
    downloadUrl: str
    result: dict[str, Any] | None = None


class JobList(BaseModel):
    jobs: list[JobView]
    page: int
    pageSize: int


class JobSubmitted(BaseModel):
    """The JSON answer to a submitted job (a client that asks for JSON rather than OC4's text)."""

    jobUuid: UUID
    status: str
    statusUrl: str
    downloadUrl: str


def job_json(row: asyncpg.Record, base_url: str) -> dict[str, Any]:
    """The API view of a job: no personal data is ever stored on it, so all of it may be shown."""
    status_url, download_url = job_urls(base_url, row["uuid"])
    data: dict[str, Any] = {
        "jobUuid": str(row["uuid"]),
        "type": row["type"],
        "status": row["status"],
        "studyOid": row["study_oid"],
        "siteOid": row["site_oid"],
        "createdAt": _iso(row["created_at"]),
        "startedAt": _iso(row["started_at"]),
        "completedAt": _iso(row["completed_at"]),
        "attempts": row["attempts"],
        "progress": {"rowsDone": row["rows_done"], "rowsExpected": row["rows_expected"]},
        "rowCount": row["row_count"],
        "byteSize": row["byte_size"],
        "sha256": row["sha256"],
        "fileName": row["file_name"],
        "expiresAt": _iso(row["expires_at"]),
        "error": row["error"],
        "statusUrl": status_url,
        "downloadUrl": download_url,
    }
    if row["result"] is not None:
        data["result"] = row["result"]
    return data


EXPIRED_SELECT = """
SELECT uuid, object_key FROM jobs WHERE status = 'COMPLETED' AND expires_at <= now()
ORDER BY expires_at LIMIT $1
"""


async def expire_due_jobs(conn: asyncpg.Connection, storage: Storage, limit: int) -> list[UUID]:
    """COMPLETED jobs past retention: delete the file (and any partial upload), mark the job EXPIRED.

    Used by the worker's expiry cron and the admin's purge. Safe to run again and concurrently: a
    missing file is already gone, and a file storage cannot delete now keeps its job COMPLETED
    (downloads already answer 410) for the next run.
    """
    expired: list[UUID] = []
    for row in await conn.fetch(EXPIRED_SELECT, limit):
        if row["object_key"]:
            try:
                await storage.delete(row["object_key"])
                await storage.discard_partials(row["object_key"])
            except (StorageError, OSError) as exc:
                log.warning("could not delete an expired file", extra={"job_uuid": str(row["uuid"]), "error": type(exc).__name__})
                continue
        done = await conn.fetchval(
            "UPDATE jobs SET status = 'EXPIRED' WHERE uuid = $1 AND status = 'COMPLETED' RETURNING uuid", row["uuid"]
        )
        if done is not None:
            expired.append(done)
    return expired

