"""The caller's jobs: status, lists, delete, download semantics (ownership, 409/410, Range, redirect), expiry."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from uuid import UUID, uuid4

import aiohttp

from service.worker.context import shutdown, startup
from service.worker.maintenance import expire_jobs
from tests.s3 import s3_server, s3_settings  # noqa: F401
from tests.test_extract import HEADER, JOBS, SUBMIT, download, parse_csv, run_jobs, seed_site, submit
from tests.world import SITE_A, SITE_B, STUDY, expect

SITE_B_SUBMIT = SUBMIT.replace(SITE_A, SITE_B)


async def _completed(client, world, pool, settings, n: int = 20, user: str = "crc_a") -> str:
    await seed_site(pool, SITE_A, n)
    job_uuid = await submit(client, world, user)
    await run_jobs(settings)
    return job_uuid


async def test_status_shows_progress_and_result(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 30)
    job_uuid = await submit(client, world)
    body = await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert body["status"] == "IN_QUEUE" and body["type"] == "EXTRACT_PARTICIPANTS"
    assert (body["studyOid"], body["siteOid"]) == (STUDY, SITE_A)
    assert body["progress"] == {"rowsDone": 0, "rowsExpected": None}
    await run_jobs(settings)
    body = await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert body["status"] == "COMPLETED"
    assert body["progress"] == {"rowsDone": 30, "rowsExpected": 30}
    assert body["rowCount"] == 30 and body["attempts"] == 1 and body["error"] is None
    assert body["expiresAt"] and body["completedAt"] and body["sha256"]
    assert body["downloadUrl"].endswith(f"{JOBS}/{job_uuid}/downloadFile")


async def test_other_users_never_see_a_job(client, world, pool, settings):
    await world.standard()
    job_uuid = await _completed(client, world, pool, settings)
    for user in ("inv_a", "crc_b", "dm", "admin", "nobody"):
        for method, path in (("GET", ""), ("GET", "/downloadFile"), ("DELETE", "")):
            resp = await client.request(method, f"{JOBS}/{job_uuid}{path}", headers=world.auth(user))
            body = await expect(resp, 404)
            assert body == {"message": "errorCode.invalidUuid", "params": {"jobUuid": job_uuid}}, (
                user,
                method,
                path,
            )
    for bad in ("not-a-uuid", str(uuid4()), "1" * 100, "%00"):
        body = await expect(await download(client, world, bad), 404)
        assert body["message"] == "errorCode.invalidUuid"
    body = await expect(await client.get(f"{JOBS}/{job_uuid}/downloadFile"), 401)
    assert body["message"] == "errorCode.unauthenticated"
    # Nothing about the job changed, and only the owner's successful download is audited.
    resp = await download(client, world, job_uuid)
    assert resp.status == 200
    actions = [
        r["username"]
        for r in await pool.fetch("SELECT username FROM audit_log WHERE action = 'job.download'")
    ]
    assert actions == ["crc_a"]


async def test_lists_show_only_the_callers_jobs(client, world, pool):
    await world.standard()
    await world.user("crc_ab", [(SITE_A, "ra"), (SITE_B, "ra")])
    a1 = await submit(client, world, "crc_ab")
    b1 = await submit(client, world, "crc_ab", url=SITE_B_SUBMIT)
    a2 = await submit(client, world, "crc_ab")
    other = await submit(client, world, "crc_a")
    h = world.auth("crc_ab")
    all_jobs = await expect(await client.get(JOBS, headers=h), 200)
    assert [j["jobUuid"] for j in all_jobs["jobs"]] == [a2, b1, a1]
    # OC4's own lists answer OC4's bare array of JobDetailDTO (the extract is OC4's ACCESS_CODE job).
    study = await expect(await client.get(f"/pages/auth/api/studies/{STUDY}/jobs", headers=h), 200)
    assert [j["uuid"] for j in study] == [a2, b1, a1]
    assert set(study[0]) == {"uuid", "status", "type", "createdByUsername", "siteOid", "studyOid", "dateCreated",
                             "dateUpdated", "dateCompleted", "sourceFileName"}  # fmt: skip
    assert study[0]["type"] == "ACCESS_CODE" and study[0]["status"] == "IN_QUEUE"
    assert study[0]["createdByUsername"] == "crc_ab" and study[1]["siteOid"] == SITE_B
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", study[0]["dateCreated"])
    assert study[0]["dateCompleted"] is None
    site = await expect(
        await client.get(f"/pages/auth/api/studies/{STUDY}/sites/{SITE_A}/jobs", headers=h), 200
    )
    assert [j["uuid"] for j in site] == [a2, a1]
    await pool.execute("UPDATE jobs SET status = 'DELETED' WHERE uuid = $1", UUID(a1))
    site = await expect(
        await client.get(f"/pages/auth/api/studies/{STUDY}/sites/{SITE_A}/jobs", headers=h), 200
    )
    assert [j["uuid"] for j in site] == [a2]  # OC4 lists the jobs whose file is not deleted
    paged = await expect(await client.get(JOBS + "?page=2&pageSize=2", headers=h), 200)
    assert [j["jobUuid"] for j in paged["jobs"]] == [a1]
    assert other not in {j["jobUuid"] for j in all_jobs["jobs"]}
    body = await expect(await client.get("/pages/auth/api/studies/NOPE/jobs", headers=h), 404)
    assert body == {"message": "errorCode.studyNotExist", "params": {"studyOid": "NOPE"}}
    body = await expect(await client.get(f"/pages/auth/api/studies/{STUDY}/sites/NOPE/jobs", headers=h), 404)
    assert body == {"message": "errorCode.siteNotExist", "params": {"studyOid": STUDY, "siteOid": "NOPE"}}
    body = await expect(await client.get(JOBS + "?pageSize=0", headers=h), 400)
    assert body["message"] == "errorCode.invalidParameter"


async def test_download_while_queued_or_running_is_200_jobinprogress_as_oc4_answers(client, world, pool):
    """OC4 clients poll downloadFile and retry only on a 200 body holding jobInProgress."""
    await world.standard()
    job_uuid = await submit(client, world)
    for status in ("IN_QUEUE", "IN_PROGRESS"):
        await pool.execute("UPDATE jobs SET status = $2 WHERE uuid = $1", UUID(job_uuid), status)
        resp = await download(client, world, job_uuid)
        body = await expect(resp, 200)
        assert resp.content_type == "application/json" and int(resp.headers["Retry-After"]) > 0
        assert body["message"] == "errorCode.jobInProgress"
        assert body["params"]["jobUuid"] == job_uuid and body["params"]["status"] == status
        assert body["params"]["statusUrl"].endswith(f"{JOBS}/{job_uuid}")
        # The query is checked before the job's state: a bad parameter is 400 now, not at the end.
        resp = await client.get(f"{JOBS}/{job_uuid}/downloadFile?redirect=maybe", headers=world.auth("crc_a"))
        assert (await expect(resp, 400))["message"] == "errorCode.invalidParameter"
    # Everything else is as without the compatibility: 404 to others, 409 failed, 410 expired.
    body = await expect(await download(client, world, job_uuid, user="crc_b"), 404)
    assert body["message"] == "errorCode.invalidUuid"
    await pool.execute(
        "UPDATE jobs SET status = 'FAILED', error = 'storage: down' WHERE uuid = $1", UUID(job_uuid)
    )
    body = await expect(await download(client, world, job_uuid), 409)
    assert body == {"message": "errorCode.jobFailed", "params": {"jobUuid": job_uuid, "status": "FAILED"}}
    await pool.execute("UPDATE jobs SET status = 'EXPIRED' WHERE uuid = $1", UUID(job_uuid))
    await expect(await download(client, world, job_uuid), 410)
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'job.download'") == 0


async def test_download_while_queued_or_running_is_409_without_oc4_polling(make_client, world, pool):
    client = await make_client(oc4_polling_compat=False)
    await world.standard()
    job_uuid = await submit(client, world)
    for status in ("IN_QUEUE", "IN_PROGRESS"):
        await pool.execute("UPDATE jobs SET status = $2 WHERE uuid = $1", UUID(job_uuid), status)
        resp = await download(client, world, job_uuid)
        body = await expect(resp, 409)
        assert body == {"message": "errorCode.jobInProgress", "params": {"jobUuid": job_uuid}}
        assert int(resp.headers["Retry-After"]) > 0


async def test_range_requests(client, world, pool, settings):
    await world.standard()
    job_uuid = await _completed(client, world, pool, settings, n=200)
    full = await (await download(client, world, job_uuid)).read()
    size = len(full)
    etag = (await download(client, world, job_uuid)).headers["ETag"]
    cases = [
        ("bytes=0-9", 0, 10),
        (f"bytes=100-{size + 50}", 100, size),
        ("bytes=5000-", 5000, size),
        ("bytes=-7", size - 7, size),
    ]
    for header, start, end in cases:
        resp = await download(client, world, job_uuid, headers={"Range": header})
        body = await resp.read()
        assert resp.status == 206, (header, resp.status, body[:200])
        assert body == full[start:end], header
        assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert int(resp.headers["Content-Length"]) == end - start
        assert resp.headers["ETag"] == etag
    resp = await download(client, world, job_uuid, headers={"Range": f"bytes={size}-"})
    body = await expect(resp, 416)
    assert body["message"] == "errorCode.rangeNotSatisfiable"
    assert resp.headers["Content-Range"] == f"bytes */{size}"
    for ignored in ("bytes=0-1,5-6", "items=0-3", "garbage"):
        resp = await download(client, world, job_uuid, headers={"Range": ignored})
        assert resp.status == 200 and await resp.read() == full
    # If-Range with another validator: the whole (changed) file, not a slice of it.
    resp = await download(client, world, job_uuid, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert resp.status == 200 and await resp.read() == full
    resp = await download(client, world, job_uuid, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resp.status == 206 and await resp.read() == full[:10]


async def test_delete_by_owner_then_410(client, world, pool, settings):
    await world.standard()
    job_uuid = await _completed(client, world, pool, settings)
    path = settings.storage_dir / "extracts" / f"{job_uuid}.csv"
    assert path.exists()
    body = await expect(await client.delete(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert body["status"] == "DELETED"
    assert not path.exists()
    body = await expect(await download(client, world, job_uuid), 410)
    assert body == {"message": "errorCode.fileExpired", "params": {"jobUuid": job_uuid}}
    # Deleting again is harmless; the row stays.
    body = await expect(await client.delete(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert body["status"] == "DELETED"
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'job.delete'") == 1
    # An unfinished job cannot be deleted (an admin cancels it).
    queued = await submit(client, world)
    body = await expect(await client.delete(f"{JOBS}/{queued}", headers=world.auth("crc_a")), 409)
    assert body["message"] == "errorCode.jobInProgress"


async def test_expiry_deletes_the_file_and_marks_the_job(client, world, pool, settings):
    await world.standard()
    job_uuid = await _completed(client, world, pool, settings)
    expires_at = await pool.fetchval(
        "SELECT expires_at - completed_at FROM jobs WHERE uuid = $1", UUID(job_uuid)
    )
    assert expires_at.total_seconds() == settings.job_retention_hours * 3600 == 24 * 3600
    path = settings.storage_dir / "extracts" / f"{job_uuid}.csv"
    ctx: dict[str, Any] = {"settings": settings}
    await startup(ctx)
    try:
        assert await expire_jobs(ctx) == 0  # not yet
        assert path.exists()
        await pool.execute(
            "UPDATE jobs SET expires_at = now() - interval '1 second' WHERE uuid = $1", UUID(job_uuid)
        )
        # Past retention the download is 410 even before the cron job has run.
        body = await expect(await download(client, world, job_uuid), 410)
        assert body["message"] == "errorCode.fileExpired"
        assert await expire_jobs(ctx) == 1
    finally:
        await shutdown(ctx)
    assert not path.exists()
    assert await pool.fetchval("SELECT status FROM jobs WHERE uuid = $1", UUID(job_uuid)) == "EXPIRED"
    body = await expect(await download(client, world, job_uuid), 410)
    assert body["message"] == "errorCode.fileExpired"


S3_FIELDS = {
    "storage_backend",
    "s3_endpoint",
    "s3_bucket",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_allow_http",
    "storage_timeout_seconds",
}


async def test_redirect_to_a_presigned_url_on_s3(make_client, world, pool, s3_settings):
    client = await make_client(**s3_settings.model_dump(include=S3_FIELDS))
    await world.standard()
    job_uuid = await _completed(client, world, pool, s3_settings, n=25)
    full = await (await download(client, world, job_uuid)).read()
    resp = await download(client, world, job_uuid, params={"redirect": "true"}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    url = resp.headers["Location"]
    assert url.startswith(s3_settings.s3_endpoint) and "X-Amz-Expires=300" in url
    async with aiohttp.ClientSession() as session, session.get(url) as direct:
        assert direct.status == 200
        body = await direct.read()
        assert "Participant Access Code" in direct.headers.get("Content-Disposition", "")
    assert body == full and hashlib.sha256(body).hexdigest() == (
        await pool.fetchval("SELECT sha256 FROM jobs")
    )
    assert parse_csv(body)[0] == HEADER and len(parse_csv(body)) == 26
    # Range through the service on S3, too.
    resp = await download(client, world, job_uuid, headers={"Range": "bytes=3-12"})
    assert resp.status == 206 and await resp.read() == full[3:13]
    audits = await pool.fetch("SELECT details FROM audit_log WHERE action = 'job.download' ORDER BY id")
    assert [a["details"]["redirect"] for a in audits] == [False, True, False]


async def test_redirect_on_the_local_backend_streams_instead(client, world, pool, settings):
    await world.standard()
    job_uuid = await _completed(client, world, pool, settings, n=3)
    resp = await download(client, world, job_uuid, params={"redirect": "true"}, allow_redirects=False)
    assert resp.status == 200
    assert len(parse_csv(await resp.read())) == 4


async def test_cancel_requested_before_the_run_ends_cancelled(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 10)
    job_uuid = await submit(client, world)
    await pool.execute("UPDATE jobs SET cancel_requested = true WHERE uuid = $1", UUID(job_uuid))
    await run_jobs(settings)
    row = await pool.fetchrow("SELECT status, object_key FROM jobs WHERE uuid = $1", UUID(job_uuid))
    assert row["status"] == "CANCELLED"
    assert not (settings.storage_dir / row["object_key"]).exists()
    body = await expect(await download(client, world, job_uuid), 409)
    assert body == {"message": "errorCode.jobFailed", "params": {"jobUuid": job_uuid, "status": "CANCELLED"}}


async def test_storage_unreachable_during_download_or_delete_is_503(make_client, world, pool, s3_settings):
    good = await make_client(**s3_settings.model_dump(include=S3_FIELDS))
    await world.standard()
    job_uuid = await _completed(good, world, pool, s3_settings, n=5)
    down = s3_settings.model_copy(
        update={"s3_endpoint": "http://127.0.0.1:9", "storage_timeout_seconds": 1.0}
    )
    bad = await make_client(**down.model_dump(include=S3_FIELDS))
    for method, path in (("GET", "/downloadFile"), ("DELETE", "")):
        resp = await bad.request(method, f"{JOBS}/{job_uuid}{path}", headers=world.auth("crc_a"))
        body = await expect(resp, 503)
        assert body == {"message": "errorCode.serviceUnavailable", "params": {"jobUuid": job_uuid}}
    # Nothing was lost: the job is still COMPLETED and the file still there.
    assert await pool.fetchval("SELECT status FROM jobs") == "COMPLETED"
    resp = await download(good, world, job_uuid)
    assert resp.status == 200 and len(parse_csv(await resp.read())) == 6


async def test_head_gives_the_headers_without_the_body(client, world, pool, settings):
    await world.standard()
    job_uuid = await _completed(client, world, pool, settings, n=5)
    full = await (await download(client, world, job_uuid)).read()
    resp = await client.head(f"{JOBS}/{job_uuid}/downloadFile", headers=world.auth("crc_a"))
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == len(full)
    assert resp.headers["ETag"].startswith('"')
    assert await resp.read() == b""


async def test_if_none_match_with_the_etag_is_304(client, world, pool, settings):
    await world.standard()
    job_uuid = await _completed(client, world, pool, settings, n=5)
    etag = (await download(client, world, job_uuid)).headers["ETag"]
    resp = await download(client, world, job_uuid, headers={"If-None-Match": f'"nope", {etag}'})
    assert resp.status == 304 and resp.headers["ETag"] == etag and await resp.read() == b""
    resp = await download(client, world, job_uuid, headers={"If-None-Match": '"nope"'})
    assert resp.status == 200 and len(parse_csv(await resp.read())) == 6
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'job.download'") == 2


async def test_download_is_generic_over_job_types(client, world, pool, settings):
    """Another job type (an async bulk upload's report) is served from its own object_key and file_name."""
    import hashlib as _h

    from service.core.jobs import lifecycle, model
    from service.core.storage import Storage

    await world.standard()
    data = b'{"uploadCount": 2}'
    async with pool.acquire() as conn:
        ids = await conn.fetchrow(
            "SELECT st.id AS study_id, u.id AS owner_id FROM studies st, users u WHERE u.username = 'crc_a'"
        )
        job = await lifecycle.create_job(
            conn,
            model.NewJob(
                job_type=model.BULK_ADD_PARTICIPANTS,
                study_id=ids["study_id"],
                site_id=None,
                owner_id=ids["owner_id"],
                file_name="bulk report.json",
                object_key="bulk/r.json",
            ),
        )
        await conn.execute(
            "UPDATE jobs SET status = 'IN_PROGRESS', attempts = 1 WHERE uuid = $1", job["uuid"]
        )
        async with Storage.from_settings(settings).open_upload("bulk/r.json") as up:
            await up.write(data)
        made = model.JobFile(byte_size=len(data), sha256=_h.sha256(data).hexdigest())
        assert await lifecycle.complete_job(
            conn, job["uuid"], 1, made, __import__("datetime").timedelta(hours=1)
        )
    resp = await download(client, world, str(job["uuid"]))
    assert resp.status == 200 and await resp.read() == data
    assert resp.headers["Content-Type"] == "application/json"
    assert "filename*=UTF-8''bulk%20report.json" in resp.headers["Content-Disposition"]
    listed = await expect(await client.get(JOBS, headers=world.auth("crc_a")), 200)
    assert [(j["type"], j["siteOid"]) for j in listed["jobs"]] == [("BULK_ADD_PARTICIPANTS", None)]
