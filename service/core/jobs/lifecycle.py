"""Every change of a job's status, each one statement or one short transaction: create (with the
submit's audit row and the owner's quota), complete, fail, cancel, retry, delete the file, expire.

A final status is written only to an unfinished job (a FAILED job is never later reported
COMPLETED), by the attempt that is still current, and with its webhook event in the same statement.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from uuid import UUID

import asyncpg

from service.core import audit
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.jobs.model import (
    CANCELLED,
    COMPLETED,
    DELETED,
    FAILED,
    IN_QUEUE,
    RETRY_AFTER_SECONDS,
    RETRYABLE_TYPES,
    UNFINISHED,
    JobFile,
    NewJob,
)
from service.core.storage import Storage, StorageError, StorageUnavailable
from service.core.webhooks import outbox

log = logging.getLogger("participants.jobs")

QUOTA_RETRY_AFTER = "30"  # seconds: a job of the owner's is likely to have finished by then
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


async def create_job(conn: asyncpg.Connection, job: NewJob) -> asyncpg.Record:
    """Insert the job row (``IN_QUEUE``) and its submit's audit row in one statement; enqueue it
    with ``queue.enqueue`` after it commits.

    Beyond ``job.max_active`` unfinished jobs: 429 ``tooManyJobs``. The owner's row is locked for
    the count (enforce_job_quota), so concurrent submits of one user cannot overshoot it together;
    other users are not held up. The lock lasts until the commit: run outside a transaction (a
    submit does), the statement is its own transaction and the lock is held for the count and the
    commit, no round trip more.
    """
    submit = job.audit
    try:
        row = await conn.fetchrow(
            CREATE_JOB_SQL,
            job.job_uuid, job.job_type, job.study_id, job.site_id, job.owner_id, job.file_name,
            job.object_key, job.params, job.max_active,
            submit.username if submit else None, submit.action if submit else None,
            submit.details if submit else {},
        )  # fmt: skip
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == QUOTA_SQLSTATE:
            raise quota_error(job.max_active) from None
        raise
    assert row is not None
    return row


def quota_error(max_active: int | None) -> ApiError:
    return ApiError("tooManyJobs", {"maxActiveJobs": max_active}, headers={"Retry-After": QUOTA_RETRY_AFTER})


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
                    rows_expected = coalesce($11, rows_expected),
                    rows_estimated = rows_estimated AND $11::bigint IS NULL
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


async def _finish(
    conn: asyncpg.Connection, job_uuid: UUID, status: str, attempt: int | None, *, error: str | None = None,
    retention: dt.timedelta | None = None, made: JobFile | None = None, unless_cancelled: bool = False,
) -> bool:  # fmt: skip
    """Set the final status of an unfinished job and write its webhook event, in one statement.

    With ``attempt`` only if that attempt is still the current one (None: whichever, for a job no
    worker holds), with ``unless_cancelled`` only if no cancel was requested meanwhile. Returns
    whether the row changed. One statement: one round trip and atomic on its own (inside a
    caller's transaction, e.g. a bulk job's insert, it commits with it).
    """
    made = made or JobFile()
    row = await conn.fetchrow(
        FINISH_SQL,
        job_uuid, status, error[:1000] if error else None, retention or dt.timedelta(0),
        made.row_count, made.byte_size, made.sha256, made.object_key, made.result, attempt,
        made.rows_expected, unless_cancelled,
    )  # fmt: skip
    assert row is not None
    return bool(row["changed"])


async def complete_job(
    conn: asyncpg.Connection, job_uuid: UUID, attempt: int, made: JobFile, retention: dt.timedelta
) -> bool:
    """``attempt`` made ``made``: the job is COMPLETED, its file kept for ``retention``, unless the
    attempt was superseded or a cancel was requested meanwhile (then False, and nothing changed)."""
    return await _finish(
        conn, job_uuid, COMPLETED, attempt, retention=retention, made=made, unless_cancelled=True
    )


async def fail_job(
    conn: asyncpg.Connection, job_uuid: UUID, error: str, attempt: int | None = None, *,
    result: dict[str, Any] | None = None,
) -> bool:  # fmt: skip
    """The job is FAILED with ``error`` (a kind of failure, never data) and, for a bulk upload's
    file-level failure, the failure body as its ``result``. ``attempt`` None: a job no worker holds
    (a sweeper giving up, a test)."""
    return await _finish(conn, job_uuid, FAILED, attempt, error=error, made=JobFile(result=result))


async def release_attempt(conn: asyncpg.Connection, job_uuid: UUID, attempt: int, error: str) -> bool:
    """``attempt`` stopped on an outage (Postgres, Redis or storage), not on its input: the job is
    ``IN_QUEUE`` again, its attempt counted and ``error`` kept as the last one seen, so the next
    attempt may claim it at once instead of waiting for its heartbeat to go stale. False if the
    attempt was no longer the current one (nothing changed)."""
    status = await conn.execute(
        """UPDATE jobs SET status = 'IN_QUEUE', error = $3, heartbeat_at = now()
           WHERE uuid = $1 AND attempts = $2 AND status = 'IN_PROGRESS'""",
        job_uuid, attempt, error[:1000],
    )  # fmt: skip
    return bool(status == "UPDATE 1")


async def cancel_attempt(conn: asyncpg.Connection, job_uuid: UUID, attempt: int | None) -> bool:
    """The job ends CANCELLED (its attempt stopped on a cancel request, or no attempt ran yet)."""
    return await _finish(conn, job_uuid, CANCELLED, attempt, error="cancelled")


async def _locked(conn: asyncpg.Connection, job_uuid: UUID) -> asyncpg.Record:
    job = await conn.fetchrow("SELECT * FROM jobs WHERE uuid = $1 FOR UPDATE", job_uuid)
    if job is None:
        raise ApiError("invalidUuid", {"jobUuid": str(job_uuid)})
    return job


RETRY_SQL = """
UPDATE jobs SET status = 'IN_QUEUE', attempts = 0, error = NULL, started_at = NULL, completed_at = NULL,
                heartbeat_at = NULL, rows_done = 0, cancel_requested = false
