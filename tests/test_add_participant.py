"""Seed 001 through HTTP: every error code, update-in-place, reassignment, registration,
system-generated IDs and the enrollment cap under concurrency, and the audit trail."""

from __future__ import annotations

import asyncio

import pytest

from service.core.participant_ids import ACCESS_CODE_ALPHABET
from service.core.protection.fields import with_personal
from tests.world import SITE_A, SITE_B, STUDY, expect

STUDY_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/participants"
SITE_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
SITE_B_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_B}/participants"
SEED_BODY = {
    "subjectKey": "OHIO-5",
    "firstName": "OHIO-5",
    "lastName": "ОНІО",
    "emailAddress": "OHIOS@openclinica.com",
    "phoneNumber": "+1 1234567890",
}


async def row(pool, key: str):
    """The stored row, its personal columns decrypted (the row itself holds ciphertexts only)."""
    async with pool.acquire() as conn:
        stored = await conn.fetchrow("SELECT * FROM participants WHERE lower(subject_key) = lower($1)", key)
        return await with_personal(conn, stored)


async def test_seed_example_adds_and_registers(client, world, pool):
    await world.standard()
    body = await expect(
        await client.post(SITE_URL + "?register=y", json=SEED_BODY, headers=world.auth("crc_a")), 200
    )
    assert body == {
        "subjectKey": "OHIO-5",
        "subjectOid": "SS_OHIO5",
        "status": "Available",
        "participateStatus": "CREATED",
        "siteOid": SITE_A,
    }
    r = await row(pool, "OHIO-5")
    assert (r["first_name"], r["last_name"], r["email"], r["phone"]) == (
        "OHIO-5",
        "ОНІО",
        "OHIOS@openclinica.com",
        "+1 1234567890",
    )
    assert len(r["access_code"]) == 9 and set(r["access_code"]) <= set(ACCESS_CODE_ALPHABET)
    audit = await pool.fetch("SELECT action, username, details FROM audit_log ORDER BY id")
    assert [(a["action"], a["username"]) for a in audit] == [("participant.create", "crc_a")]
    assert "OHIOS@openclinica.com" not in str(audit[0]["details"])  # field names only, never values


@pytest.mark.parametrize(
    ("url", "body", "query", "status", "code"),
    [
        (
            f"/pages/auth/api/clinicaldata/studies/S_NOPE/sites/{SITE_A}/participants",
            {"subjectKey": "X"},
            "",
            404,
            "studyNotExist",
        ),
        (
            f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/S_NOPE/participants",
            {"subjectKey": "X"},
            "",
            404,
            "siteNotExist",
        ),
        (
            f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/S_OTHER_STUDY_SITE/participants",
            {"subjectKey": "X"},
            "",
            404,
            "siteNotExist",
        ),
        (SITE_URL, {"subjectKey": "A<b>"}, "", 400, "participantIDContainsUnsupportedHTMLCharacter"),
        (SITE_URL, {"subjectKey": "X" * 31}, "", 400, "participantIDLongerThan30Characters"),
        (SITE_URL, {"subjectKey": "   "}, "", 400, "participantIDEmpty"),
        (SITE_URL, {}, "", 400, "participantIDEmpty"),
        (SITE_URL, {"subjectKey": "X", "phoneNumber": "1234567890"}, "", 400, "invalidPhoneNumber"),
        (SITE_URL, {"subjectKey": "X", "phoneNumber": "+1 12345678901234567"}, "", 400, "phoneNumberTooLong"),
        (SITE_URL, {"subjectKey": "X", "emailAddress": "not-an-email"}, "", 400, "invalidEmailAddress"),
        (
            SITE_URL,
            {"subjectKey": "X", "emailAddress": "a" * 250 + "@example.org"},
            "",
            400,
            "emailAddressTooLong",
        ),
        (SITE_URL, {"subjectKey": "X", "firstName": "F" * 36}, "", 400, "firstNameTooLong"),
        (SITE_URL, {"subjectKey": "X", "lastName": "L" * 36}, "", 400, "lastNameTooLong"),
        (SITE_URL, {"subjectKey": "X", "identifier": "I" * 36}, "", 400, "identifierTooLong"),
        (SITE_URL, {"subjectKey": "X"}, "?register=maybe", 400, "invalidRegisterParameter"),
        (
            STUDY_URL,
            {"subjectKey": "X", "firstName": "Ann"},
            "",
            400,
            "studyLevelParticipantContactNotAllowed",
        ),
        (STUDY_URL, {"subjectKey": "X"}, "?register=y", 400, "studyLevelParticipantContactNotAllowed"),
    ],
)
async def test_error_codes(client, world, url, body, query, status, code):
    await world.standard()
    await world.study("S_OTHER")
    await world.site("S_OTHER_STUDY_SITE", study="S_OTHER")
    resp = await client.post(url + query, json=body, headers=world.auth("dm"))
    got = await expect(resp, status)
    assert got["message"] == f"errorCode.{code}"
    assert "studyOid" in got["params"] or code == "invalidRegisterParameter"


