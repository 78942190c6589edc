"""Bulk upload, asynchronous variant (``?async=true``): stored upload, job, status, result file."""

from __future__ import annotations

import csv
import io
import re
from uuid import UUID

from service.core.storage import Storage, StorageNotFound
from service.worker import bulk as bulk_worker
from tests.bulk_files import SITE_URL, STUDY_URL, csv_bytes, file_failure, not_utf8, summary, upload
from tests.test_webhooks_support import run_default_worker
from tests.world import SITE_A, STUDY, expect

JOBS = "/pages/auth/api/jobs"
UUID_TEXT = re.compile(r"^job uuid: ([0-9a-f-]{36})$")


async def submit(client, world, data, user="crc_a", url=SITE_URL, raw=False):
    resp = await upload(client, world.token(user), data, url=url + "?async=true", raw=raw)
    text = await expect(resp, 200)
    m = UUID_TEXT.match(text)
    assert m, text
    assert resp.headers["Location"].endswith(f"{JOBS}/{m.group(1)}")
    return m.group(1)


async def job_status(client, world, job_uuid, user="crc_a"):
    return await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth(user)), 200)


async def result_rows(client, world, job_uuid, user="crc_a"):
    resp = await client.get(f"{JOBS}/{job_uuid}/downloadFile", headers=world.auth(user))
    body = await resp.read()
    assert resp.status == 200, body[:500]
    assert resp.headers["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


async def upload_exists(settings, job_uuid):
    storage = Storage.from_settings(settings)
    try:
        await storage.head(f"bulk/{job_uuid}/upload.csv")
    except StorageNotFound:
        return False
    return True


async def test_async_upload_runs_as_a_job(client, world, settings):
    await world.standard()
    await world.user("renuka", [(SITE_A, "ra")], full_name="Bhatnagar Renuka")
    await expect(await upload(client, world.token("renuka"), csv_bytes("ParticipantID", "JUNO-006")), 200)
    data = csv_bytes("ParticipantID,Notes", "JUNO-007,x", '"=cmd|x",y', "JUNO-006,z", "<b>,w")
    job_uuid = await submit(client, world, data, user="renuka")
    assert await upload_exists(settings, job_uuid)
    status = await job_status(client, world, job_uuid, user="renuka")
    assert status["status"] == "IN_QUEUE" and status["type"] == "BULK_ADD_PARTICIPANTS"

    await run_default_worker(settings)

    status = await job_status(client, world, job_uuid, user="renuka")
    assert status["status"] == "COMPLETED", status
    result = status["result"]
    assert result == summary(
        ["JUNO-007", "=cmd|x"],
        [
            ("JUNO-006", ["participantIDNotUnique"], 4),
            ("<b>", ["participantIDContainsUnsupportedHTMLCharacter"], 5),
        ],
        "Bhatnagar Renuka",
        result["createdAt"],
    )
    assert status["fileName"].startswith(f"{STUDY}-{SITE_A}_Bulk Participant Upload_")
    assert await result_rows(client, world, job_uuid, user="renuka") == [
        ["Row", "ParticipantID", "Status", "Message"],
        ["2", "JUNO-007", "Added", ""],
        ["3", "'=cmd|x", "Added", ""],
        ["4", "JUNO-006", "Failed", "errorCode.participantIDNotUnique"],
        ["5", "<b>", "Failed", "errorCode.participantIDContainsUnsupportedHTMLCharacter"],
    ]
    assert not await upload_exists(settings, job_uuid), "the upload holds personal data: deleted when done"
    keys = {r["subject_key"] for r in await world.pool.fetch("SELECT subject_key FROM participants")}
    assert keys == {"JUNO-006", "JUNO-007", "=cmd|x"}
    # Running the job again (arq may deliver twice) changes nothing.
    await bulk_worker.bulk_add_participants_job(
        {"settings": settings, "db": world.pool, "storage": Storage.from_settings(settings)}, job_uuid
    )
    assert (await job_status(client, world, job_uuid, user="renuka"))["result"] == result
    assert await world.pool.fetchval("SELECT count(*) FROM participants") == 3


async def test_async_json_answer_and_study_level(client, world, settings):
    await world.standard()
    resp = await client.post(
        STUDY_URL + "?async=true",
        data=csv_bytes("ParticipantID", "S-1", "S-2"),
        headers={**world.auth("dm"), "Content-Type": "text/csv", "Accept": "application/json"},
    )
    body = await expect(resp, 200)
    assert body["status"] == "IN_QUEUE" and body["statusUrl"].endswith(f"{JOBS}/{body['jobUuid']}")
    assert body["downloadUrl"].endswith(f"{JOBS}/{body['jobUuid']}/downloadFile")
    await run_default_worker(settings)
    status = await job_status(client, world, body["jobUuid"], user="dm")
    assert status["status"] == "COMPLETED"
    assert status["result"]["uploadCount"] == 2 and status["result"]["createdBy"] == "Dm"
    rows = await world.pool.fetch("SELECT site_id FROM participants")
    assert [r["site_id"] for r in rows] == [None, None]


async def test_async_file_level_failures_answer_at_once(client, world):
    await world.standard()
    token = world.token("crc_a")
    cases = [
        (b"\x89PNG\x00\x00", 400, "notSupportedFileFormat", not_utf8(1, 1)),
        (
            b"Name\nA\n",
            400,
            "missingParticipantIDHeader",
            {"header": "ParticipantID", "rowNumber": 1, "delimiter": ","},
        ),
        (b"ParticipantID\n", 400, "blankFile", None),
        (b"", 400, "blankFile", None),
    ]
    for data, status, code, params in cases:
        body = await expect(await upload(client, token, data, url=SITE_URL + "?async=true"), status)
        assert body == file_failure(code, "Crc_A", body["createdAt"], params)
    body = await expect(
        await upload(
            client, token, b"<x/>", url=SITE_URL + "?async=true", filename="a.xml", content_type="text/xml"
        ),
        400,
    )
    assert body["message"] == "errorCode.notSupportedFileFormat"
    body = await expect(
        await upload(client, world.token("monitor"), b"ParticipantID\nA\n", url=SITE_URL + "?async=true"), 403
    )
    assert body["message"] == "errorCode.noSufficientPrivileges"
    assert await world.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_async_file_too_large(make_client, world):
    client = await make_client(bulk_max_bytes=1000)
    await world.standard()

    async def chunks():
        yield b"ParticipantID\n"
        for i in range(300):
            yield f"K-{i:05d}\n".encode()

    headers = {**world.auth("crc_a"), "Content-Type": "text/csv"}
    body = await expect(await client.post(SITE_URL + "?async=true", data=chunks(), headers=headers), 413)
    assert body["message"] == "errorCode.fileTooLarge"
    assert await world.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_async_failure_found_by_the_job_fails_it_and_adds_nothing(client, world, settings):
    await world.standard()
    many = [f"K-{i:06d}" for i in range(30_000)]  # far past what the web process sniffs
    data = csv_bytes("ParticipantID", *many) + "Zoë\n".encode("latin-1")
    job_uuid = await submit(client, world, data, raw=True)
    await run_default_worker(settings)
    status = await job_status(client, world, job_uuid)
    assert status["status"] == "FAILED" and status["error"] == "errorCode.notSupportedFileFormat", status
    where = not_utf8(30_002, 1)  # the row and column of the Latin-1 byte, past the part the web process read
    assert status["result"] == file_failure(
        "notSupportedFileFormat", "Crc_A", status["result"]["createdAt"], where
    )
    assert await world.pool.fetchval("SELECT count(*) FROM participants") == 0
    assert not await upload_exists(settings, job_uuid)
    resp = await client.get(f"{JOBS}/{job_uuid}/downloadFile", headers=world.auth("crc_a"))
    assert (await expect(resp, 409))["message"] == "errorCode.jobFailed"


async def test_async_rights_are_checked_again_when_the_job_runs(client, world, settings):
    await world.standard()
    job_uuid = await submit(client, world, csv_bytes("ParticipantID", "K-1"))
    await world.pool.execute("UPDATE studies SET participant_id_method = 'system_generated'")
    await run_default_worker(settings)
    status = await job_status(client, world, job_uuid)
    assert status["status"] == "FAILED"
    assert status["result"]["message"] == "errorCode.bulkUploadNotSupportSystemGeneratedSetting"
    assert await world.pool.fetchval("SELECT count(*) FROM participants") == 0


async def test_async_summary_lists_are_cut_in_the_status(client, world, settings, monkeypatch):
    monkeypatch.setattr(bulk_worker, "RESULT_LIST_MAX", 3)
    await world.standard()
    keys = [f"T-{i}" for i in range(10)]
    job_uuid = await submit(client, world, csv_bytes("ParticipantID", *keys))
    await run_default_worker(settings)
    status = await job_status(client, world, job_uuid)
    result = status["result"]
    assert result["uploadCount"] == 10 and result["truncated"] is True
    assert [p["subjectKey"] for p in result["participants"]] == keys[:3]
    rows = await result_rows(client, world, job_uuid)
    assert [r[1] for r in rows[1:]] == keys
    assert status["rowCount"] == 10


async def test_async_job_of_another_user_is_not_found(client, world, settings):
    await world.standard()
    job_uuid = await submit(client, world, csv_bytes("ParticipantID", "K-1"))
    await run_default_worker(settings)
    resp = await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("inv_a"))
    assert (await expect(resp, 404))["message"] == "errorCode.invalidUuid"


