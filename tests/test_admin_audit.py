"""Every admin write leaves an audit row naming who did what to which record (never secrets or
personal data), and PATCH /admin/api/users/{username} switches a person off or takes the admin
flag away, at once."""

from __future__ import annotations

from tests.world import SITE_A, STUDY, expect

ADMIN = "/admin/api"


async def _actions(pool) -> list[tuple[str, str, dict]]:
    rows = await pool.fetch(
        "SELECT username, action, details FROM audit_log WHERE action LIKE 'admin.%' ORDER BY id"
    )
    return [(r["username"], r["action"], r["details"]) for r in rows]


async def test_every_admin_write_is_audited(client, world, pool):
    await world.standard()
    h = world.auth("admin")
    await expect(await client.post(f"{ADMIN}/studies", json={"oid": "S_NEW", "name": "New"}, headers=h), 201)
    await expect(await client.patch(f"{ADMIN}/studies/S_NEW", json={"name": "Renamed"}, headers=h), 200)
    await expect(
        await client.post(f"{ADMIN}/studies/S_NEW/sites", json={"oid": "S_NEW_1", "name": "One"}, headers=h),
        201,
    )
    await expect(
        await client.patch(f"{ADMIN}/studies/S_NEW/sites/S_NEW_1", json={"name": "Uno"}, headers=h), 200
    )
    user = {"username": "newbie", "fullName": "Private Person", "admin": False}
    await expect(await client.post(f"{ADMIN}/users", json=user, headers=h), 201)
    role = {"studyOid": STUDY, "siteOid": SITE_A, "role": "ra"}
    await expect(await client.post(f"{ADMIN}/users/newbie/roles", json=role, headers=h), 201)
    resp = await client.delete(f"{ADMIN}/users/newbie/roles", json=role, headers=h)
    assert resp.status == 204
    await expect(await client.patch(f"{ADMIN}/users/newbie", json={"disabled": True}, headers=h), 200)
    secret = "a-password-of-some-length"
    resp = await client.put(f"{ADMIN}/users/newbie/password", json={"password": secret}, headers=h)
    assert resp.status == 204, await resp.text()
    hook = {"url": "https://hooks.example.org/in?token=receiver-token", "events": ["job.completed"]}
    created = await client.post(f"{ADMIN}/webhooks", json=hook, headers=h)
    if created.status == 201:  # the SSRF guard may refuse a name that does not resolve here
        endpoint = (await created.json())["id"]
        await expect(
            await client.patch(f"{ADMIN}/webhooks/{endpoint}", json={"enabled": False}, headers=h), 200
        )
        await expect(await client.post(f"{ADMIN}/webhooks/{endpoint}/rotate-secret", json={}, headers=h), 200)
        assert (await client.delete(f"{ADMIN}/webhooks/{endpoint}", headers=h)).status == 204

    actions = await _actions(pool)
    assert {a for _, a, _ in actions} >= {
        "admin.study.create", "admin.study.update", "admin.site.create", "admin.site.update", "admin.user.create",
        "admin.role.grant", "admin.role.revoke", "admin.user.update", "admin.password.set",
    }  # fmt: skip
    assert all(who == "admin" for who, _, _ in actions)
    details = {a: d for _, a, d in actions}
    assert details["admin.study.update"] == {"studyOid": "S_NEW", "fields": ["name"]}
    assert details["admin.role.grant"] == {
        "user": "newbie",
        "studyOid": STUDY,
        "siteOid": SITE_A,
        "role": "ra",
    }
    assert details["admin.user.update"] == {"user": "newbie", "disabled": True}
    text = str(actions)
    for private in ("Private Person", secret, "receiver-token", "Renamed", "Uno"):
        assert private not in text


async def test_patch_user_disables_and_takes_admin_away_at_once(client, world, pool):
    await world.standard()
    await world.user("admin2", admin=True)
    h = world.auth("admin")
    assert (await client.get(f"{ADMIN}/users", headers=world.auth("admin2"))).status == 200
    body = await expect(await client.patch(f"{ADMIN}/users/admin2", json={"admin": False}, headers=h), 200)
    assert body["admin"] is False and body["disabled"] is False
    body = await expect(await client.get(f"{ADMIN}/users", headers=world.auth("admin2")), 403)
    assert body["message"] == "errorCode.noSufficientPrivileges"
    await expect(await client.patch(f"{ADMIN}/users/crc_a", json={"disabled": True}, headers=h), 200)
    participants = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
    body = await expect(await client.get(participants, headers=world.auth("crc_a")), 403)
    assert body["message"] == "errorCode.noRoleSetUp"
    await expect(await client.patch(f"{ADMIN}/users/crc_a", json={"disabled": False}, headers=h), 200)
    await expect(await client.get(participants, headers=world.auth("crc_a")), 200)
    body = await expect(await client.patch(f"{ADMIN}/users/nobody", json={"disabled": True}, headers=h), 404)
    assert body["message"] == "errorCode.userNotFound"
    await expect(await client.patch(f"{ADMIN}/users/crc_a", json={"disabled": "yes"}, headers=h), 400)
