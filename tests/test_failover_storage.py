"""Object storage stops in the middle of a job and starts again: S3-compatible storage (moto in server
mode, started and stopped here on a fixed port; its objects outlive the stop) under a real worker.

Asserted, for an extract and for an asynchronous bulk upload: the job is retried and ends
``COMPLETED`` with a file identical (byte for byte) to an undisturbed run's; while it is unfinished
no file is served; downloads during the outage answer 503 with ``Retry-After``. The bulk upload adds
every participant exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from service.core import directory
from service.settings import Settings
from tests.bulk_files import csv_bytes
from tests.engines import free_port
from tests.failover_load import report
from tests.s3 import ACCESS_KEY, REGION, SECRET_KEY, s3_client
from tests.test_bulk_async import submit as submit_bulk
from tests.test_extract import download, seed_site, submit
from tests.test_extract_reliability import _job, _start_worker, _stop
from tests.world import SITE_A, STUDY

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 4.0  # longer than the worker's storage timeout: its own S3 retries give up
OTHER_STUDY, OTHER_SITE = "S_MARS(PROD)", "S_MARS_1"


class RestartableS3:
    """moto's S3 on one port, stopped and started again (its buckets and objects stay in memory)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def s3():
    server = RestartableS3()
    server.start()
    yield server
    server.stop()


def _on_s3(s3: RestartableS3) -> dict[str, Any]:
    """Settings for a new bucket on ``s3``."""
    bucket = f"outage-{uuid.uuid4().hex[:16]}"
    s3_client(s3.endpoint).create_bucket(Bucket=bucket)
    return {
        "storage_backend": "s3", "s3_endpoint": s3.endpoint, "s3_bucket": bucket, "s3_region": REGION,
        "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY, "s3_allow_http": True,
        "storage_timeout_seconds": 2.0,
    }  # fmt: skip


def _worker(settings: Settings, log_path: Any) -> Any:
    return _start_worker(
        settings, log_path, queue="all",
        PARTICIPANTS_STORAGE_BACKEND="s3", PARTICIPANTS_S3_ENDPOINT=str(settings.s3_endpoint),
        PARTICIPANTS_S3_BUCKET=settings.s3_bucket, PARTICIPANTS_S3_REGION=REGION,
        PARTICIPANTS_S3_ACCESS_KEY_ID=ACCESS_KEY, PARTICIPANTS_S3_SECRET_ACCESS_KEY=SECRET_KEY,
        PARTICIPANTS_S3_ALLOW_HTTP="true", PARTICIPANTS_STORAGE_TIMEOUT_SECONDS="2",
        PARTICIPANTS_JOB_RETRY_DELAY_SECONDS="1", PARTICIPANTS_JOB_HEARTBEAT_SECONDS="0.2",
        PARTICIPANTS_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
    )  # fmt: skip


async def _until_status(pool: Any, job_uuid: str, statuses: set[str], seconds: float, log_path: Any) -> Any:
    deadline = time.monotonic() + seconds
    while (job := await _job(pool, job_uuid))["status"] not in statuses:
        assert job["status"] in ("IN_QUEUE", "IN_PROGRESS"), (job["status"], job["error"])
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        await asyncio.sleep(0.02)
    return job


async def _file(client: Any, world: Any, job_uuid: str) -> bytes:
    resp = await download(client, world, job_uuid)
    body = await resp.read()
    assert resp.status == 200, body[:300]
    return body


async def _outage(s3: RestartableS3, client: Any, world: Any, served: str, unfinished: str) -> dict[str, Any]:
    """Storage down for ``OUTAGE_SECONDS``: ``served`` (a finished job's file) must answer 503 with
    ``Retry-After``, ``unfinished`` must serve no file. Returns what was seen."""
    await asyncio.to_thread(s3.stop)
    began = time.monotonic()
    seen: dict[str, Any] = {"downloads during the outage": {}, "unfinished job's answers": set()}
    while time.monotonic() - began < OUTAGE_SECONDS:
        resp = await download(client, world, served)
        await resp.read()
        assert resp.status == 503 and resp.headers.get("Retry-After"), resp.status
        seen["downloads during the outage"][503] = seen["downloads during the outage"].get(503, 0) + 1
        resp = await download(client, world, unfinished)
        body = await resp.json()
        # OC4's polling answer (the job runs, or waits to run again), never a part of a file.
        assert resp.status == 200 and body["message"] == "errorCode.jobInProgress", body
        seen["unfinished job's answers"].add(body["message"])
        await asyncio.sleep(0.3)
    await asyncio.to_thread(s3.start)
    seen["outage (s)"] = round(time.monotonic() - began, 2)
    return seen