async def test_several_field_errors_are_all_listed(client, world):
    await world.standard()
    body = {"subjectKey": "X", "firstName": "F" * 36, "emailAddress": "nope", "phoneNumber": "12"}
    got = await expect(await client.post(SITE_URL, json=body, headers=world.auth("dm")), 400)
    assert got == {
        "message": "errorCode.firstNameTooLong",
        "params": {"studyOid": STUDY, "siteOid": SITE_A, "subjectKey": "X"},
        "errors": [
            "errorCode.firstNameTooLong",
            "errorCode.invalidEmailAddress",
            "errorCode.invalidPhoneNumber",
        ],
    }


async def test_unavailable_study_and_site(client, world, pool):
    await world.standard()
    await pool.execute("UPDATE sites SET status = 'locked' WHERE oid = $1", SITE_A)
    got = await expect(await client.post(SITE_URL, json={"subjectKey": "X"}, headers=world.auth("dm")), 409)
    assert got["message"] == "errorCode.siteNotAvailable"
    await pool.execute("UPDATE studies SET status = 'frozen'")
    got = await expect(await client.post(SITE_URL, json={"subjectKey": "X"}, headers=world.auth("dm")), 409)
    assert got["message"] == "errorCode.studyNotAvailable"
    # Reading is still allowed on a frozen study.
    await expect(await client.get(SITE_URL, headers=world.auth("dm")), 200)


async def test_participate_not_enabled(client, world):
    await world.standard(participateEnabled=False)
    got = await expect(
        await client.post(SITE_URL + "?register=Y", json={"subjectKey": "X"}, headers=world.auth("dm")), 409
    )
    assert got["message"] == "errorCode.participateNotEnabled"
    await expect(
        await client.post(SITE_URL + "?register=no", json={"subjectKey": "X"}, headers=world.auth("dm")), 200
    )


async def test_update_keeps_absent_fields_and_empty_clears(client, world, pool):
    await world.standard()
    h = world.auth("crc_a")
    await expect(await client.post(SITE_URL, json=SEED_BODY, headers=h), 200)
    await expect(
        await client.post(
            SITE_URL, json={"subjectKey": "ohio-5", "firstName": "Jane", "phoneNumber": None}, headers=h
        ),
        200,
    )
    r = await row(pool, "OHIO-5")
    assert (r["subject_key"], r["first_name"], r["last_name"], r["email"], r["phone"]) == (
        "OHIO-5",
        "Jane",
        "ОНІО",
        "OHIOS@openclinica.com",
        "+1 1234567890",
    )
    await expect(
        await client.post(SITE_URL, json={"subjectKey": "OHIO-5", "emailAddress": ""}, headers=h), 200
    )
    assert (await row(pool, "OHIO-5"))["email"] is None
    assert await pool.fetchval("SELECT count(*) FROM participants") == 1
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["participant.create", "participant.update", "participant.update"]
    # Posting the same values again changes nothing and audits nothing.
    await expect(
        await client.post(SITE_URL, json={"subjectKey": "OHIO-5", "firstName": "Jane"}, headers=h), 200
    )
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 3


