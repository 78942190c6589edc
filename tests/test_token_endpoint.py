"""POST /user-service/api/oauth/token as OC4 clients call it: local accounts, throttling, the admin
password API. (The identity-provider backend is in test_oidc_auth.py.)"""

from __future__ import annotations

import logging

import pytest

from service.core import accounts
from tests.world import SITE_A, STUDY, expect

TOKEN_URL = "/user-service/api/oauth/token"
LIST_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
PASSWORD = "crc-a password 2026"
INVALID = {"message": "errorCode.invalidCredentials", "params": {}}


async def with_password(pool, username: str, password: str = PASSWORD) -> None:
    async with pool.acquire() as conn:
        await accounts.set_password(conn, username, password)


async def sign_in(client, username: str, password: str, path: str = TOKEN_URL):
    return await client.post(path, json={"username": username, "password": password})


async def test_sign_in_then_use_the_token_as_oc4_clients_do(client, world, pool, caplog):
    await world.standard()
    await with_password(pool, "crc_a")
    caplog.set_level(logging.DEBUG)
    resp = await sign_in(client, "crc_a", PASSWORD)
    token = await expect(resp, 200)
    assert resp.content_type == "text/plain" and resp.headers["Cache-Control"] == "no-store"
    assert token.count(".") == 2 and not token.startswith("{")
    body = await expect(await client.get(LIST_URL, headers={"Authorization": f"Bearer {token}"}), 200)
    assert body == {"studyParticipants": []}
    add = await client.post(
        LIST_URL, json={"subjectKey": "TOK-1"}, headers={"Authorization": f"bearer {token}"}
    )
    await expect(add, 200)
    assert PASSWORD not in caplog.text and token not in caplog.text
    assert "crc_a" not in " ".join(str(r.__dict__) for r in caplog.records if r.name == "participants.signin")


async def test_wrong_password_or_unknown_user_is_the_same_401(client, world, pool):
    await world.standard()
    await with_password(pool, "crc_a")
    for username, password in [("crc_a", PASSWORD + "x"), ("nobody", PASSWORD), ("dm", PASSWORD)]:
        resp = await sign_in(client, username, password)  # dm exists but has no password
        assert await expect(resp, 401) == INVALID


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"not json", "application/json"),
        (b"[]", "application/json"),
        (b"", "application/json"),
        (b'{"username": "crc_a"}', "application/json"),
        (b'{"password": "x"}', "application/json"),
        (b'{"username": "crc_a", "password": 123456789012345}', "application/json"),
        (b'{"username": "", "password": "x"}', "application/json"),
        (b'{"username": "a\\u0000b", "password": "x"}', "application/json"),
        (b"username=crc_a&password=x", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_bodies_are_400(client, world, body, content_type):
    resp = await client.post(TOKEN_URL, data=body, headers={"Content-Type": content_type})
    assert (await expect(resp, 400))["message"] == "errorCode.invalidRequestBody"


async def test_five_failures_lock_the_username_for_every_api_process(make_client, world, pool):
    await world.standard()
    await with_password(pool, "crc_a")
    first, second = await make_client(), await make_client()  # two API processes, one Redis
    for client in (first, first, first, second, second):
        await expect(await sign_in(client, "crc_a", "wrong password!"), 401)
    for client in (first, second):
        resp = await sign_in(client, "crc_a", PASSWORD)  # even the right password now
        body = await expect(resp, 429)
        assert body["message"] == "errorCode.tooManyAttempts"
        assert 800 < int(resp.headers["Retry-After"]) <= 900


async def test_a_success_clears_earlier_failures(client, world, pool):
    await world.standard()
    await with_password(pool, "crc_a")
    for _ in range(4):
        await expect(await sign_in(client, "crc_a", "wrong password!"), 401)
    await expect(await sign_in(client, "crc_a", PASSWORD), 200)
    for _ in range(4):  # the budgets are whole again: those were crc_a's typos
        await expect(await sign_in(client, "crc_a", "wrong password!"), 401)
    await expect(await sign_in(client, "crc_a", PASSWORD), 200)


async def test_a_success_does_not_forgive_guesses_at_other_users(make_client, world, pool):
    await world.standard()
    await with_password(pool, "crc_a")
    client = await make_client(login_max_failures_per_address=5)  # the address budget, small to see it
    for name in ("dm", "dep", "inv_a", "monitor"):
        await expect(await sign_in(client, name, "guessing!"), 401)
    await expect(await sign_in(client, "crc_a", PASSWORD), 200)
    await expect(await sign_in(client, "viewer", "guessing!"), 401)  # fifth failure from this address
    await expect(await sign_in(client, "crc_a", PASSWORD), 429)


async def test_both_paths_with_a_path_prefix(make_client, world, pool):
    await world.standard()
    await with_password(pool, "crc_a")
    client = await make_client(path_prefix="/OpenClinica")
    for path in (TOKEN_URL, "/OpenClinica" + TOKEN_URL):
        token = await expect(await sign_in(client, "crc_a", PASSWORD, path), 200)
        headers = {"Authorization": f"Bearer {token}"}
        await expect(await client.get("/OpenClinica" + LIST_URL, headers=headers), 200)


async def test_no_backend_configured_is_404(make_client, world, pool):
    await world.standard()
    await with_password(pool, "crc_a")
    client = await make_client(jwt_secret=None, jwks_url="http://127.0.0.1:9/certs")
    assert (await expect(await sign_in(client, "crc_a", PASSWORD), 404))["message"] == "errorCode.notFound"
    # The route is there (another method is 405, not 404): the 404 is the endpoint's own answer, for
    # want of a way to mint tokens, not a missing route.
    assert (await client.get(TOKEN_URL)).status == 405
    # With a secret, the same request signs in.
    with_secret = await make_client()
    await expect(await sign_in(with_secret, "crc_a", PASSWORD), 200)


async def test_admin_sets_passwords(client, world, pool):
    await world.standard()
    url = "/admin/api/users/crc_a/password"
    resp = await client.put(url, json={"password": "set by the admin"}, headers=world.auth("admin"))
    await expect(resp, 204)
    await expect(await sign_in(client, "crc_a", "set by the admin"), 200)
    audit = await pool.fetchrow(
        "SELECT username, action, details FROM audit_log WHERE action = 'admin.password.set'"
    )
    assert audit["username"] == "admin" and "set by the admin" not in str(audit["details"])

    short = await client.put(url, json={"password": "short"}, headers=world.auth("admin"))
    assert (await expect(short, 400))["message"] == "errorCode.passwordTooShort"
    missing = await client.put(
        "/admin/api/users/nobody/password", json={"password": "long enough pw"}, headers=world.auth("admin")
    )
    assert (await expect(missing, 404))["message"] == "errorCode.userNotFound"
    await expect(await client.put(url, json={}, headers=world.auth("admin")), 400)
    await expect(await client.put(url, json={"password": "long enough pw"}, headers=world.auth("dm")), 403)
    await expect(await client.put(url, json={"password": "long enough pw"}), 401)
    await expect(await sign_in(client, "crc_a", "set by the admin"), 200)  # none of those changed it
