"""The console's participant page over HTTP: what each role sees, revealing the code (audited,
never in a URL or cached), reset, register, contact changes with the add rules, invitations."""

from __future__ import annotations

import re

from tests.console_helpers import give_password, page_csrf, sign_in
from tests.world import SITE_A, STUDY, expect

API = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
PAGE = f"/console/studies/{STUDY}/sites/{SITE_A}/participants/P-1"


async def setup(client, world, pool, register: bool = True) -> None:
    await world.standard()
    await give_password(pool, "crc_a", "monitor", "crc_b")
    body = {
        "subjectKey": "P-1",
        "firstName": "Zoë",
        "lastName": "Doe, Jr.",
        "emailAddress": "zoe@example.org",
    }
    await expect(await client.post(API + ("?register=y" if register else ""), json=body,
                                   headers=world.auth("crc_a")), 200)  # fmt: skip


async def code_of(pool) -> str | None:
    return await pool.fetchval("SELECT access_code FROM participants WHERE subject_key = 'P-1'")


async def test_site_list_links_to_the_participant_page_which_shows_status_and_contact(client, world, pool):
    await setup(client, world, pool)
    await sign_in(client, "crc_a")
    site = await (await client.get(f"/console/studies/{STUDY}/sites/{SITE_A}")).text()
    assert f'href="/console/studies/{STUDY}/sites/{SITE_A}/participants/P-1"' in site.replace(
        "%28", "("
    ).replace("%29", ")")
    assert "CREATED" in site
    resp = await client.get(PAGE)
    html = await resp.text()
    assert resp.status == 200 and "Zoë" in html and "zoe@example.org" in html and "Created" in html
    title = re.search(r"<title>(.*)</title>", html).group(1)
    assert "Zoë" not in title and "zoe" not in title
    assert await code_of(pool) not in html  # not shown until asked for
    assert 'id="reveal"' in html and 'id="reset"' in html and 'id="invite-email"' in html


async def test_reveal_is_a_post_audited_and_not_cached(client, world, pool):
    await setup(client, world, pool)
    await sign_in(client, "crc_a")
    csrf = await page_csrf(client, PAGE)
    resp = await client.post(PAGE + "/reveal", data={"csrf": csrf})
    html = await resp.text()
    assert resp.status == 200 and await code_of(pool) in html
    assert resp.headers["Cache-Control"] == "no-store"
    assert str(resp.url).endswith("/reveal")  # the code is in the answer, not in a URL
    audit = await pool.fetch(
        "SELECT username, details FROM audit_log WHERE action = 'participant.accessCode.read'"
    )
    assert [(a["username"], a["details"]["via"]) for a in audit] == [("crc_a", "participant")]
    bad = await client.post(PAGE + "/reveal", data={"csrf": "forged"})
    assert bad.status == 403


async def test_monitor_sees_neither_contact_nor_code_nor_actions(client, world, pool):
    await setup(client, world, pool)
    await sign_in(client, "monitor")
    html = await (await client.get(PAGE)).text()
    assert "Zoë" not in html and "zoe@example.org" not in html and "Not shown to your role" in html
    assert 'id="reveal"' not in html and 'id="reset"' not in html and 'id="register"' not in html
    csrf = await page_csrf(client, PAGE)
    resp = await client.post(PAGE + "/reveal", data={"csrf": csrf})
    assert resp.status == 403 and await code_of(pool) not in await resp.text()
    resp = await client.post(PAGE + "/reset", data={"csrf": csrf})
    assert resp.status == 403
    assert (
        await pool.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'participant.accessCode%'") == 0
    )


async def test_other_site_staff_get_not_found(client, world, pool):
    await setup(client, world, pool)
    await sign_in(client, "crc_b")
    assert (await client.get(PAGE)).status == 403  # no role at this site


async def test_reset_register_and_contact_changes(client, world, pool):
    await setup(client, world, pool, register=False)
    await sign_in(client, "crc_a")
    html = await (await client.get(PAGE)).text()
    assert "Not registered" in html and 'id="register"' in html and 'id="reset"' not in html
    csrf = await page_csrf(client, PAGE)
    resp = await client.post(PAGE + "/register", data={"csrf": csrf})
    assert "P-1 is registered" in await resp.text()
    first = await code_of(pool)
    assert first
    resp = await client.post(PAGE + "/reset", data={"csrf": csrf})
    assert "P-1 has a new access code" in await resp.text()
    assert await code_of(pool) not in (None, first)

    form = {"csrf": csrf, "firstName": "Ann", "lastName": "", "email": "not-an-email", "phoneNumber": "",
            "identifier": ""}  # fmt: skip
    resp = await client.post(PAGE + "/contact", data=form)
    html = await resp.text()
    assert resp.status == 400 and "not-an-email" in html  # the form keeps what was typed
    assert await pool.fetchval("SELECT first_name FROM participants") == "Zoë"
    resp = await client.post(PAGE + "/contact", data={**form, "email": "ann@example.org"})
    assert resp.status == 200 and "P-1: contact data saved" in await resp.text()
    row = await pool.fetchrow("SELECT first_name, last_name, email FROM participants")
    assert tuple(row) == ("Ann", None, "ann@example.org")