async def test_registering_twice_keeps_the_access_code(client, world, pool):
    await world.standard()
    h = world.auth("inv_a")
    first = await expect(await client.post(SITE_URL, json={"subjectKey": "P-1"}, headers=h), 200)
    assert first["participateStatus"] == ""
    await expect(await client.post(SITE_URL + "?register=yes", json={"subjectKey": "P-1"}, headers=h), 200)
    code = (await row(pool, "P-1"))["access_code"]
    again = await expect(
        await client.post(SITE_URL + "?register=y", json={"subjectKey": "P-1"}, headers=h), 200
    )
    assert again["participateStatus"] == "CREATED"
    assert (await row(pool, "P-1"))["access_code"] == code


async def test_reassignment_rules(client, world, pool):
    await world.standard()
    dm = world.auth("dm")
    # study level -> site: allowed (the data manager has rights at both)
    await expect(await client.post(STUDY_URL, json={"subjectKey": "S-1"}, headers=dm), 200)
    moved = await expect(await client.post(SITE_URL, json={"subjectKey": "S-1"}, headers=dm), 200)
    assert moved["siteOid"] == SITE_A
    # site -> study level: never
    got = await expect(await client.post(STUDY_URL, json={"subjectKey": "S-1"}, headers=dm), 409)
    assert got["message"] == "errorCode.participantSiteToStudyReassignmentNotAllowed"
    # site A -> site B by someone with rights at both
    moved = await expect(await client.post(SITE_B_URL, json={"subjectKey": "S-1"}, headers=dm), 200)
    assert moved["siteOid"] == SITE_B
    # site B -> site A by a site A coordinator without rights at B: the ID is simply taken
    got = await expect(
        await client.post(SITE_URL, json={"subjectKey": "S-1"}, headers=world.auth("crc_a")), 409
    )
    assert got["message"] == "errorCode.participantIDNotUnique"
    assert (await row(pool, "S-1"))["site_id"] == await pool.fetchval(
        "SELECT id FROM sites WHERE oid = $1", SITE_B
    )
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["participant.create", "participant.reassign", "participant.reassign"]


async def test_removed_participant_is_not_available_until_restored(client, world):
    await world.standard()
    h = world.auth("crc_a")
    await expect(await client.post(SITE_URL, json={"subjectKey": "R-1"}, headers=h), 200)
    removed = await expect(await client.delete(SITE_URL + "/r-1", headers=h), 200)
    assert removed["status"] == "Removed"
    got = await expect(
        await client.post(SITE_URL, json={"subjectKey": "R-1", "firstName": "X"}, headers=h), 409
    )
    assert got["message"] == "errorCode.participantNotAvailable"
    restored = await expect(await client.post(SITE_URL + "/R-1/restore", headers=h), 200)
    assert restored["status"] == "Available"
    await expect(await client.post(SITE_URL, json={"subjectKey": "R-1", "firstName": "X"}, headers=h), 200)
    got = await expect(await client.delete(SITE_URL + "/NOBODY", headers=h), 404)
    assert got["message"] == "errorCode.participantNotFound"
    # A participant of another site is not found through this site's path.
    await expect(await client.post(SITE_B_URL, json={"subjectKey": "B-1"}, headers=world.auth("dm")), 200)
    await expect(await client.delete(SITE_URL + "/B-1", headers=h), 404)


async def test_system_generated_ids_are_unique_under_concurrency(client, world, pool):
    await world.standard(participantIdMethod="system_generated", idTemplate="{site}-{seq:04}")
    h = world.auth("crc_a")
    responses = await asyncio.gather(
        *(client.post(SITE_URL, json={"firstName": f"N{i}"}, headers=h) for i in range(50))
    )
    keys = [(await expect(r, 200))["subjectKey"] for r in responses]
    assert len(set(keys)) == 50
    assert sorted(keys) == [f"{SITE_A}-{i:04}" for i in range(1, 51)]
    assert await pool.fetchval("SELECT count(*) FROM participants") == 50
    # A given ID must name an existing participant.
    got = await expect(await client.post(SITE_URL, json={"subjectKey": "HAND-1"}, headers=h), 404)
    assert got["message"] == "errorCode.participantNotFound"
    await expect(
        await client.post(SITE_URL, json={"subjectKey": keys[0], "lastName": "Updated"}, headers=h), 200
    )


