"""The admin API: set up a deployment without SQL."""

from __future__ import annotations

from tests.world import expect


async def test_admin_sets_up_a_study_end_to_end(client, world):
    h = {"Authorization": f"Bearer {await world.user('root', admin=True, full_name='Root')}"}
    study = {
        "oid": "S_NEW",
        "name": "New",
        "participateEnabled": True,
        "expectedTotalEnrollment": 5,
        "enforceEnrollmentCap": True,
    }
    created = await expect(await client.post("/admin/api/studies", json=study, headers=h), 201)
    assert created["participantIdMethod"] == "manual" and created["status"] == "available"
    await expect(await client.post("/admin/api/studies", json=study, headers=h), 409)
    await expect(
        await client.post(
            "/admin/api/studies/S_NEW/sites", json={"oid": "S_NEW_1", "name": "One"}, headers=h
        ),
        201,
    )
    await expect(
        await client.post("/admin/api/studies/S_NEW/sites", json={"oid": "S_NEW", "name": "Dup"}, headers=h),
        409,
    )
    await expect(
        await client.post("/admin/api/studies/S_NOPE/sites", json={"oid": "S_X", "name": "X"}, headers=h), 404
    )
    await expect(
        await client.post("/admin/api/users", json={"username": "carla", "fullName": "Carla C"}, headers=h),
        201,
    )
    role = {"studyOid": "S_NEW", "siteOid": "S_NEW_1", "role": "ra"}
    await expect(await client.post("/admin/api/users/carla/roles", json=role, headers=h), 201)
    await expect(await client.post("/admin/api/users/carla/roles", json=role, headers=h), 409)
    bad = await expect(
        await client.post("/admin/api/users/carla/roles", json={**role, "role": "boss"}, headers=h), 400
    )
    assert bad["message"] == "errorCode.invalidRequestBody"
    roles = await expect(await client.get("/admin/api/users/carla/roles", headers=h), 200)
    assert roles == {"roles": [role]}

    carla = world.auth("carla")
    url = "/pages/auth/api/clinicaldata/studies/S_NEW/sites/S_NEW_1/participants"
    await expect(await client.post(url, json={"subjectKey": "N-1"}, headers=carla), 200)

    patched = await expect(
        await client.patch("/admin/api/studies/S_NEW", json={"status": "frozen"}, headers=h), 200
    )
    assert patched["status"] == "frozen"
    await expect(await client.post(url, json={"subjectKey": "N-2"}, headers=carla), 409)
    await expect(await client.patch("/admin/api/studies/S_NEW", json={"status": "available"}, headers=h), 200)
    await expect(
        await client.patch("/admin/api/studies/S_NEW/sites/S_NEW_1", json={"status": "locked"}, headers=h),
        200,
    )
    got = await expect(await client.post(url, json={"subjectKey": "N-2"}, headers=carla), 409)
    assert got["message"] == "errorCode.siteNotAvailable"

    await expect(
        await client.patch("/admin/api/studies/S_NEW/sites/S_NEW_1", json={"status": "available"}, headers=h),
        200,
    )
    await expect(await client.request("DELETE", "/admin/api/users/carla/roles", json=role, headers=h), 204)
    got = await expect(await client.post(url, json={"subjectKey": "N-3"}, headers=carla), 403)
    assert got["message"] == "errorCode.noRoleSetUp"
    listed = await expect(await client.get("/admin/api/studies", headers=h), 200)
    assert [s["oid"] for s in listed["studies"]] == ["S_NEW"]


async def test_admin_validation_and_access(client, world):
    admin = {"Authorization": f"Bearer {await world.user('root', admin=True)}"}
    plain = {"Authorization": f"Bearer {await world.user('plain')}"}
    await expect(await client.get("/admin/api/studies"), 401)
    assert (await expect(await client.get("/admin/api/studies", headers=plain), 403))[
        "message"
    ] == "errorCode.noSufficientPrivileges"
    stranger = {"Authorization": f"Bearer {world.token('stranger')}"}
    assert (await expect(await client.get("/admin/api/users", headers=stranger), 403))[
        "message"
    ] == "errorCode.noRoleSetUp"
    for body in (
        {"oid": "S/1", "name": "x"},
        {"oid": "S1"},
        {"oid": "S1", "name": "x", "idTemplate": "{site}"},
        {"oid": "S1", "name": "x", "expectedTotalEnrollment": "ten"},
        {"oid": "S1", "name": "x", "expectedTotalEnrollment": "10"},
        {"oid": "S1", "name": "x", "expectedTotalEnrollment": 10.5},
        {"oid": "S1", "name": "x", "expectedTotalEnrollment": True},
        {"oid": "S1", "name": "x", "bogus": 1},
    ):
        got = await expect(await client.post("/admin/api/studies", json=body, headers=admin), 400)
        assert got["message"] == "errorCode.invalidRequestBody"
    # JSON Schema's integer: a whole number written as 12.0 is the integer 12.
    made = await expect(await client.post("/admin/api/studies", json={"oid": "S_WHOLE", "name": "x",
                                                                      "expectedTotalEnrollment": 12.0},
                                          headers=admin), 201)  # fmt: skip
    assert made["expectedTotalEnrollment"] == 12
    await expect(await client.get("/admin/api/studies/S_NOPE", headers=admin), 404)
    await expect(await client.get("/admin/api/users/nobody/roles", headers=admin), 404)
