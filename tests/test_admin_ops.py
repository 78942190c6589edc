"""The admin API's operations side: jobs (list, one, retry, cancel, purge), audit log, queue health."""

from __future__ import annotations

import datetime as dt
import uuid
import warnings

import pytest
from arq import create_pool

from service.core import worker_beats
from service.core.jobs import lifecycle, model
from service.core.jobs.attempts import Beat, beat_jobs
from service.core.redis import redis_settings
from service.core.storage import Storage, StorageNotFound
from service.worker.main import build_worker
from tests.world import SITE_A, SITE_B, STUDY, expect

JOBS = "/admin/api/jobs"
SUBMIT = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/extractPartcipantsInfo"


async def _job(
    pool, *, status="IN_QUEUE", owner="crc_a", site=SITE_A, job_type="EXTRACT_PARTICIPANTS", created=None
):
    async with pool.acquire() as conn:
        row = await lifecycle.create_job(conn, model.NewJob(job_type=job_type,
            study_id=await conn.fetchval("SELECT id FROM studies WHERE oid = $1", STUDY),
            site_id=await conn.fetchval("SELECT id FROM sites WHERE oid = $1", site) if site else None,
            owner_id=await conn.fetchval("SELECT id FROM users WHERE username = $1", owner),
            file_name="f.csv", object_key=f"extracts/{uuid.uuid4()}.csv"))  # fmt: skip
        await conn.execute(
            "UPDATE jobs SET status = $2, created_at = coalesce($3, created_at), error = CASE WHEN $2 = 'FAILED'"
            " THEN 'storage: unavailable' END, attempts = CASE WHEN $2 = 'IN_QUEUE' THEN 0 ELSE 5 END WHERE uuid = $1",
            row["uuid"], status, created,
        )  # fmt: skip
    return str(row["uuid"])


async def _run_extract_worker(settings):
    worker = build_worker(settings, settings.extract_queue, burst=True, poll_delay=0.01)
    try:
        await worker.main()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            await worker.close()


async def test_only_admins(client, world):
    await world.standard()
    for method, path in [("GET", JOBS), ("GET", "/admin/api/audit"), ("GET", "/admin/api/queue"),
                         ("POST", JOBS + "/purge-expired"), ("POST", f"{JOBS}/{uuid.uuid4()}/retry")]:  # fmt: skip
        body = await expect(await client.request(method, path, headers=world.auth("crc_a")), 403)
        assert body == {"message": "errorCode.noSufficientPrivileges", "params": {}}


async def test_list_jobs_filters_and_pages(client, world, pool):
    await world.standard()
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    a = await _job(pool, status="COMPLETED", owner="crc_a", created=old)
    b = await _job(pool, status="FAILED", owner="crc_b", site=SITE_B, created=old + dt.timedelta(days=1))
    c = await _job(pool, status="IN_QUEUE", owner="crc_a", created=old + dt.timedelta(days=2))
    admin = world.auth("admin")

    async def uuids(query=""):
        body = await expect(await client.get(JOBS + query, headers=admin), 200)
        return [j["jobUuid"] for j in body["jobs"]], body["total"]

    assert await uuids() == ([c, b, a], 3)
    assert await uuids("?status=FAILED") == ([b], 1)
    assert await uuids("?type=EXTRACT_PARTICIPANTS&owner=crc_a") == ([c, a], 2)
    assert await uuids(f"?siteOid={SITE_B}") == ([b], 1)
    assert await uuids(f"?studyOid={STUDY}&siteOid={SITE_A}") == ([c, a], 2)
    assert await uuids("?createdFrom=2026-01-02&createdTo=2026-01-03T00:00:00Z") == ([b], 1)
    assert await uuids("?type=BULK_ADD_PARTICIPANTS") == ([], 0)
    assert await uuids("?page=2&pageSize=2") == ([a], 3)

    body = await expect(await client.get(JOBS + "?pageSize=1", headers=admin), 200)
    [job] = body["jobs"]
    assert {k: job[k] for k in ("jobUuid", "type", "status", "studyOid", "siteOid", "owner", "cancelRequested")} == {
        "jobUuid": c, "type": "EXTRACT_PARTICIPANTS", "status": "IN_QUEUE", "studyOid": STUDY, "siteOid": SITE_A,
        "owner": "crc_a", "cancelRequested": False,
    }  # fmt: skip
    assert "objectKey" not in job and "object_key" not in job

    for bad in (
        "?status=DONE",
        "?status=",
        "?status=completed",
        "?type=x",
        "?type=",
        "?createdFrom=yesterday",
        "?page=0",
        "?pageSize=abc",
        "?owner=%00",
        "?createdFrom=0001-01-01T00:00%2B05:00",
        "?createdTo=9999-12-31T23:59-05:00",
    ):
        resp = await client.get(JOBS + bad, headers=admin)
        assert (await expect(resp, 400))["message"] == "errorCode.invalidParameter", bad


