"""OC4's calls around one participant, through HTTP with OC4's field names: the detail read, the
account read, participantUsers, searchByFields, the access link, connect (contact, reset), the
Participate status, and each role's answer."""

from __future__ import annotations

import pytest

from tests.people import code_of, person
from tests.test_extract import download, parse_csv, run_jobs, submit
from tests.world import SITE_A, SITE_B, STUDY, expect

API = f"/pages/auth/api/clinicaldata/studies/{STUDY}"
SITE_API = f"{API}/sites/{SITE_A}"
PORTAL = "https://portal.example.org/"


async def add(client, world, key: str, register: bool = True, site: str = SITE_A, **contact) -> dict:
    body = {"subjectKey": key, "firstName": "Jo", "lastName": "Doe, Jr.", "emailAddress": "jo@example.org",
            "phoneNumber": "+1 5550101", "identifier": "MRN-7"} | contact  # fmt: skip
    url = f"{API}/sites/{site}/participants" + ("?register=y" if register else "")
    return await expect(
        await client.post(url, json=body, headers=world.auth("crc_a" if site == SITE_A else "crc_b")), 200
    )


async def test_an_oc4_app_registers_reads_the_code_resets_it_and_the_old_one_is_gone(
    make_client, world, pool, settings
):
    """The open-source study app's flow: register, read the code, reset, read the link, extract."""
    client = await make_client(participate_url=PORTAL)
    await world.standard()
    await add(client, world, "APP-1")
    detail = await expect(
        await client.get(f"{SITE_API}/participant?includeParticipateInfo=y&participantID=APP-1",
                         headers=world.auth("crc_a")), 200)  # fmt: skip
    first = detail["accessCode"]
    assert first == await code_of(pool, "APP-1")
    assert detail["status"] == "Created" and detail["firstName"] == "Jo" and detail["lastName"] == "Doe, Jr."
    assert detail["email"] == "jo@example.org" and detail["mobileNumber"] == "+1 5550101"
    assert (
        detail["secondaryID"] == "MRN-7"
        and detail["subjectOid"] == "SS_APP1"
        and detail["createdBy"] == "crc_a"
    )

    account = await expect(
        await client.post(f"{API}/participants/APP-1/connect", json={"resetAccessCode": True},
                          headers=world.auth("crc_a")), 200)  # fmt: skip
    assert account["participantId"] == "APP-1" and account["status"] == "CREATED"
    assert "accessCode" not in account
    second = await code_of(pool, "APP-1")
    assert second and second != first

    link = await expect(
        await client.get(
            f"{API}/participants/APP-1/accessLink?includeAccessCode=y", headers=world.auth("crc_a")
        ),
        200,
    )
    assert link == {"accessCode": second, "host": PORTAL.rstrip("/"),
                    "accessLink": f"https://portal.example.org/?accessCode={second}"}  # fmt: skip
    again = await expect(
        await client.get(f"{SITE_API}/participant?includeParticipateInfo=y&participantID=app-1",
                         headers=world.auth("crc_a")), 200)  # fmt: skip
    assert again["accessCode"] == second

    job = await submit(
        client, world, url=f"{SITE_API}/participants/extractPartcipantsInfo?includeParticipateInfo=y"
    )
    await run_jobs(settings)
    rows = parse_csv(await (await download(client, world, job)).read())
    assert rows[1][0] == "APP-1" and rows[1][6] == second
    assert first not in str(rows)

    reads = await pool.fetch(
        "SELECT action, username, details FROM audit_log WHERE action LIKE 'participant.accessCode%' ORDER BY id"
    )
    assert [(r["action"], r["details"]["via"]) for r in reads] == [
        ("participant.accessCode.read", "participant"),
        ("participant.accessCode.reset", "connect"),
        ("participant.accessCode.read", "accessLink"),
        ("participant.accessCode.read", "participant"),
    ]
    assert first not in str([dict(r) for r in await pool.fetch("SELECT details FROM audit_log")])


