"""The console over HTTP: sessions, CSRF, sign-in throttling, and that pages refuse what the API refuses."""

from __future__ import annotations

import time

import orjson
import pytest

from service.web.console.login import LOGIN_COOKIE
from service.web.console.sessions import COOKIE_NAME, KEY_PREFIX
from tests.console_helpers import PASSWORD, give_password, page_csrf, sign_in
from tests.people import seed
from tests.world import SITE_A, SITE_B, STUDY

SITE_A_PAGE = f"/console/studies/{STUDY}/sites/{SITE_A}"


@pytest.fixture
async def staff(world, pool):
    await world.standard()
    await give_password(pool, "crc_a", "crc_b", "monitor", "admin", "monitor_a")


async def test_sign_in_sets_a_safe_cookie_and_sign_out_ends_the_session(client, staff):
    resp = await sign_in(client, "crc_a")
    assert resp.status == 303 and resp.headers["Location"] == "/console/"
    cookie = resp.headers.getall("Set-Cookie")[-1]
    assert COOKIE_NAME in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/console/" in cookie and "Secure" not in cookie  # plain http in tests
    home = await client.get("/console/")
    assert home.status == 200
    html = await home.text()
    assert SITE_A in html and SITE_B not in html
    assert "script-src 'self'" in home.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in home.headers["Content-Security-Policy"]
    token = await page_csrf(client)
    out = await client.post("/console/logout", data={"csrf": token}, allow_redirects=False)
    assert out.status == 303
    again = await client.get("/console/", allow_redirects=False)
    assert again.status == 303 and again.headers["Location"] == "/console/login"


async def test_wrong_password_then_throttled_with_the_token_endpoint(client, staff):
    for _ in range(3):
        resp = await client.post(
            "/user-service/api/oauth/token", json={"username": "crc_a", "password": "nope" * 4}
        )
        assert resp.status == 401
    for _ in range(2):
        resp = await sign_in(client, "crc_a", "wrong password!")
        assert resp.status == 401
        assert "Wrong username or password" in await resp.text()
    resp = await sign_in(client, "crc_a")  # the right password, but the budget is spent
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in await resp.text()


