"""Background jobs: the row in Postgres (the source of truth) and the arq message that carries
the work. Shared by every job type (extracts, async bulk uploads).

Life of a job: ``create_job`` writes the row (``IN_QUEUE``) in the caller's transaction; after
commit, ``enqueue_job`` hands arq the job's UUID as arq's own job id (so enqueueing twice is
harmless). The worker ``claim_job``s it (``IN_PROGRESS``, one more attempt), beats a heartbeat,
and ``finish_job``es it (``COMPLETED``/``FAILED``/``CANCELLED``) only if its attempt is still the
current one. Redis only carries work: the sweeper (worker/maintenance.py) re-enqueues what
Postgres says is unfinished.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any
from uuid import UUID

import asyncpg
from arq.connections import ArqRedis
from arq.constants import result_key_prefix

from . import outbox
from .errors import ApiError
from .storage import Storage, StorageError

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
UNFINISHED = (IN_QUEUE, IN_PROGRESS)
FINAL_WITH_EVENT = (COMPLETED, FAILED)  # the statuses webhooks announce

JOBS_PATH = "/pages/auth/api/jobs"

# Job type -> (arq function name, the Settings field naming its queue): how the sweeper re-enqueues
# an unfinished job by name. Each job type adds its line here.
JOB_FUNCTIONS: dict[str, tuple[str, str]] = {
    EXTRACT_PARTICIPANTS: ("extract_participants_job", "extract_queue"),
    BULK_ADD_PARTICIPANTS: ("bulk_add_participants_job", "default_queue"),
}
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
) -> asyncpg.Record:
    """Insert the job row (``IN_QUEUE``); enqueue it with ``enqueue_job`` after the transaction commits."""
    job_uuid = job_uuid or uuid.uuid4()
    row = await conn.fetchrow(
        """
        INSERT INTO jobs (uuid, type, study_id, site_id, owner_id, file_name, object_key, params)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING *
        """,
        job_uuid,
        job_type,
        study_id,
        site_id,
        owner_id,
        file_name,
        object_key,
        params or {},
    )
    assert row is not None
    return row


async def enqueue_job(redis: ArqRedis, function_name: str, job_uuid: UUID, queue: str, *, rerun: bool = False) -> bool:
    """Hand the job to arq by function name, with the job UUID as arq's job id.

    arq refuses a job id it already holds (queued, running, or a kept result): that is the point,
    a job is never queued twice. ``rerun`` drops a kept result first (an admin retry of a finished
    job). Returns whether arq took a new message.
    """
    if rerun:
        await redis.delete(result_key_prefix + str(job_uuid))
    job = await redis.enqueue_job(function_name, str(job_uuid), _job_id=str(job_uuid), _queue_name=queue)
    return job is not None


async def claim_job(conn: asyncpg.Connection, job_uuid: UUID, max_attempts: int) -> asyncpg.Record | None:
    """Start an attempt: ``IN_PROGRESS``, attempts + 1. None if the job is finished (or unknown),
    so a message delivered twice, or after a cancel, does nothing."""
    return await conn.fetchrow(
        """
        UPDATE jobs SET status = 'IN_PROGRESS', attempts = attempts + 1, started_at = now(),
                        heartbeat_at = now(), rows_done = 0, error = NULL
        WHERE uuid = $1 AND status IN ('IN_QUEUE', 'IN_PROGRESS') AND attempts < $2
        RETURNING *
        """,
        job_uuid,
        max_attempts,
    )


async def heartbeat(conn: asyncpg.Connection, job_uuid: UUID, attempt: int, rows_done: int) -> bool:
    """Record progress; answer True if the job should stop (cancel requested or attempt superseded)."""
    row = await conn.fetchrow(
        """
        UPDATE jobs SET heartbeat_at = now(), rows_done = $3
        WHERE uuid = $1 AND attempts = $2 AND status = 'IN_PROGRESS'
        RETURNING cancel_requested
        """,
        job_uuid,
        attempt,
        rows_done,
    )
    return row is None or bool(row["cancel_requested"])


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
) -> bool:
    """Set the final status of an unfinished job, in one transaction with its webhook event.

    Only an unfinished job changes (a FAILED job is never later reported COMPLETED), and with
    ``attempt`` only if that attempt is still the current one. Returns whether the row changed.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            """
            UPDATE jobs SET status = $2, completed_at = t.now, heartbeat_at = t.now,
                            error = $3,
                            expires_at = CASE WHEN $2 = 'COMPLETED' THEN t.now + $4::interval END,
                            row_count = coalesce($5, row_count),
                            rows_done = coalesce($5, rows_done),
                            byte_size = coalesce($6, byte_size),
                            sha256 = coalesce($7, sha256),
                            object_key = coalesce($8, object_key),
                            result = coalesce($9, result)
            -- The wall clock now, not the transaction's start: a bulk job's insert runs in this transaction.
            FROM (SELECT clock_timestamp() AS now) t
            WHERE uuid = $1 AND status IN ('IN_QUEUE', 'IN_PROGRESS')
              AND ($10::int IS NULL OR attempts = $10)
            RETURNING uuid
            """,
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
        )
        if row is None:
            return False
        if status in FINAL_WITH_EVENT:
            await outbox.record_job_finished(conn, job_uuid)
    return True


async def get_owned_job(conn: asyncpg.Connection, raw_uuid: str, user_id: int | None) -> asyncpg.Record:
    """The job if ``user_id`` created it; otherwise ``invalidUuid``, exactly as for an unknown job."""
    job_uuid = parse_job_uuid(raw_uuid)
    row = await conn.fetchrow(JOB_SELECT + " WHERE j.uuid = $1", job_uuid)
    if row is None or user_id is None or row["owner_id"] != user_id:
        raise ApiError("invalidUuid", {"jobUuid": raw_uuid[:64]})
    return row


JOB_SELECT = """
SELECT j.*, st.oid AS study_oid, si.oid AS site_oid
FROM jobs j JOIN studies st ON st.id = j.study_id LEFT JOIN sites si ON si.id = j.site_id
"""


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def job_urls(base_url: str, job_uuid: UUID) -> tuple[str, str]:
    status_url = f"{base_url}{JOBS_PATH}/{job_uuid}"
    return status_url, status_url + "/downloadFile"


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