@pytest.mark.parametrize(
    ("user", "status", "sees_contact"),
    [
        ("crc_a", 200, True),  # CRC at the site
        ("inv_a", 200, True),
        ("ra2_a", 200, True),  # data entry person at the site
        ("dm", 200, True),  # data manager on the study
        ("dep", 200, True),
        ("monitor_a", 200, False),  # monitors and viewers never see contact data or the code
        ("viewer", 200, False),
        ("director", 200, False),
        ("crc_b", 403, None),  # a role at another site only: no role here
    ],
)
async def test_detail_by_role(client, world, user, status, sees_contact):
    await world.standard()
    await add(client, world, "R-1")
    url = f"{SITE_API}/participant?participantID=R-1&includeParticipateInfo=y"
    body = await expect(await client.get(url, headers=world.auth(user)), status)
    if status != 200:
        assert body["message"] == "errorCode.noRoleSetUp"
        return
    assert body["subjectKey"] == "R-1" and body["status"] == "Created"
    assert ("accessCode" in body) is sees_contact and ("firstName" in body) is sees_contact
    assert ("email" in body) is sees_contact


async def test_detail_without_participate_info_has_no_code_and_no_status(client, world):
    await world.standard()
    await add(client, world, "N-1")
    body = await expect(
        await client.get(f"{SITE_API}/participant?participantID=N-1", headers=world.auth("crc_a")), 200
    )
    assert "accessCode" not in body and "status" not in body and body["firstName"] == "Jo"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("participantID=NOPE", 404, "participantNotFound"),
        ("participantID=B-1", 404, "participantNotFound"),  # exists, at another site
        ("", 400, "invalidParameter"),
        ("participantID=", 400, "invalidParameter"),
        ("participantID=%20", 404, "participantNotFound"),
        ("participantID=N-1&includeParticipateInfo=maybe", 400, "invalidParameter"),
    ],
)
async def test_detail_refusals(client, world, query, status, code):
    await world.standard()
    await add(client, world, "N-1")
    await add(client, world, "B-1", site=SITE_B)
    body = await expect(
        await client.get(f"{SITE_API}/participant?{query}", headers=world.auth("crc_a")), status
    )
    assert body["message"] == f"errorCode.{code}"
    assert "jo@example.org" not in str(body)


async def test_removed_participant_is_not_available(client, world):
    await world.standard()
    await add(client, world, "GONE-1")
    await expect(await client.delete(f"{SITE_API}/participants/GONE-1", headers=world.auth("crc_a")), 200)
    body = await expect(
        await client.get(f"{SITE_API}/participant?participantID=GONE-1", headers=world.auth("crc_a")), 409
    )
    assert body["message"] == "errorCode.participantNotAvailable"


async def test_study_level_detail_and_site_roles_see_their_sites_only(client, world):
    await world.standard()
    await add(client, world, "A-1")
    await add(client, world, "B-1", site=SITE_B)
    url = f"{API}/participant?participantID="
    assert (await expect(await client.get(url + "B-1", headers=world.auth("dm")), 200))["subjectKey"] == "B-1"
    await expect(await client.get(url + "A-1", headers=world.auth("crc_a")), 200)
    body = await expect(await client.get(url + "B-1", headers=world.auth("crc_a")), 404)
    assert body["message"] == "errorCode.participantNotFound"


async def test_account_read_and_participant_users(client, world):
    await world.standard()
    await add(client, world, "U-2")
    await add(client, world, "U-1")
    await add(client, world, "U-3", register=False)
    await add(client, world, "U-4", site=SITE_B)
    account = await expect(await client.get(f"{API}/participants/U-1", headers=world.auth("crc_a")), 200)
    assert account["participantId"] == "U-1" and account["status"] == "CREATED"
    assert account["email"] == "jo@example.org" and account["phoneNumber"] == "+1 5550101"
    assert account["identifier"] == "MRN-7" and account["username"] == f"{STUDY}.SS_U1"
    assert account["userType"] == "PARTICIPANT" and "accessCode" not in account

    blind = await expect(await client.get(f"{API}/participants/U-1", headers=world.auth("monitor")), 200)
    assert "email" not in blind and "firstName" not in blind and blind["status"] == "CREATED"
    await expect(await client.get(f"{API}/participants/U-4", headers=world.auth("crc_a")), 404)
    await expect(await client.get(f"{API}/participants/NOPE", headers=world.auth("dm")), 404)

    users = await expect(await client.get(f"{API}/participantUsers", headers=world.auth("dm")), 200)
    assert [u["participantId"] for u in users] == ["U-1", "U-2", "U-4"]  # registered only, ID order
    mine = await expect(await client.get(f"{API}/participantUsers", headers=world.auth("crc_a")), 200)
    assert [u["participantId"] for u in mine] == ["U-1", "U-2"]
    paged = await expect(
        await client.get(f"{API}/participantUsers?page=2&pageSize=2", headers=world.auth("dm")), 200
    )
    assert [u["participantId"] for u in paged] == ["U-4"]