async def test_one_job_in_full_and_unknown_ones(client, world, pool):
    await world.standard()
    j = await _job(pool, status="FAILED")
    body = await expect(await client.get(f"{JOBS}/{j}", headers=world.auth("admin")), 200)
    assert (body["jobUuid"], body["status"], body["attempts"], body["error"]) == (
        j,
        "FAILED",
        5,
        "storage: unavailable",
    )
    assert body["webhookDeliveries"] == [] and body["audit"] == [] and body["params"] == {}
    for bad in (str(uuid.uuid4()), "not-a-uuid", "x" * 100):
        resp = await client.get(f"{JOBS}/{bad}", headers=world.auth("admin"))
        assert (await expect(resp, 404))["message"] == "errorCode.invalidUuid"


async def test_cancel_queued_running_and_finished_jobs(client, world, pool):
    await world.standard()
    admin = world.auth("admin")
    queued, running, done = (
        await _job(pool),
        await _job(pool, status="IN_PROGRESS"),
        await _job(pool, status="COMPLETED"),
    )

    body = await expect(await client.post(f"{JOBS}/{queued}/cancel", headers=admin), 202)
    assert (body["status"], body["cancelRequested"], body["error"]) == ("CANCELLED", True, "cancelled")
    assert body["completedAt"] is not None
    body = await expect(await client.post(f"{JOBS}/{running}/cancel", headers=admin), 202)
    # The worker stops at its next chunk.
    assert (body["status"], body["cancelRequested"]) == ("IN_PROGRESS", True)
    assert [a["action"] for a in body["audit"]] == ["admin.job.cancel"]
    # The worker's heartbeat sees the flag; the job stops at its next chunk.
    beat = Beat(uuid.UUID(running), 5, rows_done=10)
    async with pool.acquire() as conn:
        await beat_jobs(conn, [beat])
    assert beat.stop is True

    for j in (done, queued):
        body = await expect(await client.post(f"{JOBS}/{j}/cancel", headers=admin), 409)
        assert body["message"] == "errorCode.jobNotCancellable"


async def test_retry_a_failed_extract_runs_it_again(client, world, pool, settings):
    await world.standard()
    body = await expect(
        await client.get(SUBMIT, headers={**world.auth("crc_a"), "Accept": "application/json"}), 200
    )
    j = body["jobUuid"]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE jobs SET attempts = 5 WHERE uuid = $1", uuid.UUID(j))
        await lifecycle.fail_job(conn, uuid.UUID(j), "storage: unavailable")
    redis = await create_pool(redis_settings(settings))
    await redis.flushdb()  # arq forgot it too
    await redis.aclose()

    body = await expect(await client.post(f"{JOBS}/{j}/retry", headers=world.auth("admin")), 202)
    assert (body["status"], body["attempts"], body["error"]) == ("IN_QUEUE", 0, None)
    assert body["audit"][-1]["action"] == "admin.job.retry"
    assert body["audit"][-1]["details"] == {"previousAttempts": 5, "previousError": "storage: unavailable"}
    await _run_extract_worker(settings)
    body = await expect(await client.get(f"{JOBS}/{j}", headers=world.auth("admin")), 200)
    assert (body["status"], body["attempts"]) == ("COMPLETED", 1)

    again = await client.post(f"{JOBS}/{j}/retry", headers=world.auth("admin"))
    assert await expect(again, 409) == {
        "message": "errorCode.jobNotRetryable",
        "params": {"jobUuid": j, "status": "COMPLETED"},
    }


async def test_a_failed_bulk_job_is_not_retried_its_upload_is_gone(client, world, pool):
    await world.standard()
    j = await _job(pool, status="FAILED", job_type="BULK_ADD_PARTICIPANTS")
    assert await expect(await client.post(f"{JOBS}/{j}/retry", headers=world.auth("admin")), 409) == {
        "message": "errorCode.jobNotRetryable",
        "params": {"jobUuid": j, "status": "FAILED", "type": "BULK_ADD_PARTICIPANTS"},
    }
    assert await pool.fetchval("SELECT status FROM jobs WHERE uuid = $1", uuid.UUID(j)) == "FAILED"


