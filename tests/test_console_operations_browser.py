"""The console's job progress and operators' pages in Chromium, at desktop and phone widths: a
progress bar with its rate and time left updated in place, cancel and retry shown at once, audit
details as rows, webhook endpoints managed from the console, filters and charts that fit; and the
CSV forms hospitals have, through the console. Every page is checked for console errors and for a
page wider than the window."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from service.core import storage as storage_module
from service.core.jobs import lifecycle
from tests.test_console_browser import DOCS, REASON, SHOTS, console, sign_in, url  # noqa: F401  (the fixture)
from tests.test_extract import run_jobs, seed_site
from tests.test_webhooks_support import finished_job, run_default_worker
from tests.world import SITE_A, STUDY, expect

pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def watch_errors(page) -> list[str]:
    """Console errors and uncaught exceptions of ``page``, as they happen."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


async def assert_fits(page) -> None:
    """No horizontal scrolling of the page itself (a wide table may scroll inside its box)."""
    wide = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, f"{page.url} is {wide} px wider than the window"


async def test_job_page_shows_a_live_bar_with_rate_and_time_left(console, pool, settings, monkeypatch):
    client, context = console
    await seed_site(pool, SITE_A, 60_000)
    write = storage_module.Upload.write

    async def slow_storage(self, chunk: bytes) -> None:  # a store that takes its time per MiB
        await asyncio.sleep(0.4)
        await write(self, chunk)

    monkeypatch.setattr(storage_module.Upload, "write", slow_storage)
    page = await sign_in(client, context, "crc_a")
    errors = watch_errors(page)
    await page.goto(url(client, f"/console/studies/{STUDY}/sites/{SITE_A}"))
    await page.get_by_label("for Excel (UTF-8 byte-order mark)").check()
    await page.get_by_role("button", name="Extract contact information").click()
    await page.wait_for_selector("text=The extract was started.")
    await page.locator("#jobs").get_by_role("link", name="Extract").first.click()
    await page.wait_for_url("**/console/jobs/*")
    assert "updates by itself" in await page.locator("#live-note").inner_text()
    await page.evaluate("window.notReloaded = true")
    fast = settings.model_copy(update={"job_heartbeat_seconds": 0.1, "extract_job_timeout_seconds": 120})
    worker = asyncio.create_task(run_jobs(fast))
    rate = page.locator("#job-rate", has_text="rows/s")
    await rate.wait_for()
    text = await rate.inner_text()
    assert "Writing the file" in text and "left" in text, text
    assert await page.locator("#job-progress progress").get_attribute("max") == "60000"
    if SHOTS:
        await page.screenshot(path=str(DOCS / "console-job-progress.png"))
    await page.set_viewport_size(PHONE)
    await assert_fits(page)
    await page.set_viewport_size(DESKTOP)
    await page.wait_for_selector("#job-status:has-text('COMPLETED')", timeout=60_000)
    await worker
    assert await page.evaluate("window.notReloaded === true")  # updated in place
    assert "60,000 of 60,000 rows (100 %)" in await page.locator("#job-progress").inner_text()
    async with page.expect_download() as info:
        await page.locator("#download").click()
    body = Path(await (await info.value).path()).read_bytes()
    assert body.startswith(b"\xef\xbb\xbfParticipantId,")  # the box asked for Excel's mark
    assert errors == []