async def test_search_by_fields(client, world):
    await world.standard()
    await add(client, world, "S-1", firstName="Zoë", lastName="Müller")
    await add(client, world, "S-2", firstName="Ann", lastName="Müller", identifier="X-9")
    await add(client, world, "S-3", site=SITE_B, firstName="Ann", lastName="Müller")
    url = f"{API}/participants/searchByFields"
    found = await expect(await client.get(url + "?lastName=%20m%C3%BCLLER%20", headers=world.auth("dm")), 200)
    assert [f["participantId"] for f in found] == ["S-1", "S-2", "S-3"]
    found = await expect(
        await client.get(url + "?lastName=müller&firstName=ann", headers=world.auth("crc_a")), 200
    )
    assert [f["participantId"] for f in found] == ["S-2"]  # S-3 is at a site crc_a does not see
    found = await expect(await client.get(url + "?identifier=x-9", headers=world.auth("dm")), 200)
    assert [(f["participantId"], f["identifier"]) for f in found] == [("S-2", "X-9")]
    found = await expect(await client.get(url + "?participantId=s-1", headers=world.auth("dm")), 200)
    assert [f["participantId"] for f in found] == ["S-1"]
    assert await expect(await client.get(url + "?lastName=Nobody", headers=world.auth("dm")), 200) == []
    assert await expect(await client.get(url, headers=world.auth("dm")), 200) == []  # no criterion, no match
    assert await expect(await client.get(url + "?firstName=%20", headers=world.auth("dm")), 200) == []
    body = await expect(await client.get(url + "?lastName=müller", headers=world.auth("monitor")), 403)
    assert body["message"] == "errorCode.noSufficientPrivileges"


@pytest.mark.parametrize(
    ("user", "query", "status", "code"),
    [
        ("monitor", "?includeAccessCode=y", 403, "noSufficientPrivileges"),
        ("crc_b", "?includeAccessCode=y", 404, "participantNotFound"),
        ("outsider", "", 403, "noRoleSetUp"),
    ],
)
async def test_access_link_refusals(make_client, world, user, query, status, code):
    client = await make_client(participate_url=PORTAL)
    await world.standard()
    await world.user("outsider")
    await add(client, world, "L-1")
    body = await expect(
        await client.get(f"{API}/participants/L-1/accessLink{query}", headers=world.auth(user)), status
    )
    assert body["message"] == f"errorCode.{code}"


async def test_access_link_without_the_code_holds_no_secret(make_client, world, pool):
    client = await make_client(participate_url=PORTAL)
    await world.standard()
    await add(client, world, "L-2")
    link = await expect(
        await client.get(f"{API}/participants/L-2/accessLink", headers=world.auth("monitor")), 200
    )
    assert link == {"host": "https://portal.example.org", "accessLink": "https://portal.example.org/"}
    assert (
        await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'participant.accessCode.read'")
        == 0
    )


async def test_access_link_needs_a_portal_and_a_registered_participant(make_client, world):
    no_portal = await make_client()
    await world.standard()
    await add(no_portal, world, "L-3")
    await add(no_portal, world, "L-4", register=False)
    body = await expect(
        await no_portal.get(f"{API}/participants/L-3/accessLink", headers=world.auth("crc_a")), 409
    )
    assert body["message"] == "errorCode.participateUrlNotConfigured"
    client = await make_client(participate_url=PORTAL)
    body = await expect(
        await client.get(f"{API}/participants/L-4/accessLink", headers=world.auth("crc_a")), 409
    )
    assert body["message"] == "errorCode.participantNotRegistered"


