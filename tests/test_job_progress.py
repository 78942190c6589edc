"""Progress a person can follow on long jobs: an extract knows its total before it streams and
reports the rows written as it goes, a bulk upload says when it is committing; both with a rate
and a time left, read from the job status while the job runs."""

from __future__ import annotations

import asyncio

from service.core import storage as storage_module
from service.core.bulk import staging
from tests.bulk_files import SITE_URL, csv_bytes, upload
from tests.people import seed
from tests.test_extract import SUBMIT, run_jobs, submit
from tests.test_webhooks_support import run_default_worker
from tests.world import SITE_A, STUDY, expect

JOBS = "/pages/auth/api/jobs"
ROWS = 100_000


async def add_many(world, n: int) -> None:
    for start in range(1, n + 1, 20_000):
        people = [
            {
                "subject_key": f"P-{g:07d}",
                "first_name": f"Firstname-{g}",
                "last_name": f"Lastname-of-participant-{g}",
            }
            for g in range(start, min(n, start + 19_999) + 1)
        ]
        await seed(world.pool, STUDY, SITE_A, people)


async def watch(client, world, job_uuid: str, done: asyncio.Task) -> list[dict]:
    """Every status the owner could see while ``done`` runs."""
    seen = []
    while not done.done():
        resp = await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a"))
        seen.append(await expect(resp, 200))
        await asyncio.sleep(0.05)
    await done
    return seen


async def test_an_extract_knows_its_total_and_reports_rows_as_it_writes(client, world, settings, monkeypatch):
    await world.standard()
    await add_many(world, ROWS)
    write = storage_module.Upload.write

    async def slow_storage(self, chunk: bytes) -> None:  # a store that takes its time per MiB
        await asyncio.sleep(0.25)
        await write(self, chunk)

    monkeypatch.setattr(storage_module.Upload, "write", slow_storage)
    fast = settings.model_copy(update={"job_heartbeat_seconds": 0.1, "extract_job_timeout_seconds": 120})
    job_uuid = await submit(client, world, url=SUBMIT)
    seen = await watch(client, world, job_uuid, asyncio.create_task(run_jobs(fast)))

    writing = [s for s in seen if s["status"] == "IN_PROGRESS" and s["progress"]["rowsDone"] > 0]
    assert writing, [s["progress"] for s in seen]
    for status in writing:  # counted before a row was streamed: every reading knows the total
        p = status["progress"]
        assert p["rowsExpected"] == ROWS and p["phase"] == "writing" and "rowsExpectedEstimated" not in p
    middle = [s["progress"] for s in writing if 0 < s["progress"]["rowsDone"] < ROWS]
    assert len({p["rowsDone"] for p in middle}) >= 2, middle  # it moves, not 0 then done
    assert all(p["rowsPerSecond"] > 0 and p["secondsLeft"] >= 0 for p in middle), middle
    final = seen[-1] if seen[-1]["status"] == "COMPLETED" else None
    final = final or await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert final["status"] == "COMPLETED"
    assert final["progress"] == {"rowsDone": ROWS, "rowsExpected": ROWS}


async def test_a_bulk_upload_says_when_it_is_committing(client, world, settings, monkeypatch):
    await world.standard()
    rows = [f"B-{i:06d}" for i in range(50_000)]
    committing = asyncio.Event()
    release = asyncio.Event()

    async def hold(conn) -> None:  # inside the insert's transaction, just before its commit
        committing.set()
        await release.wait()

    monkeypatch.setattr(staging, "before_commit", hold)
    resp = await upload(
        client, world.token("crc_a"), csv_bytes("ParticipantID", *rows), url=SITE_URL + "?async=y"
    )
    job_uuid = (await expect(resp, 200)).split()[-1]
    queued = await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert queued["status"] == "IN_QUEUE" and "phase" not in queued["progress"]

    run = asyncio.create_task(run_default_worker(settings))
    await asyncio.wait_for(committing.wait(), 60)
    status = await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    release.set()
    await run
    assert status["status"] == "IN_PROGRESS"
    p = status["progress"]
    assert (p["phase"], p["rowsDone"], p["rowsExpected"]) == ("committing", 50_000, 50_000)
    assert "rowsExpectedEstimated" not in p and "secondsLeft" not in p  # no guess at a commit's end
    done = await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert done["status"] == "COMPLETED" and done["progress"] == {"rowsDone": 50_000, "rowsExpected": 50_000}


async def test_a_bulk_upload_estimates_its_total_while_reading(client, world, settings, monkeypatch):
    """Until the whole file is read, the total is the file's size over the bytes per row so far."""
    await world.standard()
    rows = [f"E-{i:06d}" for i in range(45_000)]  # three COPY batches: two progress reports before the end
    reports: list[tuple[int | None, bool]] = []
    stage = staging.stage

    async def watched_stage(conn, batch, seal) -> None:
        # Before each COPY after the first: the heartbeat (every 0.05 s) has had time to record
        # the estimate the previous batch's progress made; wait up to 2 s for it on a busy machine.
        for _ in range(40 if reports else 1):
            row = await world.pool.fetchrow("SELECT rows_expected, rows_estimated FROM jobs")
            if row["rows_estimated"]:
                break
            await asyncio.sleep(0.05)
        reports.append((row["rows_expected"], row["rows_estimated"]))
        await stage(conn, batch, seal)

    monkeypatch.setattr(staging, "stage", watched_stage)
    fast = settings.model_copy(update={"job_heartbeat_seconds": 0.05})
    resp = await upload(
        client, world.token("crc_a"), csv_bytes("ParticipantID", *rows), url=SITE_URL + "?async=y"
    )
    await expect(resp, 200)
    await run_default_worker(fast)
    estimated = [expected for expected, flagged in reports if flagged]
    assert estimated, reports
    assert all(abs(e - 45_000) <= 45 for e in estimated), estimated  # one ID width: within 0.1 %


async def test_a_very_large_site_shows_the_planners_estimate_labelled_so(
    client, world, settings, monkeypatch
):
    """Past ESTIMATE_ABOVE rows the count is skipped: the planner's estimate, flagged, until the end."""
    from service.core import extracts

    await world.standard()
    await add_many(world, 30_000)
    await world.pool.execute("ANALYZE participants")
    monkeypatch.setattr(extracts, "ESTIMATE_ABOVE", 1_000)  # "very large", for this test's small site
    write = storage_module.Upload.write

    async def slow_storage(self, chunk: bytes) -> None:
        await asyncio.sleep(0.3)
        await write(self, chunk)

    monkeypatch.setattr(storage_module.Upload, "write", slow_storage)
    fast = settings.model_copy(update={"job_heartbeat_seconds": 0.1, "extract_job_timeout_seconds": 120})
    job_uuid = await submit(client, world, url=SUBMIT)
    seen = await watch(client, world, job_uuid, asyncio.create_task(run_jobs(fast)))
    running = [s["progress"] for s in seen if s["status"] == "IN_PROGRESS" and s["progress"].get("phase")]
    assert running and all(p["rowsExpectedEstimated"] is True for p in running), running
    assert all(abs(p["rowsExpected"] - 30_000) < 3_000 for p in running), running  # ANALYZE's sample
    done = await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert done["progress"] == {"rowsDone": 30_000, "rowsExpected": 30_000}  # exact at the end, unflagged