async def test_enrollment_cap_has_no_overshoot_under_concurrency(client, world, pool):
    await world.standard(expectedTotalEnrollment=10, enforceEnrollmentCap=True)
    h = world.auth("dm")
    responses = await asyncio.gather(
        *(client.post(SITE_URL, json={"subjectKey": f"C-{i}"}, headers=h) for i in range(50))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 10 + [409] * 40
    for r in responses:
        if r.status == 409:
            assert (await r.json())["message"] == "errorCode.participantsEnrollmentCapReached"
    assert await pool.fetchval("SELECT count(*) FROM participants") == 10
    # Updating an existing participant is not an enrollment.
    existing = await pool.fetchval("SELECT subject_key FROM participants LIMIT 1")
    await expect(await client.post(SITE_URL, json={"subjectKey": existing, "firstName": "Z"}, headers=h), 200)
    # A removed participant frees a place; restoring it needs one again.
    await expect(await client.delete(SITE_URL + "/" + existing, headers=h), 200)
    await expect(await client.post(SITE_URL, json={"subjectKey": "C-NEW"}, headers=h), 200)
    got = await expect(await client.post(SITE_URL + "/" + existing + "/restore", headers=h), 409)
    assert got["message"] == "errorCode.participantsEnrollmentCapReached"


async def test_concurrent_adds_of_the_same_id_make_one_participant(client, world, pool):
    await world.standard()
    h = world.auth("dm")
    responses = await asyncio.gather(
        *(
            client.post(SITE_URL, json={"subjectKey": "SAME-1", "firstName": f"F{i}"}, headers=h)
            for i in range(20)
        )
    )
    assert all(r.status == 200 for r in responses), [r.status for r in responses]
    assert await pool.fetchval("SELECT count(*) FROM participants") == 1
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'participant.create'") == 1


async def test_path_prefix(make_client, world):
    await world.standard()
    client = await make_client(path_prefix="/OpenClinica")
    await expect(
        await client.post("/OpenClinica" + SITE_URL, json={"subjectKey": "P-1"}, headers=world.auth("dm")),
        200,
    )
    await expect(await client.post(SITE_URL, json={"subjectKey": "P-2"}, headers=world.auth("dm")), 404)


@pytest.mark.parametrize(
    ("user", "path", "query", "body", "status", "code"),
    [
        ("dm", "/pages/auth/api/clinicaldata/studies/NOPE/participants", "", b"{", 404, "studyNotExist"),
        (
            "dm",
            "/pages/auth/api/clinicaldata/studies/NOPE/participants",
            "?register=zz",
            b"{}",
            404,
            "studyNotExist",
        ),
        ("monitor", SITE_URL, "", b'{"subjectKey": 123}', 403, "noSufficientPrivileges"),
        ("monitor", SITE_URL, "?register=zz", b"{}", 403, "noSufficientPrivileges"),
        ("crc_b", SITE_URL, "", b"{", 403, "noRoleSetUp"),
        ("dm", SITE_URL, "?register=zz", b"{", 400, "invalidRegisterParameter"),
    ],
)
async def test_check_order_is_ocs_who_and_where_before_what(
    client, world, user, path, query, body, status, code
):
    await world.standard()
    resp = await client.post(
        path + query, data=body, headers={**world.auth(user), "Content-Type": "application/json"}
    )
    assert (await expect(resp, status))["message"] == f"errorCode.{code}"


async def test_list_checks_access_before_paging(client, world):
    await world.standard()
    got = await expect(
        await client.get(
            "/pages/auth/api/clinicaldata/studies/NOPE/participants?page=0", headers=world.auth("dm")
        ),
        404,
    )
    assert got["message"] == "errorCode.studyNotExist"