async def test_operator_sees_cancel_and_retry_at_once_and_audit_rows(console, pool, settings):
    client, context = console
    queued = await finished_job(pool, "FAILED")
    await pool.execute("UPDATE jobs SET status = 'IN_QUEUE', completed_at = NULL WHERE uuid = $1", queued)
    running = await finished_job(pool, "FAILED")
    await pool.execute(
        "UPDATE jobs SET status = 'IN_PROGRESS', completed_at = NULL, attempts = 1, heartbeat_at = now()"
        " WHERE uuid = $1",
        running,
    )
    page = await sign_in(client, context, "admin")
    errors = watch_errors(page)

    await page.goto(url(client, f"/console/ops/jobs/{queued}"))
    await page.get_by_role("button", name="Cancel").click()
    await page.wait_for_url("**?done=cancel")
    assert await page.locator("#job-status").inner_text() == "CANCELLED"
    assert await page.get_by_role("button", name="Cancel").count() == 0

    await page.goto(url(client, f"/console/ops/jobs/{running}"))
    await page.evaluate("window.notReloaded = true")
    await page.get_by_role("button", name="Cancel").click()
    await page.wait_for_url("**?done=cancel")
    assert "Cancel requested" in await page.locator("#notice").inner_text()
    assert await page.locator("#job-status").inner_text() == "IN_PROGRESS"
    assert "cancel requested" in await page.locator("#cancel-requested").inner_text()
    assert await page.get_by_role("button", name="Cancel").count() == 0  # not offered twice
    await page.evaluate("window.notReloaded = true")
    async with pool.acquire() as conn:  # the worker stops at its next chunk
        await lifecycle.cancel_attempt(conn, running, 1)
    await page.wait_for_selector("#job-status:has-text('CANCELLED')")
    assert await page.evaluate("window.notReloaded === true")
    changes = page.locator("table.changes", has_text="cancel requested").first
    rows = await changes.locator("tbody tr").all_inner_texts()
    assert ["status", "IN_PROGRESS", "cancel requested"] in [r.split("\t") for r in rows]

    failed = await finished_job(pool, "FAILED")
    await pool.execute("UPDATE jobs SET object_key = 'extracts/' || uuid || '.csv' WHERE uuid = $1", failed)
    await page.goto(url(client, f"/console/ops/jobs/{failed}"))
    await page.get_by_role("button", name="Retry").click()
    await page.wait_for_url("**?done=retry")
    assert await page.locator("#job-status").inner_text() == "IN_QUEUE"
    assert await page.get_by_role("button", name="Retry").count() == 0
    await run_jobs(settings)
    await page.wait_for_selector("#job-status:has-text('COMPLETED')")  # followed without a reload

    await page.goto(url(client, "/console/ops/audit?action=admin.job.retry"))
    cells = await page.locator("table.changes tbody tr").all_inner_texts()
    assert ["attempts", "1", "0"] in [c.split("\t") for c in cells]
    assert "{" not in await page.locator("main table").first.inner_text()  # no raw JSON
    for size in (DESKTOP, PHONE):
        await page.set_viewport_size(size)
        for path in ("/console/ops/audit", "/console/ops/jobs", f"/console/ops/jobs/{failed}"):
            await page.goto(url(client, path))
            await assert_fits(page)
    assert errors == []


async def test_webhook_endpoints_are_added_rotated_and_disabled_from_the_console(console, world):
    client, context = console
    page = await sign_in(client, context, "admin")
    errors = watch_errors(page)
    await page.get_by_role("link", name="Webhooks").click()
    await page.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    await page.get_by_label("Description").fill("CTMS")
    await page.get_by_label("job.failed").uncheck()
    await page.get_by_role("button", name="Add endpoint").click()
    secret = await page.locator("#secret-value").inner_text()
    assert secret.startswith("whsec_")
    listed = await expect(await client.get("/admin/api/webhooks", headers=world.auth("admin")), 200)
    [hook] = listed["webhooks"]
    assert (hook["url"], hook["eventTypes"], hook["enabled"]) == (
        "http://127.0.0.1:9/hook",
        ["job.completed"],
        True,
    )
    await page.goto(url(client, "/console/ops/webhooks"))
    assert await page.locator("#secret-value").count() == 0  # shown once

    await page.get_by_role("button", name=f"Rotate the secret of endpoint {hook['id']}").click()
    rotated = await page.locator("#secret-value").inner_text()
    assert rotated.startswith("whsec_") and rotated != secret
    assert "previous secrets keep signing alongside until" in await page.locator("#new-secret").inner_text()

    await page.get_by_role("button", name=f"Disable endpoint {hook['id']}").click()
    await page.wait_for_url("**?done=disabled")
    assert await page.locator(f"tr[data-endpoint='{hook['id']}'] td.enabled").inner_text() == "no"
    assert (
        await expect(await client.get(f"/admin/api/webhooks/{hook['id']}", headers=world.auth("admin")), 200)
    )["enabled"] is False
    await page.get_by_role("button", name=f"Enable endpoint {hook['id']}").click()
    await page.wait_for_url("**?done=enabled")
    assert await page.locator(f"tr[data-endpoint='{hook['id']}'] td.enabled").inner_text() == "yes"

    await page.set_viewport_size(PHONE)
    await assert_fits(page)
    assert errors == []
    await page.get_by_label("URL").fill("http://169.254.169.254/latest")  # the address policy holds
    await page.get_by_role("button", name="Add endpoint").click()
    assert await page.locator("#webhook-error").count() == 1
    actions = {r["action"] for r in await world.pool.fetch("SELECT action FROM audit_log")}
    assert {"admin.webhook.create", "admin.webhook.rotateSecret", "admin.webhook.update"} <= actions


