"""Who runs a job: a live attempt is never taken over, a dead worker's message is delivered again,
and the heartbeat tells a running attempt when to stop (service/core/jobs/attempts.py, the sweeper)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from arq.connections import create_pool as create_arq_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix

from service.core.jobs import attempts
from service.core.jobs.attempts import Beat, beat_jobs
from service.core.redis import redis_settings
from service.worker.context import shutdown, startup
from service.worker.extract import extract_participants_job
from tests.bulk_files import csv_bytes
from tests.test_admin_ops import _job as make_job
from tests.test_bulk_async import submit as submit_bulk
from tests.test_extract import run_jobs, seed_site, submit
from tests.test_extract_reliability import _job, _sweep
from tests.test_webhooks_support import run_default_worker
from tests.world import SITE_A


async def _age(pool: asyncpg.Pool, job_uuid: str) -> None:
    """Older than ``job_requeue_after_seconds``: the sweeper looks after it now."""
    await pool.execute(
        "UPDATE jobs SET created_at = now() - interval '1 minute' WHERE uuid = $1", UUID(job_uuid)
    )


async def test_a_live_attempt_is_never_taken_over(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 5)
    job_uuid = await submit(client, world)
    # Attempt 1 runs on a worker that beats; the message is delivered again (arq may, and the
    # sweeper drops in-progress keys without knowing who holds them).
    await pool.execute(
        "UPDATE jobs SET status = 'IN_PROGRESS', attempts = 1, heartbeat_at = now() WHERE uuid = $1",
        UUID(job_uuid),
    )
    ctx: dict[str, Any] = {"settings": settings}
    await startup(ctx)
    try:
        assert await extract_participants_job(ctx, job_uuid) == "skipped"
        assert ((job := await _job(pool, job_uuid))["status"], job["attempts"]) == ("IN_PROGRESS", 1)
        # Its last attempt too: a live one is left to finish, not FAILED for want of attempts.
        await pool.execute(
            "UPDATE jobs SET attempts = $2 WHERE uuid = $1", UUID(job_uuid), settings.job_max_attempts
        )
        assert await extract_participants_job(ctx, job_uuid) == "skipped"
        assert (await _job(pool, job_uuid))["status"] == "IN_PROGRESS"
        # Once its heartbeat is older than the stale threshold, its worker is gone: the next one runs it.
        await pool.execute(
            "UPDATE jobs SET attempts = 1, heartbeat_at = now() - $2::float8 * interval '1 second' WHERE uuid = $1",
            UUID(job_uuid),
            settings.extract_stale_seconds + 1,
        )
        assert await extract_participants_job(ctx, job_uuid) == "COMPLETED"
    finally:
        await shutdown(ctx)
    assert ((job := await _job(pool, job_uuid))["status"], job["attempts"], job["row_count"]) == (
        "COMPLETED",
        2,
        5,
    )


async def test_a_message_a_dead_worker_took_before_its_claim_runs_again(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 5)
    job_uuid = await submit(client, world)
    # A worker took the message (arq's in-progress key, kept for the job timeout + 10 s) and died
    # before its claim in Postgres: the row still says IN_QUEUE with no attempt.
    redis = await create_arq_pool(redis_settings(settings))
    try:
        await redis.psetex(in_progress_key_prefix + job_uuid, 3_600_000, b"1")
        await _age(pool, job_uuid)
        assert await _sweep(settings) == 0  # arq still holds the message: nothing new is queued...
        assert not await redis.exists(in_progress_key_prefix + job_uuid)  # ...but any worker may take it now
    finally:
        await redis.aclose()
    await asyncio.wait_for(run_jobs(settings), 30)  # a burst worker would wait forever for a held message
    assert ((job := await _job(pool, job_uuid))["status"], job["attempts"]) == ("COMPLETED", 1)


async def test_a_delivery_that_failed_before_its_claim_is_delivered_again(
    client, world, pool, settings, monkeypatch
):
    await world.standard()
    job_uuid = await submit_bulk(client, world, csv_bytes("ParticipantID", "R-1", "R-2"))

    async def no_connection(*args: Any) -> None:
        raise asyncpg.TooManyConnectionsError("sorry, too many clients already")

    # What the scale-out test met: Postgres out of connections when the job started. arq records
    # the delivery as failed and forgets the message; the row stays IN_QUEUE.
    monkeypatch.setattr(attempts, "claim_or_give_up", no_connection)
    await run_default_worker(settings)
    monkeypatch.undo()
    assert ((job := await _job(pool, job_uuid))["status"], job["attempts"]) == ("IN_QUEUE", 0)
    redis = await create_arq_pool(redis_settings(settings))
    try:
        # No result kept in Redis (it would make arq refuse the same job id until it expires)...
        assert not await redis.exists(job_key_prefix + job_uuid, result_key_prefix + job_uuid)
        await _age(pool, job_uuid)
        assert await _sweep(settings) == 1
        await run_default_worker(settings)
        assert (await _job(pool, job_uuid))["status"] == "COMPLETED"
        # ...and one kept anyway (an older worker's, or arq's own "max retries" record) is dropped.
        other = await submit_bulk(client, world, csv_bytes("ParticipantID", "R-3"))
        await redis.delete(job_key_prefix + other)
        await redis.zrem(settings.default_queue, other)
        await redis.set(result_key_prefix + other, b"failed", px=3_600_000)
        await _age(pool, other)
        assert await _sweep(settings) == 1
    finally:
        await redis.aclose()
    await run_default_worker(settings)
    assert ((job := await _job(pool, other))["status"], job["attempts"]) == ("COMPLETED", 1)


async def test_the_heartbeat_records_progress_and_says_when_to_stop(world, pool):
    await world.standard()
    alive, cancelled, superseded, locked = [
        UUID(await make_job(pool, status="IN_PROGRESS")) for _ in range(4)
    ]
    await pool.execute("UPDATE jobs SET heartbeat_at = now() - interval '1 minute', rows_done = 0")
    await pool.execute("UPDATE jobs SET cancel_requested = true WHERE uuid = $1", cancelled)
    beats = [
        Beat(alive, 5, rows_done=7, rows_expected=9),
        Beat(cancelled, 5),
        Beat(superseded, 4),
        Beat(locked, 5),
    ]
    async with pool.acquire() as holder, holder.transaction():
        # Another transaction holds one row (its attempt finishing): that job is skipped this time,
        # not told to stop, and the others are not held up.
        await holder.execute("SELECT 1 FROM jobs WHERE uuid = $1 FOR UPDATE", locked)
        async with pool.acquire() as conn:
            await asyncio.wait_for(beat_jobs(conn, beats), 5)
    assert [b.stop for b in beats] == [False, True, True, False]
    rows = {
        r["uuid"]: r
        for r in await pool.fetch(
            "SELECT uuid, rows_done, rows_expected, heartbeat_at > now() - interval '5 seconds' AS fresh FROM jobs"
        )
    }
    assert (rows[alive]["rows_done"], rows[alive]["rows_expected"], rows[alive]["fresh"]) == (7, 9, True)
    assert not rows[superseded]["fresh"] and not rows[locked]["fresh"]


@pytest.mark.parametrize("stale", [True, False])
async def test_the_sweeper_leaves_a_live_bulk_upload_alone(client, world, pool, settings, stale):
    await world.standard()
    job_uuid = await submit_bulk(client, world, csv_bytes("ParticipantID", "L-1"))
    age = settings.job_stale_seconds + 1 if stale else 0
    await pool.execute(
        "UPDATE jobs SET status = 'IN_PROGRESS', attempts = 1, heartbeat_at = now() - $2::float8 * interval '1 second'"
        " WHERE uuid = $1",
        UUID(job_uuid),
        age,
    )
    redis = await create_arq_pool(redis_settings(settings))
    try:
        await redis.psetex(in_progress_key_prefix + job_uuid, 3_600_000, b"1")
        await _sweep(settings)
        # Bulk uploads beat like extracts: stale after seconds, not after their hour-long timeout.
        assert await redis.exists(in_progress_key_prefix + job_uuid) == (0 if stale else 1)
    finally:
        await redis.aclose()


def test_a_stale_threshold_within_two_heartbeats_is_refused():
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="2 x job_heartbeat_seconds"):
        Settings(job_heartbeat_seconds=3.0)  # live jobs would look dead between their beats
    Settings(job_heartbeat_seconds=2.5)