async def test_async_failure_before_commit_leaves_nothing_and_fails_the_job(
    client, world, settings, monkeypatch
):
    from service.core.bulk import staging as bulk_store

    await world.standard()
    job_uuid = await submit(client, world, csv_bytes("ParticipantID", "K-1", "K-2"))

    async def crash(conn):
        raise asyncpg_error()

    def asyncpg_error():
        import asyncpg

        return asyncpg.exceptions.SerializationError("injected")

    monkeypatch.setattr(bulk_store, "before_commit", crash)
    await run_default_worker(settings)
    status = await job_status(client, world, job_uuid)
    assert status["status"] == "FAILED", status
    assert await world.pool.fetchval("SELECT count(*) FROM participants") == 0
    assert (
        await world.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'participant.create'") == 0
    )


async def test_async_job_cancelled_before_it_runs_adds_nothing(client, world, settings):
    await world.standard()
    job_uuid = await submit(client, world, csv_bytes("ParticipantID", "K-1"))
    await world.pool.execute("UPDATE jobs SET cancel_requested = true WHERE uuid = $1", job_uuid)
    await run_default_worker(settings)
    status = await job_status(client, world, job_uuid)
    assert status["status"] == "CANCELLED", status
    assert await world.pool.fetchval("SELECT count(*) FROM participants") == 0
    assert not await upload_exists(settings, job_uuid)


