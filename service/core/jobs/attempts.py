"""A job's attempts: claiming one, keeping it alive, and when another worker may take over.

A worker claims an attempt in Postgres (``claim_job``: ``IN_PROGRESS``, attempts + 1) and keeps it
alive with its heartbeat (``beat_jobs``: one statement per tick for every job the worker runs, see
worker/heartbeats.py). The attempt number fences every later write (progress, final status), so a
superseded attempt changes nothing.

Who may claim: a job ``IN_QUEUE``, or ``IN_PROGRESS`` with a heartbeat older than its type's stale
threshold (its worker died, or its event loop is stuck). A job whose current attempt is alive is
never taken over, however often its message is delivered: arq may deliver twice, and the sweeper
clears arq's in-progress key of any job Postgres says is stuck, without knowing whether a live
worker is about to claim it. Delivery is arq's; who runs the job is decided here, in one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from service.core.jobs.lifecycle import fail_job
from service.core.jobs.rights import OWNER_HOLDS_RIGHT_SQL
from service.settings import Settings


def stale_after(extract_param: str, other_param: str) -> str:
    """SQL: this ``jobs`` row's heartbeat is older than its type's threshold (bind parameters in seconds)."""
    return (
        "coalesce(heartbeat_at, created_at) < now() - (CASE WHEN type = 'EXTRACT_PARTICIPANTS'"
        f" THEN {extract_param}::float8 ELSE {other_param}::float8 END) * interval '1 second'"
    )


# $2, $3: the stale thresholds (extracts, others) of ``stale_args``.
CLAIMABLE = f"(status = 'IN_QUEUE' OR (status = 'IN_PROGRESS' AND {stale_after('$2', '$3')}))"


def stale_args(settings: Settings) -> tuple[float, float]:
    return settings.extract_stale_seconds, settings.job_stale_seconds


async def claim_job(conn: asyncpg.Connection, job_uuid: UUID, settings: Settings) -> asyncpg.Record | None:
    """Start an attempt: ``IN_PROGRESS``, attempts + 1; the row as ``store.JOB_SELECT`` reads it.
    None if the job is finished (or unknown), out of attempts, or running elsewhere with a fresh
    heartbeat: a message delivered twice, or after a cancel, does nothing."""
    return await conn.fetchrow(
        f"""
        UPDATE jobs j SET status = 'IN_PROGRESS', attempts = attempts + 1, started_at = now(),
                          heartbeat_at = now(), rows_done = 0, error = NULL, phase = NULL
        WHERE uuid = $1 AND {CLAIMABLE} AND attempts < $4
        RETURNING *,
            -- What store.JOB_SELECT adds, with the owner's right checked before the job starts.
            (SELECT username FROM users WHERE id = owner_id) AS owner_username,
            (SELECT oid FROM studies WHERE id = study_id) AS study_oid,
            (SELECT oid FROM sites WHERE id = site_id) AS site_oid,
            {OWNER_HOLDS_RIGHT_SQL} AS owner_holds_right
        """,
        job_uuid,
        *stale_args(settings),
        settings.job_max_attempts,
    )


async def fail_if_exhausted(conn: asyncpg.Connection, job_uuid: UUID, settings: Settings) -> bool:
    """A claimable job whose attempts are used up becomes FAILED (with its webhook event). A job
    running its last attempt on a live worker is left to finish."""
    attempts = await conn.fetchval(
        f"SELECT attempts FROM jobs WHERE uuid = $1 AND {CLAIMABLE}", job_uuid, *stale_args(settings)
    )
    if attempts is None or attempts < settings.job_max_attempts:
        return False
    return await fail_job(conn, job_uuid, f"gave up after {attempts} attempts")


async def claim_or_give_up(
    conn: asyncpg.Connection, job_uuid: UUID, settings: Settings
) -> asyncpg.Record | None:
    """The job, claimed for a new attempt; None when it is not to run now (finished, alive
    elsewhere, or out of attempts, in which case it ends FAILED)."""
    job = await claim_job(conn, job_uuid, settings)
    if job is None:
        await fail_if_exhausted(conn, job_uuid, settings)
    return job


@dataclass
class Beat:
    """What a running attempt reports with each heartbeat, and what the heartbeat tells it back."""

    job_uuid: UUID
    attempt: int
    rows_done: int = 0
    rows_expected: int | None = None
    estimated: bool = False  # rows_expected is an estimate (labelled so on the wire)
    phase: str | None = None  # what the attempt is doing: see sql/0019_job_phase.sql
    stop: bool = False  # cancel requested, or the attempt superseded: stop at the next chunk


BEAT_SQL = """
WITH beat (uuid, attempt, rows_done, rows_expected, estimated, phase) AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::bigint[], $5::bool[], $6::text[])
), fresh AS (
    -- A row locked right now is its own attempt finishing (or another claiming it): skipped, so
    -- one job's commit never holds up the heartbeat of the others.
    UPDATE jobs j SET heartbeat_at = now(), rows_done = b.rows_done,
                      rows_expected = coalesce(b.rows_expected, j.rows_expected),
                      rows_estimated = CASE WHEN b.rows_expected IS NULL THEN j.rows_estimated ELSE b.estimated END,
                      phase = coalesce(b.phase, j.phase)
    FROM beat b
    WHERE j.uuid = b.uuid AND j.attempts = b.attempt AND j.status = 'IN_PROGRESS'
      AND j.uuid IN (SELECT uuid FROM jobs WHERE uuid = ANY($1::uuid[]) FOR UPDATE SKIP LOCKED)
)
-- Read from the snapshot before the update: which attempts are still current and not cancelled.
SELECT b.uuid FROM beat b JOIN jobs j ON j.uuid = b.uuid
WHERE j.attempts = b.attempt AND j.status = 'IN_PROGRESS' AND NOT j.cancel_requested
"""


async def beat_jobs(conn: asyncpg.Connection, beats: Sequence[Beat]) -> None:
    """Record every beat's progress and heartbeat in one round trip; set ``stop`` on each attempt
    that is superseded, finished or asked to cancel."""
    if not beats:
        return
    rows = await conn.fetch(
        BEAT_SQL,
        [b.job_uuid for b in beats],
        [b.attempt for b in beats],
        [b.rows_done for b in beats],
        [b.rows_expected for b in beats],
        [b.estimated for b in beats],
        [b.phase for b in beats],
    )
    going_on = {r["uuid"] for r in rows}
    for b in beats:
        if b.job_uuid not in going_on:
            b.stop = True


PHASE_SQL = """
UPDATE jobs SET phase = $3, rows_done = $4, rows_expected = $5, rows_estimated = $6, heartbeat_at = now()
WHERE uuid = $1 AND attempts = $2 AND status = 'IN_PROGRESS'
"""


async def enter_phase(conn: asyncpg.Connection, beat: Beat, phase: str) -> None:
    """Write ``beat`` at once with its new ``phase`` (the heartbeat would wait up to a tick): the
    status shows the change when it happens, e.g. a bulk upload starting its long commit."""
    beat.phase = phase
    await conn.execute(
        PHASE_SQL, beat.job_uuid, beat.attempt, phase, beat.rows_done, beat.rows_expected, beat.estimated
    )