async def test_storage_down_mid_extract_the_job_is_retried_and_the_file_is_whole(
    s3, make_client, world, pool, settings, tmp_path, capsys
):
    started = time.monotonic()
    overrides = _on_s3(s3)
    on_s3 = settings.model_copy(update=overrides)
    client = await make_client(**overrides)
    await world.standard()
    rows = 300_000  # a file of several S3 parts, written over a couple of seconds
    await seed_site(pool, SITE_A, rows)
    log_path = tmp_path / "worker.log"
    worker = _worker(on_s3, log_path)
    try:
        reference = await submit(client, world)
        ref = await _until_status(pool, reference, {"COMPLETED"}, 60, log_path)
        disturbed = await submit(client, world)
        deadline = time.monotonic() + 30
        while not ((job := await _job(pool, disturbed))["status"] == "IN_PROGRESS" and job["rows_done"] > 0):
            assert time.monotonic() < deadline and job["status"] in ("IN_QUEUE", "IN_PROGRESS"), job["status"]
            await asyncio.sleep(0.01)
        seen = await _outage(s3, client, world, reference, disturbed)
        restarted = time.monotonic()
        job = await _until_status(pool, disturbed, {"COMPLETED", "FAILED"}, 60, log_path)
        completed_after = time.monotonic() - restarted
    finally:
        _stop(worker)
    body = await _file(client, world, disturbed)
    report(capsys, "Object storage down mid-extract:", {
        **seen, "extract attempts": job["attempts"], "completed after the restart (s)": round(completed_after, 2),
        "file bytes": job["byte_size"], "same sha256 as the undisturbed run": job["sha256"] == ref["sha256"],
        "test run time (s)": round(time.monotonic() - started, 1),
    })  # fmt: skip
    assert job["status"] == "COMPLETED", job["error"]
    assert job["attempts"] >= 2  # the outage outlasted the S3 client's own retries: the job ran again
    assert (
        job["sha256"] == ref["sha256"] and job["byte_size"] == ref["byte_size"] and job["row_count"] == rows
    )
    assert hashlib.sha256(body).hexdigest() == ref["sha256"]


async def test_storage_down_mid_bulk_upload_the_job_is_retried_and_adds_each_row_once(
    s3, make_client, world, pool, settings, tmp_path, capsys
):
    started = time.monotonic()
    overrides = _on_s3(s3)
    on_s3 = settings.model_copy(update=overrides)
    client = await make_client(**overrides)
    await world.standard()
    # The same file into a study of its own, undisturbed: its result file is the reference.
    await world.study(OTHER_STUDY, name="Mars")
    await world.site(OTHER_SITE, study=OTHER_STUDY)
    async with pool.acquire() as conn:
        await directory.grant_role(
            conn, "crc_a", directory.RoleIn(studyOid=OTHER_STUDY, siteOid=OTHER_SITE, role="ra")
        )
    n = 40_000
    data = csv_bytes("ParticipantID", *(f"K-{i:06d}" for i in range(n)))
    other_url = f"/pages/auth/api/clinicaldata/studies/{OTHER_STUDY}/sites/{OTHER_SITE}/participants/bulk"
    log_path = tmp_path / "worker.log"
    worker = _worker(on_s3, log_path)
    try:
        reference = await submit_bulk(client, world, data, url=other_url)
        await _until_status(pool, reference, {"COMPLETED"}, 60, log_path)
        disturbed = await submit_bulk(client, world, data)
        await _until_status(pool, disturbed, {"IN_PROGRESS"}, 30, log_path)
        seen = await _outage(s3, client, world, reference, disturbed)
        restarted = time.monotonic()
        job = await _until_status(pool, disturbed, {"COMPLETED", "FAILED"}, 60, log_path)
        completed_after = time.monotonic() - restarted
    finally:
        _stop(worker)
    expected, got = await _file(client, world, reference), await _file(client, world, disturbed)
    added = await pool.fetchval(
        "SELECT count(*) FROM participants p JOIN studies s ON s.id = p.study_id"
        " WHERE s.oid = $1 AND p.subject_key LIKE 'K-%'",
        STUDY,
    )
    report(capsys, "Object storage down mid-bulk-upload:", {
        **seen, "bulk attempts": job["attempts"], "completed after the restart (s)": round(completed_after, 2),
        "result file identical to the undisturbed run's": got == expected, "participants added": added,
        "test run time (s)": round(time.monotonic() - started, 1),
    })  # fmt: skip
    assert job["status"] == "COMPLETED", job["error"]
    assert job["attempts"] >= 2
    assert got == expected and len(got.splitlines()) == n + 1
    assert added == n and job["result"]["uploadCount"] == n