async def test_connect_updates_contact_with_the_add_rules_and_registers(client, world, pool):
    await world.standard()
    await add(client, world, "C-1", register=False)
    url = f"{API}/participants/C-1/connect"
    bad = await expect(await client.post(url, json={"email": "not-an-email", "phoneNumber": "12"},
                                         headers=world.auth("crc_a")), 400)  # fmt: skip
    assert bad["errors"] == ["errorCode.invalidEmailAddress", "errorCode.invalidPhoneNumber"]
    assert "not-an-email" not in str(bad)
    assert await code_of(pool, "C-1") is None  # nothing changed

    body = await expect(await client.post(url, json={"firstName": " Ann ", "email": "ann@example.org", "lastName": ""},
                                          headers=world.auth("crc_a")), 200)  # fmt: skip
    assert body["firstName"] == "Ann" and body["email"] == "ann@example.org" and body["lastName"] == ""
    assert body["status"] == "CREATED"  # connect registers, as OC4's does
    row = await person(pool, "C-1")
    assert row["access_code"] and row["last_name"] is None and row["identifier"] == "MRN-7"
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert actions[-1] == "participant.register"


@pytest.mark.parametrize(
    ("user", "status", "code"),
    [
        ("monitor", 403, "noSufficientPrivileges"),
        ("viewer_a", 403, "noSufficientPrivileges"),
        ("crc_b", 404, "participantNotFound"),
        ("dm", 200, None),
        ("inv_a", 200, None),
    ],
)
async def test_connect_roles(client, world, user, status, code):
    await world.standard()
    await add(client, world, "C-2")
    body = await expect(
        await client.post(
            f"{API}/participants/C-2/connect", json={"resetAccessCode": True}, headers=world.auth(user)
        ),
        status,
    )
    if code:
        assert body["message"] == f"errorCode.{code}"


async def test_connect_refuses_participate_calls_when_participate_is_off(client, world, pool):
    await world.standard(participateEnabled=False)
    await add(client, world, "C-3", register=False)
    url = f"{API}/participants/C-3/connect"
    body = await expect(
        await client.post(url, json={"resetAccessCode": True}, headers=world.auth("crc_a")), 409
    )
    assert body["message"] == "errorCode.participateNotEnabled"
    body = await expect(await client.post(url, json={"firstName": "Bo"}, headers=world.auth("crc_a")), 200)
    assert body["firstName"] == "Bo" and "status" not in body
    assert await code_of(pool, "C-3") is None


async def test_connect_bad_bodies(client, world):
    await world.standard()
    await add(client, world, "C-4")
    url = f"{API}/participants/C-4/connect"
    for raw in (b"{", b"[]", b'{"resetAccessCode": "yes"}'):
        body = await expect(await client.post(url, data=raw, headers={**world.auth("crc_a"),
                                                                      "Content-Type": "application/json"}), 400)  # fmt: skip
        assert body["message"] == "errorCode.invalidRequestBody"
    await expect(
        await client.post(f"{API}/participants/NOPE/connect", json={}, headers=world.auth("crc_a")), 404
    )


async def test_participate_status_reported_by_an_integration(client, world, pool):
    await world.standard()
    await add(client, world, "P-1")
    await add(client, world, "P-2", register=False)
    url = f"{API}/participants/P-1/participateStatus"
    body = await expect(await client.put(url, json={"status": "ACTIVE"}, headers=world.auth("crc_a")), 200)
    assert body["status"] == "ACTIVE"
    listed = await expect(await client.get(f"{SITE_API}/participants", headers=world.auth("crc_a")), 200)
    assert {p["subjectKey"]: p.get("participateStatus") for p in listed["studyParticipants"]} == {
        "P-1": "ACTIVE", "P-2": None}  # fmt: skip
    bad = await expect(await client.put(url, json={"status": "ASLEEP"}, headers=world.auth("crc_a")), 400)
    assert bad["message"] == "errorCode.invalidRequestBody"
    body = await expect(await client.put(f"{API}/participants/P-2/participateStatus", json={"status": "ACTIVE"},
                                         headers=world.auth("crc_a")), 409)  # fmt: skip
    assert body["message"] == "errorCode.participantNotRegistered"
    await expect(await client.put(url, json={"status": "INACTIVE"}, headers=world.auth("monitor")), 403)
    audit = await pool.fetchrow(
        "SELECT details FROM audit_log WHERE action = 'participant.participateStatus'"
    )
    assert audit["details"] == {"from": "CREATED", "to": "ACTIVE"}