async def test_invite_without_a_transport_says_why(client, world, pool):
    await setup(client, world, pool)
    await sign_in(client, "crc_a")
    csrf = await page_csrf(client, PAGE)
    resp = await client.post(PAGE + "/invite", data={"csrf": csrf, "channel": "email"})
    assert resp.status == 409
    resp = await client.post(PAGE + "/invite", data={"csrf": csrf, "channel": "pigeon"})
    assert resp.status == 400


async def test_site_list_searches_pages_and_acts_per_row(client, make_client, world, pool):
    await setup(client, world, pool)
    for key in ("AB-1", "ab-2", "AC_1", "A%C", "B-1"):
        await expect(await client.post(API, json={"subjectKey": key}, headers=world.auth("crc_a")), 200)
    await sign_in(client, "crc_a")
    site = f"/console/studies/{STUDY}/sites/{SITE_A}"
    html = await (await client.get(site + "?q=ab")).text()
    assert "2 participants whose ID starts with “ab”" in html and "AB-1" in html and "ab-2" in html
    assert "AC_1" not in html and '">B-1</a>' not in html
    html = await (await client.get(site + "?q=A%25")).text()  # % is a character, not a wildcard
    assert "A%C" in html and "AB-1" not in html
    html = await (await client.get(site + "?q=a_")).text()  # _ is a character too, not "any one"
    assert "No participant ID starts with “a_”." in html
    html = await (await client.get(site + "?q=ac_")).text()
    assert "1 participant whose" in html and "AC_1" in html
    html = await (await client.get(site)).text()
    assert "6 participants · page 1 of 1" in html and "Not registered" in html

    csrf = await page_csrf(client, site)
    resp = await client.post(site + "/participants/B-1/remove", data={"csrf": csrf})
    assert "Participant B-1 was removed." in await resp.text()
    assert await pool.fetchval("SELECT status FROM participants WHERE subject_key = 'B-1'") == "removed"
    html = await (await client.get(site + "?q=B-")).text()
    assert 'aria-label="Restore B-1"' in html and 'aria-label="Remove B-1"' not in html
    resp = await client.post(site + "/participants/B-1/restore", data={"csrf": csrf})
    assert "Participant B-1 was restored." in await resp.text()
    resp = await client.post(site + "/participants/B-1/register", data={"csrf": csrf})
    assert "B-1 is registered" in await resp.text()
    assert (
        await pool.fetchval("SELECT participate_status FROM participants WHERE subject_key = 'B-1'")
        == "CREATED"
    )

    monitor = await make_client()
    await sign_in(monitor, "monitor")
    html = await (await monitor.get(site)).text()
    assert 'aria-label="Remove' not in html and 'aria-label="Register' not in html
    forged = await monitor.post(
        site + "/participants/B-1/remove", data={"csrf": await page_csrf(monitor, site)}
    )
    assert forged.status == 403


async def test_site_list_pages_through_a_large_site(client, world, pool):
    await setup(client, world, pool)
    await pool.execute(
        """INSERT INTO participants (study_id, site_id, subject_key, oid)
           SELECT s.study_id, s.id, 'N-' || lpad(g::text, 4, '0'), 'SS_N' || g FROM sites s,
                  generate_series(1, 120) g WHERE s.oid = $1""",
        SITE_A,
    )
    await sign_in(client, "crc_a")
    site = f"/console/studies/{STUDY}/sites/{SITE_A}"
    html = await (await client.get(site + "?page=3")).text()
    assert "121 participants · page 3 of 3" in html and "N-0101" in html and "N-0100" not in html
    assert 'href="?page=1"' in html and "Next" not in html


async def test_home_names_roles_as_oc4_does_and_times_are_time_elements(client, world, pool):
    await setup(client, world, pool)
    await give_password(pool, "dm")
    await sign_in(client, "crc_a")
    html = await (await client.get("/console/")).text()
    assert "Clinical Research Coordinator" in html and "(ra)" not in html
    await expect(await client.post(f"/console/studies/{STUDY}/sites/{SITE_A}/extract",
                                   data={"csrf": await page_csrf(client)}), 200)  # fmt: skip
    html = await (await client.get(f"/console/studies/{STUDY}/sites/{SITE_A}")).text()
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+Z">\d{4}-\d\d-\d\d \d\d:\d\d UTC</time>', html)