async def test_sweeper_knows_how_to_rerun_a_bulk_job(client, world, settings):
    """A bulk job Redis lost is enqueued again by the sweeper, by name, on the default queue."""
    from service.core.jobs import model, queue
    from service.worker.tasks import DEFAULT_FUNCTIONS

    function_name, queue_field = model.JOB_FUNCTIONS["BULK_ADD_PARTICIPANTS"]
    assert getattr(settings, queue_field) == settings.default_queue
    assert function_name in {getattr(f, "name", getattr(f, "__name__", None)) for f in DEFAULT_FUNCTIONS}
    await world.standard()
    job_uuid = await submit(client, world, csv_bytes("ParticipantID", "K-1"))
    from arq import create_pool

    from service.core.redis import redis_settings

    redis = await create_pool(redis_settings(settings))
    await redis.flushdb()  # the message is lost
    assert await queue.enqueue(redis, settings, model.BULK_ADD_PARTICIPANTS, UUID(job_uuid))
    await redis.aclose()
    await run_default_worker(settings)
    assert (await job_status(client, world, job_uuid))["status"] == "COMPLETED"


async def test_async_failed_attempt_leaves_no_result_file(client, world, settings, monkeypatch):
    from service.core.bulk import staging as bulk_store

    await world.standard()
    job_uuid = await submit(client, world, csv_bytes("ParticipantID", "K-1"))

    async def crash(conn):
        import asyncpg

        raise asyncpg.exceptions.DeadlockDetectedError("injected")

    monkeypatch.setattr(bulk_store, "before_commit", crash)
    await run_default_worker(settings)
    assert (await job_status(client, world, job_uuid))["status"] == "FAILED"
    storage = Storage.from_settings(settings)
    for key in (f"bulk/{job_uuid}/result-1.csv", f"bulk/{job_uuid}/upload.csv"):
        try:
            await storage.head(key)
        except StorageNotFound:
            continue
        raise AssertionError(f"{key} left behind")
