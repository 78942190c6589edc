"""Personal data at rest and their erasure, end to end through real Postgres, the real API, the
console and the CLI: a participant's distinctive values never appear in a ``pg_dump`` of the
database (fields, the connect call's kept Idempotency-Key answer, jobs, the audit log); erasing it
destroys them, deletes the extract files of its site, forgets the kept answer, and leaves the
participant's ID, OID and history."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import asyncpg

from service.core.erasure import EXTRACT_REASON
from tests.console_helpers import give_password, page_csrf, sign_in
from tests.test_cli import cli
from tests.test_extract import HEADER, download, parse_csv, run_jobs, submit
from tests.world import SITE_A, STUDY, World, expect

OC4 = f"/pages/auth/api/clinicaldata/studies/{STUDY}"
SITE_API = f"{OC4}/sites/{SITE_A}/participants"
KEY = "ZQ-7731"
PERSON = {
    "subjectKey": KEY,
    "firstName": "Zebulon-Quixote",
    "lastName": "Xanthopoulou",
    "emailAddress": "zq.unique.7731@example.org",
    "phoneNumber": "+1 5550197731",
    "identifier": "IDX-99317",
}
# What must never be found in the database in clear: each value, the email's local part and the
# phone's digits (a dump could spell the number another way).
SECRETS = [v for k, v in PERSON.items() if k != "subjectKey"] + ["zq.unique.7731", "5550197731"]


def dump(settings: Any) -> str:
    """The whole database as ``pg_dump`` writes it (schema and data), lower-cased."""
    done = subprocess.run(
        ["pg_dump", "--no-owner", f"--dbname={settings.database_url}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "copy public.participants" in done.stdout.lower()  # the dump holds the data
    return done.stdout.lower()


def assert_nothing_personal(text: str, code: str) -> None:
    for value in [*SECRETS, code]:
        assert value.lower() not in text, f"a personal value is in the dump: {value[:3]}…"


async def add(client: Any, world: World, body: dict[str, str], register: bool = True) -> None:
    url = SITE_API + ("?register=y" if register else "")
    await expect(await client.post(url, json=body, headers=world.auth("crc_a")), 200)


async def access_code(client: Any, world: World, key: str = KEY) -> str:
    url = f"{OC4}/sites/{SITE_A}/participant?participantID={key}&includeParticipateInfo=y"
    got = await expect(await client.get(url, headers=world.auth("crc_a")), 200)
    code: str = got["accessCode"]
    assert code
    return code


async def connect_kept(client: Any, world: World) -> dict[str, Any]:
    headers = {**world.auth("crc_a"), "Idempotency-Key": "ctms-connect-7731"}
    body = {"phoneNumber": PERSON["phoneNumber"]}
    answer: dict[str, Any] = await expect(
        await client.post(f"{OC4}/participants/{KEY}/connect", json=body, headers=headers), 200
    )
    return answer


async def participant(pool: asyncpg.Pool, key: str = KEY) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM participants WHERE subject_key = $1", key)
    assert row is not None
    return row


async def test_nothing_personal_in_a_dump_and_erasure_end_to_end(client, world, pool, settings):
    await world.standard()
    await give_password(pool, "dm")
    await add(client, world, PERSON)
    await add(client, world, {"subjectKey": "OTHER-1", "firstName": "Ann"})
    answer = await connect_kept(client, world)
    assert answer["firstName"] == PERSON["firstName"]  # the kept answer holds contact data
    code = await access_code(client, world)
    before = await participant(pool)
    kept = await pool.fetchrow("SELECT * FROM idempotency_keys WHERE key = 'ctms-connect-7731'")
    assert kept["sealed"] and kept["participant_id"] == before["id"]
    # A retry gets the same answer back, opened from its sealed copy.
    assert await connect_kept(client, world) == answer

    job_uuid = await submit(client, world, "crc_a")
    await run_jobs(settings)
    job = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1::uuid", job_uuid)
    assert job["status"] == "COMPLETED" and job["object_key"]
    extract_file = Path(settings.storage_dir) / job["object_key"]
    assert extract_file.exists()

    text = await asyncio.to_thread(dump, settings)
    assert KEY.lower() in text  # the participant is there, by its ID only
    assert_nothing_personal(text, code)

    # Only a data manager (or an admin) may erase: not the site's CRC, nor its coordinator.
    erase_url = f"{SITE_API}/{KEY}/erase"
    for user in ("crc_a", "dm_a"):
        refused = await expect(await client.post(erase_url, headers=world.auth(user)), 403)
        assert refused["message"] == "errorCode.noSufficientPrivileges"
    erased = await expect(await client.post(erase_url, headers=world.auth("dm")), 200)
    assert erased["subjectKey"] == KEY and erased["extractsDeleted"] == 1 and erased["erasedAt"]

    after = await participant(pool)
    assert (after["id"], after["oid"], after["site_id"]) == (before["id"], before["oid"], before["site_id"])
    assert after["status"] == "removed" and after["participate_status"] == "" and after["erased_at"]
    stored = {c: v for c, v in dict(after).items() if c.endswith(("_ct", "_bidx"))}
    assert len(stored) == 10 and set(stored.values()) == {None}
    assert all(
        after.get(c) is None
        for c in ("first_name", "last_name", "email", "phone", "identifier", "access_code")
    )
    audit_row = await pool.fetchrow(
        "SELECT * FROM audit_log WHERE action = 'participant.erase' AND participant_id = $1", after["id"]
    )
    assert audit_row["username"] == "dm"
    assert audit_row["details"]["fields"] == sorted(
        ["first_name", "last_name", "email", "phone", "identifier", "access_code"]
    )
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE participant_id = $1", after["id"]) > 2

    assert not extract_file.exists()
    job = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1::uuid", job_uuid)
    assert job["status"] == "EXPIRED" and job["error"] == EXTRACT_REASON
    gone = await download(client, world, job_uuid)
    assert gone.status == 410
    assert (
        await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE participant_id = $1", after["id"])
        == 0
    )
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = 'ctms-connect-7731'") == 0

    text = await asyncio.to_thread(dump, settings)
    assert_nothing_personal(text, code)

    # A new extract of the site does not list the erased participant.
    job_uuid = await submit(client, world, "crc_a")
    await run_jobs(settings)
    rows = parse_csv(await (await download(client, world, job_uuid)).read())
    assert rows[0] == HEADER and [r[0] for r in rows[1:]] == ["OTHER-1"]

    # It stays removed: a restore is refused, as is any change.
    restore = await expect(await client.post(f"{SITE_API}/{KEY}/restore", headers=world.auth("crc_a")), 409)
    assert restore["message"] == "errorCode.participantErased"
    await expect(
        await client.post(f"{OC4}/participants/{KEY}/connect", json={}, headers=world.auth("crc_a")), 409
    )

    # Erasing again changes nothing more and answers the first erasure's time.
    again = await expect(await client.post(erase_url, headers=world.auth("dm")), 200)
    assert again["erasedAt"] == erased["erasedAt"] and again["extractsDeleted"] == 0

    # The console shows it erased, with no contact fields and no way to erase it again.
    await sign_in(client, "dm")
    html = await (await client.get(f"/console/studies/{STUDY}/sites/{SITE_A}/participants/{KEY}")).text()
    assert 'id="erased"' in html and "First name" not in html and 'id="erase"' not in html
    assert_nothing_personal(html.lower(), code)


async def test_console_erases_after_a_confirmation_and_only_for_those_who_may(client, world, pool, settings):
    await world.standard()
    await give_password(pool, "dm", "crc_a")
    await add(client, world, PERSON)
    page = f"/console/studies/{STUDY}/sites/{SITE_A}/participants/{KEY}"

    await sign_in(client, "crc_a")
    html = await (await client.get(page)).text()
    assert 'id="erase"' not in html and PERSON["firstName"] in html
    csrf = await page_csrf(client, page)
    refused = await client.post(page + "/erase", data={"csrf": csrf, "confirm": KEY}, allow_redirects=False)
    assert refused.status == 403
    assert (await participant(pool))["erased_at"] is None
    await client.post("/console/logout", data={"csrf": csrf}, allow_redirects=False)

    await sign_in(client, "dm")
    html = await (await client.get(page)).text()
    assert 'id="erase"' in html
    csrf = await page_csrf(client, page)
    # No CSRF token: refused, nothing erased.
    no_csrf = await client.post(page + "/erase", data={"confirm": KEY}, allow_redirects=False)
    assert no_csrf.status == 403 and (await participant(pool))["erased_at"] is None
    # The button asks for the ID; a wrong one erases nothing.
    confirm = await client.post(page + "/erase", data={"csrf": csrf})
    assert confirm.status == 200 and 'id="erase-confirmed"' in await confirm.text()
    wrong = await client.post(page + "/erase", data={"csrf": csrf, "confirm": "ZQ-0000"})
    assert wrong.status == 400 and (await participant(pool))["erased_at"] is None
    done = await client.post(page + "/erase", data={"csrf": csrf, "confirm": KEY}, allow_redirects=False)
    assert done.status == 303 and "done=erased" in done.headers["Location"]
    html = await (await client.get(done.headers["Location"])).text()
    assert "personal data erased" in html and PERSON["firstName"] not in html
    row = await participant(pool)
    assert row["erased_at"] is not None and row["first_name_ct"] is None
    actor = await pool.fetchval("SELECT username FROM audit_log WHERE action = 'participant.erase'")
    assert actor == "dm"


async def test_admin_api_and_cli_erase_and_list_erasures(client, world, pool, settings):
    await world.standard()
    await add(client, world, PERSON)
    await add(client, world, {**PERSON, "subjectKey": "ZQ-2", "emailAddress": "other@example.org"})
    url = f"/admin/api/studies/{STUDY}/participants/{KEY}/erase"
    await expect(await client.post(url, headers=world.auth("dm")), 403)  # the admin API is for admins
    erased = await expect(await client.post(url, headers=world.auth("admin")), 200)
    assert erased["subjectKey"] == KEY
    missing = await expect(
        await client.post(f"/admin/api/studies/{STUDY}/participants/NOPE/erase", headers=world.auth("admin")),
        404,
    )
    assert missing["message"] == "errorCode.participantNotFound"

    out = await asyncio.to_thread(cli, settings, "erase", STUDY, "ZQ-2")
    assert '"subjectKey":"ZQ-2"' in out
    row = await participant(pool, "ZQ-2")
    assert row["erased_at"] is not None and row["email_ct"] is None
    who = await pool.fetch(
        "SELECT username, user_id FROM audit_log WHERE action = 'participant.erase' ORDER BY id"
    )
    assert [(r["username"], r["user_id"] is None) for r in who] == [("admin", False), ("cli", True)]

    listed = (await asyncio.to_thread(cli, settings, "erasures", "--since", "2000-01-01")).splitlines()
    assert [re.search(r'"subjectKey":"([^"]+)"', line).group(1) for line in listed] == [KEY, "ZQ-2"]


async def test_an_extract_running_during_an_erasure_expires_when_it_completes(client, world, pool, settings):
    from service.core.storage import Storage
    from service.worker.maintenance import expire_jobs

    await world.standard()
    await add(client, world, PERSON)
    await expect(await client.post(f"{SITE_API}/{KEY}/erase", headers=world.auth("dm")), 200)
    read_before, read_after = await submit(client, world, "crc_a"), await submit(client, world, "inv_a")
    await run_jobs(settings)
    # As if the first had started (and read the site) before the erasure and finished after it.
    await pool.execute(
        "UPDATE jobs SET started_at = (SELECT erased_at FROM participants WHERE subject_key = $2)"
        " - interval '1 second' WHERE uuid = $1::uuid",
        read_before,
        KEY,
    )
    await expire_jobs({"db": pool, "storage": Storage.from_settings(settings)})
    jobs = {str(r["uuid"]): r for r in await pool.fetch("SELECT uuid, status, error, object_key FROM jobs")}
    assert (jobs[read_before]["status"], jobs[read_before]["error"]) == ("EXPIRED", EXTRACT_REASON)
    assert not (Path(settings.storage_dir) / jobs[read_before]["object_key"]).exists()
    assert jobs[read_after]["status"] == "COMPLETED" and jobs[read_after]["error"] is None
    assert (Path(settings.storage_dir) / jobs[read_after]["object_key"]).exists()
