"""The dashboard's reading of the last hour and day, against rows written at known times."""

from __future__ import annotations

import datetime as dt

from service.core.dashboard import read_dashboard
from tests.test_webhooks_support import finished_job

NOW = dt.datetime.now(dt.UTC).replace(second=30, microsecond=0)


def ago(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


async def at_times(pool, job, created, started, completed, status) -> None:
    await pool.execute(
        "UPDATE jobs SET created_at = $2, started_at = $3, completed_at = $4, status = $5 WHERE uuid = $1",
        job, created, started, completed, status,
    )  # fmt: skip


async def test_waiting_finished_durations_and_deliveries_per_minute(world, pool):
    await world.standard()
    # Waiting since before the window, started 30 minutes ago, 10 s long.
    a = await finished_job(pool, "COMPLETED")
    await at_times(pool, a, ago(90), ago(30), ago(30) + dt.timedelta(seconds=10), "COMPLETED")
    # Submitted 20 minutes ago, still waiting.
    b = await finished_job(pool, "COMPLETED")
    await at_times(pool, b, ago(20), None, None, "IN_QUEUE")
    # Submitted 10 minutes ago, cancelled in the queue 5 minutes ago (never started).
    c = await finished_job(pool, "CANCELLED")
    await at_times(pool, c, ago(10), None, ago(5), "CANCELLED")
    # Failed 2 minutes ago after 4 s.
    d = await finished_job(pool, "FAILED")
    await at_times(pool, d, ago(3), ago(2), ago(2) + dt.timedelta(seconds=4), "FAILED")
    async with pool.acquire() as conn:
        data = await read_dashboard(conn, "hour", NOW)
    assert len(data.buckets) == 60 and data.bucketSeconds == 60
    index = {b: i for i, b in enumerate(data.buckets)}

    def bucket(moment: dt.datetime) -> int:
        return index[moment.replace(second=0, microsecond=0)]

    assert data.jobsCompleted[bucket(ago(30))] == 1 and sum(data.jobsCompleted) == 1
    assert data.jobsFailed[bucket(ago(2))] == 1 and sum(data.jobsFailed) == 1
    assert data.durationP50[bucket(ago(30))] == 10.0 and data.durationP95[bucket(ago(2))] == 4.0
    assert data.durationP50[bucket(ago(40))] is None
    waiting = data.jobsWaiting
    assert waiting[bucket(ago(45))] == 1  # a, from before the window
    assert waiting[bucket(ago(25))] == 0  # a started
    assert waiting[bucket(ago(15))] == 1  # b
    assert waiting[bucket(ago(7))] == 2  # b and c
    assert waiting[bucket(ago(3))] == 2  # c cancelled, d submitted: b and d
    assert waiting[-1] == 1  # d started: b still waits


async def test_delivery_attempts_by_outcome(world, pool):
    await world.standard()
    job = await finished_job(pool, "COMPLETED")
    endpoint = await pool.fetchval(
        "INSERT INTO webhook_endpoints (url, event_types) VALUES ('https://93.184.216.34/h', ARRAY['job.completed']) RETURNING id"
    )
    message = await pool.fetchval(
        """INSERT INTO webhook_messages (msg_id, endpoint_id, event_type, job_uuid, payload)
           VALUES ('msg_1', $1, 'job.completed', $2, '{}') RETURNING id""",
        endpoint, job,
    )  # fmt: skip
    for minutes, outcome in ((12, "timeout"), (12, "http_error"), (11, "success"), (70, "success")):
        await pool.execute(
            "INSERT INTO webhook_attempts (message_id, attempt, at, duration_ms, outcome) VALUES ($1, 1, $2, 5, $3)",
            message, ago(minutes), outcome,
        )  # fmt: skip
    async with pool.acquire() as conn:
        hour = await read_dashboard(conn, "hour", NOW)
        day = await read_dashboard(conn, "day", NOW)
    assert sum(hour.webhookAttempts["success"]) == 1  # the one 70 minutes ago is outside the hour
    assert sum(hour.webhookAttempts["timeout"]) == 1 and sum(hour.webhookAttempts["http_error"]) == 1
    assert sum(day.webhookAttempts["success"]) == 2 and len(day.buckets) == 96
