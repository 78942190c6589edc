"""The console in a real browser (system Chromium through Playwright): sign-in and sign-out, a CRC's
extract with live progress and a download identical to the API's, a bulk upload's failures, what a
monitor and another site's CRC cannot see or do, an admin's retry and redelivery, and CSRF.

``PARTICIPANTS_SCREENSHOTS=1`` also writes docs/console-queue.png (see ``make screenshots``; the
other pictures come from the participant and operations browser tests).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.browser import browser_context, unavailable_reason
from tests.console_helpers import PASSWORD, give_password
from tests.test_extract import run_jobs, seed_site
from tests.test_webhooks_support import (
    ALLOW_LOCAL,
    Receiver,
    finished_job,
    make_due,
    run_default_worker,
    sweep,
)
from tests.world import SITE_A, SITE_B, STUDY, expect

REASON = unavailable_reason()
if REASON:
    print(REASON)  # shown with -s; the skip reason below is in pytest's summary
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

DOCS = Path(__file__).resolve().parent.parent / "docs"
SHOTS = os.environ.get("PARTICIPANTS_SCREENSHOTS") == "1"
TIMEOUT_MS = 30_000


@pytest.fixture
async def console(make_client, world, pool):
    await world.standard()
    await give_password(pool, "crc_a", "crc_b", "monitor", "admin")
    client = await make_client(**ALLOW_LOCAL)
    async with browser_context() as context:
        context.set_default_timeout(TIMEOUT_MS)
        yield client, context


def url(client, path: str) -> str:
    return str(client.make_url(path))


async def sign_in(client, context, username: str):
    page = await context.new_page()
    await page.goto(url(client, "/console/login"))
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/")
    return page


async def test_sign_in_and_sign_out(console):
    client, context = console
    page = await context.new_page()
    await page.goto(url(client, "/console/"))
    await page.wait_for_url("**/console/login")
    await page.get_by_label("Username").fill("crc_a")
    await page.get_by_label("Password").fill("not the password")
    await page.keyboard.press("Enter")  # the form works from the keyboard
    assert "Wrong username or password" in await page.locator("#login-error").inner_text()
    page = await sign_in(client, context, "crc_a")
    assert await page.title() == "Studies and sites · Participants"
    await page.get_by_role("button", name="Sign out", exact=True).click()
    await page.wait_for_url("**/console/login")
    await page.goto(url(client, "/console/"))
    await page.wait_for_url("**/console/login")


async def test_sign_out_everywhere_button(console):
    client, context = console
    page = await sign_in(client, context, "crc_a")
    await page.get_by_role("button", name="Sign out everywhere").click()
    await page.wait_for_url("**/console/login")
    await page.goto(url(client, "/console/"))
    await page.wait_for_url("**/console/login")


async def test_the_extract_button_is_reached_and_used_with_the_keyboard(console, pool):
    client, context = console
    page = await sign_in(client, context, "crc_a")
    await page.goto(url(client, f"/console/studies/{STUDY}/sites/{SITE_A}"))
    for _ in range(30):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "extract":
            break
    else:
        raise AssertionError("Tab never reached the extract button")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("text=The extract was started.")
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 1


async def test_crc_extracts_watches_progress_and_downloads_the_apis_file(console, pool, settings, world):
    client, context = console
    await seed_site(pool, SITE_A, 300)
    page = await sign_in(client, context, "crc_a")
    await page.get_by_role("link", name=f"Site {SITE_A}").click()
    assert await page.get_by_role("button", name="Extract contact information").count() == 1
    await page.get_by_role("button", name="Extract contact information").click()
    await page.wait_for_selector("text=The extract was started.")
    assert await page.locator("#jobs td.status").first.inner_text() == "IN_QUEUE"
    await page.evaluate("window.notReloaded = true")
    worker = asyncio.create_task(run_jobs(settings))  # only now does a worker take the job
    await page.locator("#jobs .progress-text", has_text="300 of 300 rows (100 %)").wait_for()
    await worker
    assert await page.evaluate("window.notReloaded === true")  # updated in place, never reloaded
    async with page.expect_download() as info:
        await page.locator("#jobs").get_by_role("link", name="Download").click()
    download = await info.value
    browser_bytes = Path(await download.path()).read_bytes()
    job_uuid = str(await pool.fetchval("SELECT uuid FROM jobs"))
    api = await client.get(f"/pages/auth/api/jobs/{job_uuid}/downloadFile", headers=world.auth("crc_a"))
    assert api.status == 200
    assert browser_bytes == await api.read() and browser_bytes.count(b"\n") == 301
    assert download.suggested_filename.startswith(f"{STUDY}-{SITE_A}_Participant Access Code_")


async def test_bulk_upload_shows_failed_rows_first_with_reasons(console, settings, tmp_path):
    client, context = console
    page = await sign_in(client, context, "crc_a")
    await page.goto(url(client, f"/console/studies/{STUDY}/sites/{SITE_A}"))
    csv = tmp_path / "upload.csv"
    csv.write_text("ParticipantID,EmailAddress\nOK-1,ok1@example.org\nBAD-1,not-an-email\nOK-2,\nOK-1,\n")
    await page.get_by_label("CSV file").set_input_files(str(csv))
    await page.get_by_role("button", name="Upload").click()
    await page.wait_for_url("**/console/jobs/*")
    worker = asyncio.create_task(run_default_worker(settings))
    table = page.locator("#bulk-result")
    await table.wait_for()
    await worker
    rows = await table.locator("tbody tr").all_inner_texts()
    assert [r.split("\t")[2] for r in rows] == ["Failed", "Failed", "Added", "Added"]
    failed = "\n".join(rows[:2])
    assert "BAD-1" in failed and "This is not a valid email address." in failed
    assert (
        rows[0].split("\t")[:3] == ["3", "BAD-1", "Failed"] and "(errorCode.invalidEmailAddress)" in rows[0]
    )
    # OK-1 again on row 5: its own reason, in words and by code (not just any error), and its row.
    assert rows[1].split("\t")[:3] == ["5", "OK-1", "Failed"]
    assert rows[1].split("\t")[3] == (
        "This participant ID is on an earlier row of the same file. (errorCode.participantIDDuplicatedInFile)"
    )
    assert await page.get_by_role("link", name="Download").count() == 1  # the result CSV


async def test_monitor_sees_no_extract_button_and_a_forged_post_is_refused(console, pool):
    client, context = console
    page = await sign_in(client, context, "monitor")
    await page.goto(url(client, f"/console/studies/{STUDY}/sites/{SITE_A}"))
    assert await page.get_by_role("button", name="Extract contact information").count() == 0
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    forged = await page.request.post(
        url(client, f"/console/studies/{STUDY}/sites/{SITE_A}/extract"), form={"csrf": csrf}, max_redirects=0
    )
    assert forged.status == 403 and "noSufficientPrivileges" in await forged.text()
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_another_sites_job_is_not_visible(console, pool):
    client, context = console
    job_uuid = await finished_job(pool, "COMPLETED", owner="crc_a")
    page = await sign_in(client, context, "crc_b")
    await page.goto(url(client, f"/console/studies/{STUDY}/sites/{SITE_B}"))
    assert str(job_uuid) not in await page.content()
    resp = await page.goto(url(client, f"/console/jobs/{job_uuid}"))
    assert resp.status == 404 and "There is no such job" in await page.content()
    resp = await page.goto(url(client, f"/console/studies/{STUDY}/sites/{SITE_A}"))
    assert resp.status == 403


async def test_admin_retries_a_failed_job_and_redelivers_a_webhook(console, pool, world, settings):
    client, context = console
    receiver = Receiver(script=[500])
    try:
        hook_url = await receiver.start()
        body = {"url": hook_url, "description": "CTMS", "eventTypes": ["job.failed"]}
        hook = await expect(
            await client.post("/admin/api/webhooks", json=body, headers=world.auth("admin")), 201
        )
        job_uuid = await finished_job(pool, "FAILED")
        # As the extract submit names it (the helper leaves it out: its job never runs).
        await pool.execute(
            "UPDATE jobs SET object_key = 'extracts/' || uuid || '.csv' WHERE uuid = $1", job_uuid
        )
        s = settings.model_copy(update=ALLOW_LOCAL)
        await make_due(pool)
        await sweep(s, pool)
        await run_default_worker(s)
        assert len(receiver.requests) == 1  # answered 500: not delivered

        page = await sign_in(client, context, "admin")
        await page.get_by_role("link", name="Queue").click()
        assert await page.locator("h1").inner_text() == "Queue health"
        if SHOTS:
            await page.screenshot(path=str(DOCS / "console-queue.png"), full_page=True)
        await page.goto(url(client, "/console/ops/jobs?status=FAILED"))
        await page.locator(f"a[href$='/ops/jobs/{job_uuid}']").click()
        assert await page.locator("#job-status").inner_text() == "FAILED"
        await page.get_by_role("button", name="Retry").click()
        await page.wait_for_selector("#job-status:has-text('IN_QUEUE')")
        await run_jobs(settings)
        await page.reload()
        assert await page.locator("#job-status").inner_text() == "COMPLETED"
        actions = await pool.fetch("SELECT action FROM audit_log WHERE username = 'admin'")
        assert "admin.job.retry" in {a["action"] for a in actions}

        await page.goto(url(client, f"/console/ops/webhooks/{hook['id']}/deliveries"))
        await page.get_by_role("button", name="Redeliver").first.click()
        await page.wait_for_url(f"**/ops/webhooks/{hook['id']}/deliveries")
        await run_default_worker(s)
        assert len(receiver.requests) == 2
        assert receiver.requests[0][0]["webhook-id"] == receiver.requests[1][0]["webhook-id"]
        await page.reload()
        assert await page.locator("td.status").first.inner_text() == "delivered"
    finally:
        await receiver.close()


async def test_a_form_without_its_csrf_token_is_refused(console, pool):
    client, context = console
    page = await sign_in(client, context, "crc_a")
    await page.goto(url(client, f"/console/studies/{STUDY}/sites/{SITE_A}"))
    # Take the token out of the extract form, as a page on another site could not know it.
    await page.evaluate("document.querySelectorAll('form input[name=csrf]').forEach(e => e.remove())")
    await page.get_by_role("button", name="Extract contact information").click()
    await page.wait_for_selector("text=errorCode.csrfTokenInvalid")
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_sign_in_with_your_organisation_runs_the_code_flow_with_pkce(make_client, world, pool, oidc):
    await world.standard()
    await oidc.configure(codeUser="crc_a", clientId="console", audience="participants-api")
    client = await make_client(
        jwt_secret=None, oidc_issuer=oidc.issuer, oidc_client_id="console", oidc_audience="participants-api"
    )
    async with browser_context() as context:
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        await page.goto(url(client, "/console/login"))
        await page.get_by_role("link", name="Sign in with your organisation").click()
        await page.wait_for_url("**/console/")
        assert SITE_A in await page.content()
        # A callback with a state this browser never got is refused.
        resp = await page.goto(url(client, "/console/login/oidc/callback?code=x&state=forged"))
        assert resp.status == 403
        await oidc.configure(codeUser="nobody", clientId="console", audience="participants-api")
        fresh = await context.new_page()
        await context.clear_cookies()
        await fresh.goto(url(client, "/console/login"))
        await fresh.get_by_role("link", name="Sign in with your organisation").click()
        await fresh.wait_for_selector("text=You have no role here.")  # unknown here: no session
        assert (await fresh.goto(url(client, "/console/"))).url.endswith("/console/login")