async def test_login_form_without_csrf_token_is_refused(client, staff):
    await client.get("/console/login")
    resp = await client.post(
        "/console/login", data={"username": "crc_a", "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 403
    assert "csrfTokenInvalid" in await resp.text()


async def test_a_form_without_its_csrf_token_is_refused(client, staff, pool):
    await sign_in(client, "crc_a")
    resp = await client.post(SITE_A_PAGE + "/extract", data={}, allow_redirects=False)
    assert resp.status == 403 and "csrfTokenInvalid" in await resp.text()
    resp = await client.post(SITE_A_PAGE + "/extract", data={"csrf": "guessed"}, allow_redirects=False)
    assert resp.status == 403
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_monitor_sees_no_extract_button_and_a_forged_post_is_refused(client, staff, pool):
    await sign_in(client, "monitor")
    page = await client.get(SITE_A_PAGE)
    html = await page.text()
    assert page.status == 200 and "Extract contact information" not in html and "Add or update" not in html
    token = await page_csrf(client, SITE_A_PAGE)
    resp = await client.post(SITE_A_PAGE + "/extract", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 403 and "noSufficientPrivileges" in await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_crc_extract_button_and_another_sites_job_is_invisible(client, make_client, staff, pool):
    await sign_in(client, "crc_a")
    token = await page_csrf(client, SITE_A_PAGE)
    assert "Extract contact information" in await (await client.get(SITE_A_PAGE)).text()
    resp = await client.post(SITE_A_PAGE + "/extract", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 303
    job_uuid = str(await pool.fetchval("SELECT uuid FROM jobs"))
    assert (await client.get(f"/console/jobs/{job_uuid}")).status == 200
    other = await make_client()
    await sign_in(other, "crc_b")
    assert (await other.get(f"/console/jobs/{job_uuid}")).status == 404
    assert (await other.get(f"/console/jobs/{job_uuid}/download")).status == 404
    assert (await other.get(SITE_A_PAGE)).status == 403
    audit = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'extract.submit' AND username = 'crc_a'"
    )
    assert audit == 1


async def test_participant_form_shows_errors_next_to_fields(client, make_client, staff, pool):
    await sign_in(client, "crc_a")
    token = await page_csrf(client, SITE_A_PAGE)
    resp = await client.post(
        SITE_A_PAGE + "/participants",
        data={"csrf": token, "subjectKey": "P-1", "emailAddress": "not an email", "phoneNumber": "12"},
    )
    html = await resp.text()
    assert resp.status == 400
    assert 'id="e-emailAddress"' in html and "not a valid email address" in html
    assert 'id="e-phoneNumber"' in html
    assert await pool.fetchval("SELECT count(*) FROM participants") == 0
    resp = await client.post(
        SITE_A_PAGE + "/participants",
        data={"csrf": token, "subjectKey": "P-1", "emailAddress": "p1@example.org"},
        allow_redirects=False,
    )
    assert resp.status == 303 and "key=P-1" in resp.headers["Location"]
    page = await (await client.get(resp.headers["Location"])).text()
    assert "Participant P-1 was saved." in page
    assert "P-1" in page and "p1@example.org" in page  # a CRC reads contact data
    monitor = await make_client()
    await sign_in(monitor, "monitor_a")
    page = await (await monitor.get(SITE_A_PAGE)).text()
    assert "P-1" in page and "p1@example.org" not in page  # a monitor does not


async def test_sessions_end_after_the_absolute_lifetime(client, staff, redis_url):
    from redis.asyncio import Redis

    await sign_in(client, "crc_a")
    redis = Redis.from_url(redis_url)
    try:
        keys = await redis.keys(KEY_PREFIX + "*")
        signed_in = [k for k in keys if orjson.loads(await redis.get(k))["u"] == "crc_a"]
        assert len(signed_in) == 1
        ttl = await redis.ttl(signed_in[0])
        assert 0 < ttl <= 30 * 60  # the idle timeout
        value = orjson.loads(await redis.get(signed_in[0]))
        value["c"] = time.time() - 8 * 3600 - 1
        await redis.set(signed_in[0], orjson.dumps(value), ex=60)
    finally:
        await redis.aclose()
    resp = await client.get("/console/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"


async def test_operator_pages_are_for_admins_only(client, make_client, staff):
    await sign_in(client, "crc_a")
    assert (await client.get("/console/ops")).status == 403
    admin = await make_client()
    await sign_in(admin, "admin")
    for path in (
        "/console/ops",
        "/console/ops/jobs?status=FAILED",
        "/console/ops/webhooks",
        "/console/ops/audit?user=crc_a",
    ):
        resp = await admin.get(path)
        assert resp.status == 200, (path, await resp.text())
    bad = await admin.get("/console/ops/jobs?status=NOPE")
    assert bad.status == 400 and "invalidParameter" in await bad.text()


async def test_make_run_prints_the_console_url_with_a_working_demo_password(
    pool, settings, make_client, capsys
):
    import re

    from service.dev.demo import seed_demo
    from service.launch.dev import demo_passwords, print_demo

    async with pool.acquire() as conn:
        users = await seed_demo(conn)
        passwords = await demo_passwords(conn)
    print_demo(settings, users, passwords)
    out = capsys.readouterr().out
    m = re.search(r"Web console: http://\S+/console/\n  sign in as crc_a\s+with password (\S+)", out)
    assert m, out
    client = await make_client()
    resp = await sign_in(client, "crc_a", m.group(1))
    assert resp.status == 303
    assert "S_SITE_A" in await (await client.get("/console/")).text()


async def test_bulk_upload_needs_the_csrf_field_before_the_file(client, staff, pool):
    from aiohttp import FormData

    await sign_in(client, "crc_a")
    form = FormData()
    form.add_field("file", b"ParticipantID\nX-1\n", filename="ids.csv", content_type="text/csv")
    resp = await client.post(SITE_A_PAGE + "/bulk", data=form, allow_redirects=False)
    assert resp.status == 403 and "csrfTokenInvalid" in await resp.text()
    token = await page_csrf(client, SITE_A_PAGE)
    form = FormData()
    form.add_field("csrf", token)
    form.add_field("file", b"ParticipantID\nX-1\n", filename="ids.csv", content_type="text/csv")
    resp = await client.post(SITE_A_PAGE + "/bulk", data=form, allow_redirects=False)
    assert resp.status == 303 and "/console/jobs/" in resp.headers["Location"]
    assert await pool.fetchval("SELECT type FROM jobs") == "BULK_ADD_PARTICIPANTS"


async def test_a_malformed_bulk_form_is_a_4xx_page_not_a_500(client, staff, pool):
    await sign_in(client, "crc_a")
    token = await page_csrf(client, SITE_A_PAGE)
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n'
    bodies = {
        # the file part with a transfer encoding that does not decode
        "bad encoding": head + f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n%%%not base64%%%\r\n" + f"--{boundary}--\r\n",
        # a body that is not multipart at all behind a multipart Content-Type
        "garbage": "no boundary here at all",
    }  # fmt: skip
    for name, body in bodies.items():
        resp = await client.post(SITE_A_PAGE + "/bulk", data=body.encode(), allow_redirects=False,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        assert 400 <= resp.status < 500, (name, resp.status)
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_the_owner_deletes_a_finished_jobs_file_from_its_page(client, staff, pool):
    from tests.test_webhooks_support import finished_job

    job_uuid = await finished_job(pool, "COMPLETED", owner="crc_a")
    await sign_in(client, "crc_a")
    token = await page_csrf(client, f"/console/jobs/{job_uuid}")
    resp = await client.post(f"/console/jobs/{job_uuid}/delete", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 303
    assert await pool.fetchval("SELECT status FROM jobs") == "DELETED"
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'job.delete'") == 1


async def test_the_cookie_is_secure_when_the_console_is_served_over_https(make_client, staff):
    client = await make_client(public_url="https://console.example.org")
    resp = await client.get("/console/login")
    cookie = resp.headers["Set-Cookie"]
    assert LOGIN_COOKIE in cookie and "Secure" in cookie and "HttpOnly" in cookie
    # Such a cookie never comes back over plain http, so the form cannot be used there.
    assert (await sign_in(client, "crc_a")).status == 403


async def test_assets_come_from_the_package_and_pages_name_no_person(client, make_client, staff, pool):
    for name, media in (("console.js", "text/javascript"), ("console.css", "text/css")):
        resp = await client.get(f"/console/static/{name}")
        assert resp.status == 200 and resp.content_type == media
    assert (await client.get("/console/static/../settings.py")).status == 404
    await seed(pool, STUDY, SITE_A, [{"subject_key": "SK-1", "oid": "SS_SK1", "first_name": "Zelda",
                                      "last_name": "Quartermaine", "email": "zq@example.org"}])  # fmt: skip
    await sign_in(client, "monitor")  # a role that does not read contact data
    html = await (await client.get(SITE_A_PAGE)).text()
    assert "SK-1" in html
    for personal in ("Zelda", "Quartermaine", "zq@example.org"):
        assert personal not in html
    assert "<script>" not in html and " style=" not in html  # nothing inline: the CSP forbids it
    crc = await make_client()
    await sign_in(
        crc, "crc_a"
    )  # a CRC reads them in the list and on the participant's page, never in a title
    for path in (SITE_A_PAGE, SITE_A_PAGE + "/participants/SK-1"):
        html = await (await crc.get(path)).text()
        title = html.split("<title>", 1)[1].split("</title>", 1)[0]
        assert "Zelda" in html and "Zelda" not in title and "zq@example.org" not in title


async def test_a_disabled_user_cannot_sign_in_and_loses_a_live_session(client, staff, pool):
    assert (await sign_in(client, "crc_a")).status == 303
    await pool.execute("UPDATE users SET disabled = true WHERE username = 'crc_a'")
    resp = await client.get("/console/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    assert (await sign_in(client, "crc_a")).status == 401