async def test_purge_expired_deletes_files_and_marks_jobs(client, world, pool, settings):
    await world.standard()
    body = await expect(
        await client.get(SUBMIT, headers={**world.auth("crc_a"), "Accept": "application/json"}), 200
    )
    j = body["jobUuid"]
    await _run_extract_worker(settings)
    key = await pool.fetchval("SELECT object_key FROM jobs WHERE uuid = $1", uuid.UUID(j))
    storage = Storage.from_settings(settings)
    await storage.head(key)  # the file exists

    nothing = await expect(await client.post(JOBS + "/purge-expired", headers=world.auth("admin")), 200)
    assert nothing == {"expired": 0, "jobUuids": []}
    await pool.execute(
        "UPDATE jobs SET expires_at = now() - interval '1 minute' WHERE uuid = $1", uuid.UUID(j)
    )
    purged = await expect(await client.post(JOBS + "/purge-expired", headers=world.auth("admin")), 200)
    assert purged == {"expired": 1, "jobUuids": [j]}
    with pytest.raises(StorageNotFound):
        await storage.head(key)
    assert await pool.fetchval("SELECT status FROM jobs WHERE uuid = $1", uuid.UUID(j)) == "EXPIRED"


async def test_audit_log_filters_and_pages(client, world, pool):
    await world.standard()
    base = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites"
    for n, (site, user) in enumerate([(SITE_A, "crc_a"), (SITE_A, "crc_a"), (SITE_B, "crc_b")]):
        resp = await client.post(f"{base}/{site}/participants", json={"subjectKey": f"AU-{n}", "firstName": "Secret"},
                                 headers=world.auth(user))  # fmt: skip
        await expect(resp, 200)
    admin = world.auth("admin")

    async def entries(query=""):
        body = await expect(await client.get("/admin/api/audit" + query, headers=admin), 200)
        return body

    everything = await entries()
    assert everything["total"] == 3 and len(everything["entries"]) == 3
    assert [e["subjectKey"] for e in everything["entries"]] == ["AU-2", "AU-1", "AU-0"]  # newest first
    assert "Secret" not in str(everything)  # field names, never values
    action = everything["entries"][0]["action"]
    assert (await entries("?user=crc_a"))["total"] == 2
    assert [e["siteOid"] for e in (await entries(f"?siteOid={SITE_B}"))["entries"]] == [SITE_B]
    assert (await entries(f"?studyOid={STUDY}&action={action}"))["total"] >= 1
    assert (await entries("?from=2000-01-01&to=2001-01-01"))["total"] == 0
    page = await entries("?page=2&pageSize=2")
    assert (len(page["entries"]), page["total"]) == (1, 3)
    resp = await client.get("/admin/api/audit?from=noon", headers=admin)
    assert await expect(resp, 400) == {
        "message": "errorCode.invalidParameter",
        "params": {"parameter": "from"},
    }


async def test_queue_health(client, world, pool, settings):
    await world.standard()
    await _job(pool), await _job(pool, status="IN_PROGRESS")
    admin = world.auth("admin")
    body = await expect(await client.get("/admin/api/queue", headers=admin), 200)
    assert body == {
        "queues": [
            {"name": settings.extract_queue, "depth": 0, "workerHeartbeat": None, "workerAlive": False},
            {"name": settings.default_queue, "depth": 0, "workerHeartbeat": None, "workerAlive": False},
        ],
        "jobsInQueue": 1, "jobsInProgress": 1, "webhookMessagesPending": 0, "webhookMessagesFailed": 0,
    }  # fmt: skip
    redis = await create_pool(redis_settings(settings))
    try:
        await redis.enqueue_job("extract_participants_job", "x", _queue_name=settings.extract_queue)
        line = "Nov-22 17:00:00 j_complete=1 j_failed=0"
        await worker_beats.record(
            redis, settings.default_queue, worker_beats.beat_key(settings.default_queue), line, 60
        )
    finally:
        await redis.aclose()
    body = await expect(await client.get("/admin/api/queue", headers=admin), 200)
    assert [(q["depth"], q["workerAlive"]) for q in body["queues"]] == [(1, False), (0, True)]
    assert body["queues"][1]["workerHeartbeat"] == "Nov-22 17:00:00 j_complete=1 j_failed=0"


async def test_the_extract_worker_honours_an_admin_cancel(client, world, pool, settings):
    await world.standard()
    body = await expect(
        await client.get(SUBMIT, headers={**world.auth("crc_a"), "Accept": "application/json"}), 200
    )
    j = body["jobUuid"]
    # The job is running (as far as Postgres knows) when the admin cancels, its worker silent since;
    # its message is still in arq. (A live worker stops at its next chunk: see the heartbeat test.)
    await pool.execute(
        "UPDATE jobs SET status = 'IN_PROGRESS', attempts = 1, heartbeat_at = now() - interval '1 hour' WHERE uuid = $1",
        uuid.UUID(j),
    )
    body = await expect(await client.post(f"{JOBS}/{j}/cancel", headers=world.auth("admin")), 202)
    assert (body["status"], body["cancelRequested"]) == ("IN_PROGRESS", True)
    await _run_extract_worker(settings)
    body = await expect(await client.get(f"{JOBS}/{j}", headers=world.auth("admin")), 200)
    assert (body["status"], body["byteSize"]) == ("CANCELLED", None)
