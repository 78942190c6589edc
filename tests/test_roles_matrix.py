"""contract.md's allow table as a matrix: role x level x own/other site x endpoint, through HTTP."""

from __future__ import annotations

import pytest

from tests.world import CAST, SITE_A, STUDY, expect

STUDY_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/participants"
SITE_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"

OK = "ok"
NO_ROLE = "noRoleSetUp"
NOT_ALLOWED = "noSufficientPrivileges"

STUDY_WRITERS = {"dm", "dspec", "dep"}
SITE_A_WRITERS = {"crc_a", "inv_a", "dm_a"}
SITE_A_OTHERS = {"ra2_a", "monitor_a", "viewer_a"}


def expected(endpoint: str, user: str) -> str:
    study_level = CAST[user][0][0] is None
    if endpoint in ("add_at_site", "remove_at_site", "restore_at_site"):
        if user in STUDY_WRITERS | SITE_A_WRITERS:
            return OK
        if study_level or user in SITE_A_OTHERS:
            return NOT_ALLOWED
        return NO_ROLE  # crc_b: a role in the study, none at site A
    if endpoint == "add_at_study":
        return OK if user in STUDY_WRITERS else NOT_ALLOWED
    if endpoint in ("erase_at_site", "erase_at_study"):
        # The data manager (study-level coordinator) alone: not a site's coordinator.
        if user == "dm":
            return OK
        return NO_ROLE if endpoint == "erase_at_site" and user == "crc_b" else NOT_ALLOWED
    if endpoint == "list_at_site":
        return OK if study_level or user in SITE_A_WRITERS | SITE_A_OTHERS else NO_ROLE
    if endpoint == "list_at_study":
        return OK
    raise AssertionError(endpoint)


ENDPOINTS = [
    "add_at_site",
    "add_at_study",
    "erase_at_site",
    "erase_at_study",
    "list_at_site",
    "list_at_study",
    "remove_at_site",
    "restore_at_site",
]


async def call(client, world, endpoint: str, user: str):
    h = world.auth(user)
    if endpoint == "add_at_site":
        return await client.post(SITE_URL, json={"subjectKey": "M-1"}, headers=h)
    if endpoint == "add_at_study":
        return await client.post(STUDY_URL, json={"subjectKey": "M-1"}, headers=h)
    if endpoint == "list_at_site":
        return await client.get(SITE_URL, headers=h)
    if endpoint == "list_at_study":
        return await client.get(STUDY_URL, headers=h)
    if endpoint == "remove_at_site":
        return await client.delete(SITE_URL + "/EXISTING-1", headers=h)
    if endpoint == "erase_at_site":
        return await client.post(SITE_URL + "/EXISTING-1/erase", headers=h)
    if endpoint == "erase_at_study":
        return await client.post(STUDY_URL + "/EXISTING-1/erase", headers=h)
    if endpoint == "restore_at_site":
        return await client.post(SITE_URL + "/EXISTING-1/restore", headers=h)
    raise AssertionError(endpoint)


@pytest.mark.parametrize("user", sorted(CAST))
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_role_matrix(client, world, endpoint, user):
    await world.standard()
    await expect(
        await client.post(SITE_URL, json={"subjectKey": "EXISTING-1"}, headers=world.auth("dm")), 200
    )
    resp = await call(client, world, endpoint, user)
    want = expected(endpoint, user)
    if want == OK:
        await expect(resp, 200)
    else:
        body = await expect(resp, 403)
        assert body["message"] == f"errorCode.{want}"
        assert body["params"]["studyOid"] == STUDY


async def test_site_level_user_lists_only_own_site_at_study_level(client, world):
    await world.standard()
    dm = world.auth("dm")
    await expect(await client.post(SITE_URL, json={"subjectKey": "A-1"}, headers=dm), 200)
    texas = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/S_TEXAS/participants"
    await expect(await client.post(texas, json={"subjectKey": "B-1"}, headers=dm), 200)
    await expect(await client.post(STUDY_URL, json={"subjectKey": "S-1"}, headers=dm), 200)

    everyone = await expect(await client.get(STUDY_URL, headers=dm), 200)
    assert [p["subjectKey"] for p in everyone["studyParticipants"]] == ["A-1", "B-1", "S-1"]
    crc = await expect(await client.get(STUDY_URL, headers=world.auth("crc_a")), 200)
    assert [(p["subjectKey"], p["siteOid"]) for p in crc["studyParticipants"]] == [("A-1", SITE_A)]
    # No personal data in the listing, OC4's fields only.
    assert set(crc["studyParticipants"][0]) == {
        "subjectKey",
        "subjectOid",
        "status",
        "siteOid",
        "createdBy",
        "createdAt",
        "lastModifiedBy",
        "lastModified",
    }
