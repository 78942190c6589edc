"""Switching a person off: a disabled user's tokens are refused at once (403 noRoleSetUp, like an
unknown user), and no token is accepted for longer than the configured lifetime."""

from __future__ import annotations

import time

import jwt

from tests.test_extract import download, run_jobs, seed_site, submit
from tests.world import SITE_A, STUDY, expect

PARTICIPANTS = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"


def _token(settings, claims: dict) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, settings.jwt_secret, algorithm="HS256")}


async def test_disabled_user_is_refused_at_once(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 2)
    job = await submit(client, world)
    await run_jobs(settings)
    assert (await client.get(PARTICIPANTS, headers=world.auth("crc_a"))).status == 200
    await pool.execute("UPDATE users SET disabled = true WHERE username = 'crc_a'")
    body = await expect(await client.get(PARTICIPANTS, headers=world.auth("crc_a")), 403)
    assert body["message"] == "errorCode.noRoleSetUp"
    assert (await download(client, world, job)).status == 404
    await pool.execute("UPDATE users SET admin = true, disabled = true WHERE username = 'dm_a'")
    body = await expect(await client.get("/admin/api/users", headers=world.auth("dm_a")), 403)
    assert body["message"] == "errorCode.noRoleSetUp"


async def test_token_lifetime_is_capped(make_client, world, settings):
    client = await make_client(jwt_max_lifetime_seconds=3600)
    await world.standard()
    now = int(time.time())
    base = {"preferred_username": "crc_a", "sub": "crc_a"}
    ok = _token(settings, {**base, "iat": now, "exp": now + 3600})
    too_long = _token(settings, {**base, "iat": now, "exp": now + 3601})
    year_2100 = _token(settings, {**base, "exp": 4102444800})  # no iat: counted from now
    future_iat = _token(settings, {**base, "iat": 4102444000, "exp": 4102444800})  # iat cannot shrink it
    assert (await client.get(PARTICIPANTS, headers=ok)).status == 200
    for headers in (too_long, year_2100, future_iat):
        body = await expect(await client.get(PARTICIPANTS, headers=headers), 401)
        assert body["message"] == "errorCode.unauthenticated"
