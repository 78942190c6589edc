"""The credentials epoch: a new password, a disable or enable, an admin-flag change and "sign out
everywhere" end the user's console sessions and refuse the tokens issued before; refused tokens say
why (``params.reason``, RFC 6750's ``WWW-Authenticate``). Through the app, on real Postgres and Redis."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest

from service.core import accounts
from tests.console_helpers import PASSWORD, give_password, page_csrf, sign_in
from tests.test_auth import jwks_server  # noqa: F401 - the fixture, used by the RS256 test
from tests.world import SITE_A, STUDY, expect

LIST_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
TOKEN_URL = "/user-service/api/oauth/token"
NEW_PASSWORD = "a brand new password 2026"
REVOKED = {"message": "errorCode.unauthenticated", "params": {"reason": "revoked"}}


def old_token(settings: Any, username: str, **claims: Any) -> str:
    """An HS256 token issued ten seconds ago (a token's iat has whole seconds: one issued in the
    second of a change counts as after it)."""
    now = int(time.time())
    body = {"preferred_username": username, "sub": username, "iat": now - 10, "exp": now + 3600, **claims}
    return jwt.encode(body, settings.jwt_secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_invalid_token_challenge(resp: Any) -> None:
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="'), challenge
    assert challenge.endswith('"')


async def assert_revoked(client: Any, token: str) -> None:
    resp = await client.get(LIST_URL, headers=bearer(token))
    assert await expect(resp, 401) == REVOKED
    assert_invalid_token_challenge(resp)


async def console_signed_in(client: Any) -> bool:
    resp = await client.get("/console/", allow_redirects=False)
    if resp.status == 303:
        assert resp.headers["Location"] == "/console/login"
        return False
    assert resp.status == 200, await resp.text()
    return True


async def signed_in_browser(make_client: Any, username: str) -> Any:
    browser = await make_client()
    assert (await sign_in(browser, username)).status == 303
    assert await console_signed_in(browser)
    return browser


@pytest.fixture
async def staff(world, pool):
    await world.standard()
    await give_password(pool, "crc_a", "admin")
    # The passwords were set a while ago: the tokens of old_token (issued ten seconds ago) predate
    # no change yet.
    await pool.execute("UPDATE users SET credentials_changed_at = now() - interval '1 minute'")


async def audit_actions(pool: Any, action: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await pool.fetch("SELECT username, details FROM audit_log WHERE action = $1 ORDER BY id", action)
    return [(r["username"], r["details"]) for r in rows]


async def test_a_reset_password_ends_the_console_session_and_refuses_the_old_token(
    client, make_client, staff, world, settings
):
    browser = await signed_in_browser(make_client, "crc_a")
    token = old_token(settings, "crc_a")
    await expect(await client.get(LIST_URL, headers=bearer(token)), 200)

    put = await client.put(
        "/admin/api/users/crc_a/password", json={"password": NEW_PASSWORD}, headers=world.auth("admin")
    )
    assert put.status == 204, await put.text()

    await assert_revoked(client, token)
    # The job endpoints and the admin API read the user through active_user: the same refusal.
    job = await client.get(f"/pages/auth/api/jobs/{uuid.uuid4()}", headers=bearer(token))
    assert await expect(job, 401) == REVOKED
    assert not await console_signed_in(browser)
    # A new sign-in works at once, in the console and at the token endpoint (same second included).
    assert (await sign_in(browser, "crc_a", PASSWORD)).status == 401  # the old password is gone
    assert (await sign_in(browser, "crc_a", NEW_PASSWORD)).status == 303
    assert await console_signed_in(browser)
    fresh = await expect(
        await client.post(TOKEN_URL, json={"username": "crc_a", "password": NEW_PASSWORD}), 200
    )
    await expect(await client.get(LIST_URL, headers=bearer(fresh)), 200)


async def test_cleared_password_refuses_the_old_token(client, staff, pool, settings):
    token = old_token(settings, "crc_a")
    async with pool.acquire() as conn:
        await accounts.clear_password(conn, "crc_a")
    await assert_revoked(client, token)


async def test_disable_reset_enable_revives_neither_cookie_nor_token(
    client, make_client, staff, world, settings
):
    browser = await signed_in_browser(make_client, "crc_a")
    token = old_token(settings, "crc_a")
    admin = world.auth("admin")
    off = await client.patch("/admin/api/users/crc_a", json={"disabled": True}, headers=admin)
    await expect(off, 200)
    # Disabled: no one here (as before), whatever the token.
    assert (await expect(await client.get(LIST_URL, headers=bearer(token)), 403))["message"] == (
        "errorCode.noRoleSetUp"
    )
    put = await client.put("/admin/api/users/crc_a/password", json={"password": NEW_PASSWORD}, headers=admin)
    assert put.status == 204
    await expect(await client.patch("/admin/api/users/crc_a", json={"disabled": False}, headers=admin), 200)

    await assert_revoked(client, token)
    assert not await console_signed_in(browser)
    assert (await sign_in(browser, "crc_a", NEW_PASSWORD)).status == 303
    assert await console_signed_in(browser)


async def test_admin_flag_change_moves_the_epoch_and_a_no_change_patch_does_not(
    client, staff, world, settings
):
    token = old_token(settings, "crc_a")
    admin = world.auth("admin")
    # Enabling a user who is enabled changes nothing: the token keeps working.
    await expect(await client.patch("/admin/api/users/crc_a", json={"disabled": False}, headers=admin), 200)
    await expect(await client.get(LIST_URL, headers=bearer(token)), 200)
    await expect(await client.patch("/admin/api/users/crc_a", json={"admin": True}, headers=admin), 200)
    await assert_revoked(client, token)
    admin_api = await client.get("/admin/api/users", headers=bearer(token))
    assert await expect(admin_api, 401) == REVOKED


async def test_admin_sign_out_everywhere(client, make_client, staff, world, settings, pool):
    browsers = [await signed_in_browser(make_client, "crc_a") for _ in range(2)]
    token = old_token(settings, "crc_a")
    untouched = old_token(settings, "crc_b")
    url = "/admin/api/users/crc_a/sessions/revoke"

    assert (await expect(await client.post(url, headers=world.auth("crc_a")), 403))["message"] == (
        "errorCode.noSufficientPrivileges"
    )
    assert (await client.post(url)).status == 401
    missing = await client.post("/admin/api/users/nobody/sessions/revoke", headers=world.auth("admin"))
    assert (await expect(missing, 404))["message"] == "errorCode.userNotFound"
    await expect(await client.get(LIST_URL, headers=bearer(token)), 200)  # nothing refused so far

    resp = await client.post(url, headers=world.auth("admin"))
    assert resp.status == 204, await resp.text()
    await assert_revoked(client, token)
    for browser in browsers:
        assert not await console_signed_in(browser)
    # Another user's token is not touched.
    other_site = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/S_TEXAS/participants"
    await expect(await client.get(other_site, headers=bearer(untouched)), 200)
    assert await audit_actions(pool, "admin.user.revokeSessions") == [("admin", {"user": "crc_a"})]
    # Signing in again works.
    fresh = await expect(await client.post(TOKEN_URL, json={"username": "crc_a", "password": PASSWORD}), 200)
    await expect(await client.get(LIST_URL, headers=bearer(fresh)), 200)


async def test_console_button_signs_the_user_out_everywhere(client, make_client, staff, settings, pool):
    here = await signed_in_browser(make_client, "crc_a")
    elsewhere = await signed_in_browser(make_client, "crc_a")
    colleague = await signed_in_browser(make_client, "admin")
    token = old_token(settings, "crc_a")

    home = await (await here.get("/console/")).text()
    assert 'action="/console/sessions/revoke"' in home and "Sign out everywhere" in home
    refused = await here.post("/console/sessions/revoke", data={}, allow_redirects=False)
    assert refused.status == 403  # no CSRF token
    assert await console_signed_in(here)

    csrf = await page_csrf(here)
    resp = await here.post("/console/sessions/revoke", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    assert not await console_signed_in(here)
    assert not await console_signed_in(elsewhere)
    assert await console_signed_in(colleague)
    await assert_revoked(client, token)
    assert await audit_actions(pool, "user.revokeSessions") == [("crc_a", {"user": "crc_a"})]
    assert (await sign_in(here, "crc_a")).status == 303
    assert await console_signed_in(here)


async def test_a_token_without_iat_counts_from_its_exp_minus_the_longest_lifetime(
    client, staff, world, settings, pool
):
    await pool.execute("UPDATE users SET credentials_changed_at = 'epoch'")  # never changed
    now = int(time.time())
    no_iat = jwt.encode(
        {"preferred_username": "crc_a", "exp": now + 60}, settings.jwt_secret, algorithm="HS256"
    )
    await expect(await client.get(LIST_URL, headers=bearer(no_iat)), 200)  # no change yet
    await expect(
        await client.post("/admin/api/users/crc_a/sessions/revoke", headers=world.auth("admin")), 204
    )
    await assert_revoked(client, no_iat)


async def test_provider_tokens_are_refused_the_same_way(
    make_client,
    staff,
    world,
    jwks_server,
):
    url, key, _ = jwks_server
    admin_client = await make_client()  # HS256 for the admin, without this provider's issuer and audience
    client = await make_client(
        jwks_url=str(url), jwt_issuer="https://kc.example/realms/oc", jwt_audience="oc4"
    )
    now = int(time.time())
    claims = {"preferred_username": "crc_a", "iss": "https://kc.example/realms/oc", "aud": "oc4"}
    token = jwt.encode(
        {**claims, "iat": now - 10, "exp": now + 60}, key, algorithm="RS256", headers={"kid": "k1"}
    )
    await expect(await client.get(LIST_URL, headers=bearer(token)), 200)
    revoke = await admin_client.post("/admin/api/users/crc_a/sessions/revoke", headers=world.auth("admin"))
    await expect(revoke, 204)
    await assert_revoked(client, token)
    after = int(time.time())  # the second of the change counts as after it
    later = jwt.encode(
        {**claims, "iat": after, "exp": after + 60}, key, algorithm="RS256", headers={"kid": "k1"}
    )
    await expect(await client.get(LIST_URL, headers=bearer(later)), 200)
    expired = jwt.encode(
        {**claims, "iat": now - 120, "exp": now - 60}, key, algorithm="RS256", headers={"kid": "k1"}
    )
    resp = await client.get(LIST_URL, headers=bearer(expired))
    assert (await expect(resp, 401))["params"] == {"reason": "expired"}


async def test_expired_garbage_and_missing_tokens_say_what_they_are(client, staff, settings):
    now = int(time.time())
    expired = old_token(settings, "crc_a", iat=now - 120, exp=now - 60)
    resp = await client.get(LIST_URL, headers=bearer(expired))
    assert await expect(resp, 401) == {
        "message": "errorCode.unauthenticated",
        "params": {"reason": "expired"},
    }
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="the token has expired"'
    )
    resp = await client.get(LIST_URL, headers=bearer("not-a-token"))
    assert await expect(resp, 401) == {
        "message": "errorCode.unauthenticated",
        "params": {"reason": "invalid"},
    }
    assert_invalid_token_challenge(resp)
    resp = await client.get(LIST_URL)
    assert await expect(resp, 401) == {"message": "errorCode.unauthenticated", "params": {}}
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    # The job and admin endpoints answer the same.
    for path in (f"/pages/auth/api/jobs/{uuid.uuid4()}", "/admin/api/users"):
        resp = await client.get(path, headers=bearer(expired))
        assert (await expect(resp, 401))["params"] == {"reason": "expired"}
        assert_invalid_token_challenge(resp)