WHERE uuid = $1
"""


async def retry_job(conn: asyncpg.Connection, actor: Actor, job_uuid: UUID) -> asyncpg.Record:
    """A FAILED job is IN_QUEUE again from scratch (same UUID, a fresh set of attempts), audited;
    the caller enqueues it after the commit. Returns the row as it was."""
    async with conn.transaction():
        job = await _locked(conn, job_uuid)
        if job["status"] != FAILED:
            raise ApiError("jobNotRetryable", {"jobUuid": str(job_uuid), "status": job["status"]})
        if job["type"] not in RETRYABLE_TYPES:
            raise ApiError(
                "jobNotRetryable", {"jobUuid": str(job_uuid), "status": job["status"], "type": job["type"]}
            )
        await conn.execute(RETRY_SQL, job_uuid)
        details = {"previousAttempts": job["attempts"], "previousError": (job["error"] or "")[:200]}
        await audit.record_on_job(conn, actor, "admin.job.retry", job, details)
    return job


async def cancel_job(conn: asyncpg.Connection, actor: Actor, job_uuid: UUID) -> None:
    """IN_QUEUE: CANCELLED now. IN_PROGRESS: the flag is set and the worker stops at its next chunk."""
    async with conn.transaction():
        job = await _locked(conn, job_uuid)
        if job["status"] not in UNFINISHED:
            raise ApiError("jobNotCancellable", {"jobUuid": str(job_uuid), "status": job["status"]})
        await conn.execute("UPDATE jobs SET cancel_requested = true WHERE uuid = $1", job_uuid)
        if job["status"] == IN_QUEUE:  # no worker has it: final now (a late arq message finds it done)
            await cancel_attempt(conn, job_uuid, None)
        await audit.record_on_job(conn, actor, "admin.job.cancel", job, {"statusBefore": job["status"]})


async def delete_file(conn: asyncpg.Connection, storage: Storage, actor: Actor, job: asyncpg.Record) -> None:
    """The owner deletes a finished job's file; the row stays, status ``DELETED`` (audited)."""
    params = {"jobUuid": str(job["uuid"])}
    if job["status"] in UNFINISHED:
        raise ApiError("jobInProgress", params, headers={"Retry-After": RETRY_AFTER_SECONDS})
    if job["status"] == DELETED:
        return
    if job["object_key"]:
        try:
            await storage.delete(job["object_key"])
            await storage.discard_partials(job["object_key"])
        except StorageUnavailable:
            raise ApiError("serviceUnavailable", params, headers={"Retry-After": "5"}) from None
    async with conn.transaction():
        await conn.execute(
            "UPDATE jobs SET status = 'DELETED', expires_at = least(expires_at, now()) WHERE uuid = $1",
            job["uuid"],
        )
        await audit.record_on_job(conn, actor, "job.delete", job)


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
                extra: dict[str, Any] = {"job_uuid": str(row["uuid"]), "error": type(exc).__name__}
                log.warning("could not delete an expired file", extra=extra)
                continue
        done = await conn.fetchval(
            "UPDATE jobs SET status = 'EXPIRED' WHERE uuid = $1 AND status = 'COMPLETED' RETURNING uuid",
            row["uuid"],
        )
        if done is not None:
            expired.append(done)
    return expired


async def withdraw(conn: asyncpg.Connection, job_uuid: UUID) -> None:
    """Remove a job just created that could not be enqueued (nobody was told its UUID)."""
    await conn.execute("DELETE FROM jobs WHERE uuid = $1 AND status = 'IN_QUEUE'", job_uuid)