async def test_the_dashboard_draws_the_last_hour_and_day(console, pool):
    client, context = console
    for status in ("COMPLETED", "COMPLETED", "FAILED"):
        job = await finished_job(pool, status)
        await pool.execute(
            "UPDATE jobs SET started_at = completed_at - interval '2 seconds' WHERE uuid = $1", job
        )
    page = await sign_in(client, context, "admin")
    errors = watch_errors(page)
    await page.get_by_role("link", name="Dashboard").click()
    for window in ("hour", "day"):
        await page.goto(url(client, f"/console/ops/dashboard?window={window}"))
        assert await page.locator("svg.chart").count() == 4
        jobs = page.locator("#chart-jobs")
        assert "2 completed, 1 failed in all" in await jobs.locator("desc").text_content()
        assert (
            await jobs.locator("rect.series-0").count() == 1
            and await jobs.locator("rect.series-1").count() == 1
        )
        duration = await page.locator("#chart-duration desc").text_content()
        assert "p50 at most 2 s" in duration, duration
        if SHOTS and window == "hour":
            await page.screenshot(path=str(DOCS / "console-dashboard.png"), full_page=True)
        for size in (DESKTOP, PHONE):
            await page.set_viewport_size(size)
            await assert_fits(page)
    assert errors == []
    resp = await page.goto(url(client, "/console/ops/dashboard?window=week"))
    assert resp.status == 400


async def test_a_semicolon_file_through_the_console_and_a_refused_encoding(console, settings, tmp_path):
    client, context = console
    page = await sign_in(client, context, "crc_a")
    errors = watch_errors(page)
    site = url(client, f"/console/studies/{STUDY}/sites/{SITE_A}")
    await page.goto(site)
    csv = tmp_path / "export.csv"
    csv.write_bytes("\ufeffParticipantID;LastName\r\nEU-1;Müller\r\nEU-2;Øster\r\nEU-1;Again\r\n".encode())
    await page.get_by_label("CSV file").set_input_files(str(csv))
    await page.get_by_role("button", name="Upload").click()
    await page.wait_for_url("**/console/jobs/*")
    worker = asyncio.create_task(run_default_worker(settings))
    await page.locator("#bulk-result").wait_for()
    await worker
    rows = [r.split("\t") for r in await page.locator("#bulk-result tbody tr").all_inner_texts()]
    assert rows[0][:3] == ["4", "EU-1", "Failed"]
    assert "on an earlier row of the same file" in rows[0][3]
    assert [r[1:3] for r in rows[1:]] == [["EU-1", "Added"], ["EU-2", "Added"]]

    assert errors == []
    await page.goto(site)
    cp1252 = tmp_path / "windows.csv"
    cp1252.write_bytes("ParticipantID;LastName\r\nEU-3;Smith\r\nEU-4;Müller\r\n".encode("windows-1252"))
    await page.get_by_label("CSV file").set_input_files(str(cp1252))
    await page.get_by_role("button", name="Upload").click()
    assert await page.locator("#error-where").inner_text() == "Row 3, column 2 of the file."
    assert "CSV UTF-8" in await page.locator("#error-fix").inner_text()
    await page.get_by_role("link", name="Back to the site").click()
    await page.wait_for_url(site)


def test_the_dashboard_buckets_align_on_their_size():
    from service.core.dashboard import window_bounds

    now = dt.datetime(2026, 12, 7, 19, 7, 31, tzinfo=dt.UTC)
    start, end, bucket = window_bounds("day", now)
    assert (end, bucket) == (dt.datetime(2026, 12, 7, 19, 15, tzinfo=dt.UTC), dt.timedelta(minutes=15))
    assert end - start == dt.timedelta(days=1)
    start, end, _ = window_bounds("hour", now)
    assert (start, end) == (
        dt.datetime(2026, 12, 7, 18, 8, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 7, 19, 8, tzinfo=dt.UTC),
    )


async def test_the_queue_page_follows_the_workers_heartbeat(console, settings):
    from redis.asyncio import Redis

    from service.core import worker_beats

    client, context = console
    page = await sign_in(client, context, "admin")
    errors = watch_errors(page)
    await page.get_by_role("link", name="Queue").click()
    await page.evaluate("window.notReloaded = true")
    redis = Redis.from_url(settings.redis_url)
    try:  # what a worker process writes every PARTICIPANTS_WORKER_HEALTH_INTERVAL_SECONDS
        line = "Dec-07 19:00:00 j_complete=42 j_failed=1 j_retried=0 j_ongoing=2 queued=0"
        queue = settings.extract_queue
        await worker_beats.record(redis, queue, worker_beats.beat_key(queue), line, 10.0)
        await page.locator("#queue", has_text="j_complete=42").wait_for()
    finally:
        await redis.aclose()
    assert await page.evaluate("window.notReloaded === true")
    assert errors == []
