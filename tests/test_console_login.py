"""The console's sign-in stores nothing before someone signs in: the form's CSRF token and the
identity provider flow's state are signed cookies, not Redis keys."""

from __future__ import annotations

import hashlib
import time

import pytest
from redis.asyncio import Redis

from service.core.deployment_key import REDIS_KEY, deployment_key, sign, user_digest
from service.web.console.login import LOGIN_COOKIE, LOGIN_FORM_SECONDS, LOGIN_PURPOSE
from service.web.console.oidc_login import FLOW_COOKIE
from service.web.console.sessions import COOKIE_NAME
from tests.console_helpers import PASSWORD, csrf_of, give_password, sign_in
from tests.serving import refused_port


@pytest.fixture
async def staff(world, pool):
    await world.standard()
    await give_password(pool, "crc_a")


@pytest.fixture
async def redis(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_the_sign_in_page_leaves_nothing_in_redis(client, staff, redis):
    before = set(await redis.keys("*"))
    assert REDIS_KEY.encode() in before  # the deployment's one key, made at startup
    for _ in range(25):
        client.session.cookie_jar.clear()  # a new visitor each time
        page = await client.get("/console/login")
        assert page.status == 200 and LOGIN_COOKIE in page.cookies
    assert set(await redis.keys("*")) == before


async def _post(client, token: str | None, cookie: str | None):
    client.session.cookie_jar.clear()
    data = {"username": "crc_a", "password": PASSWORD}
    if token is not None:
        data["csrf"] = token
    headers = {"Cookie": f"{LOGIN_COOKIE}={cookie}"} if cookie is not None else {}
    return await client.post("/console/login", data=data, headers=headers, allow_redirects=False)


async def test_a_forged_expired_or_absent_login_token_is_refused(client, staff, redis):
    token = csrf_of(await (await client.get("/console/login")).text())
    other = csrf_of(await (await client.get("/console/login")).text())
    key = await deployment_key(redis)
    nonce, stamp, mac = token.split(".")
    refused = {
        "no field": (None, token),
        "no cookie": (token, None),
        "field and cookie differ": (token, other),
        "forged MAC": (f"{nonce}.{stamp}.{'A' * len(mac)}", f"{nonce}.{stamp}.{'A' * len(mac)}"),
        "another time": (f"{nonce}.{int(stamp) + 1}.{mac}", f"{nonce}.{int(stamp) + 1}.{mac}"),
        "expired": (
            expired := sign(key, LOGIN_PURPOSE, "n0nce", time.time() - LOGIN_FORM_SECONDS - 1),
            expired,
        ),
        "another key": (forged := sign(b"k" * 32, LOGIN_PURPOSE, "n0nce"), forged),
        "another purpose": (other_use := sign(key, "console-oidc-flow", "n0nce"), other_use),
        "garbage": ("x", "x"),
    }
    for case, (field, cookie) in refused.items():
        resp = await _post(client, field, cookie)
        assert resp.status == 403, case
        assert "csrfTokenInvalid" in await resp.text(), case
        assert COOKIE_NAME not in resp.cookies, case
    # The refusals cost no sign-in attempt: the right password with a good token still works.
    resp = await _post(client, token, token)
    assert resp.status == 303 and resp.headers["Location"] == "/console/"
    assert COOKIE_NAME in resp.cookies
    assert resp.cookies[LOGIN_COOKIE].value == ""  # the form's cookie is dropped
    assert (await client.get("/console/", allow_redirects=False)).status == 200


async def test_a_failed_sign_in_shows_a_fresh_form_that_works(client, staff):
    resp = await sign_in(client, "crc_a", "not the password")
    assert resp.status == 401
    token = csrf_of(await resp.text())
    assert resp.cookies[LOGIN_COOKIE].value == token
    again = await client.post(
        "/console/login",
        data={"csrf": token, "username": "crc_a", "password": PASSWORD},
        allow_redirects=False,
    )
    assert again.status == 303


async def test_oidc_sign_in_while_signed_in_goes_home(make_client, staff):
    # A provider nobody answers for: the start must not even ask it when someone is signed in.
    with refused_port() as port:
        client = await make_client(oidc_issuer=f"http://127.0.0.1:{port}/realms/x", oidc_client_id="console")
        assert (await sign_in(client, "crc_a")).status == 303
        resp = await client.get("/console/login/oidc", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/"
    assert COOKIE_NAME not in resp.cookies  # the session is neither ended nor replaced
    assert (await client.get("/console/", allow_redirects=False)).status == 200


async def test_the_oidc_flow_is_a_signed_cookie_and_good_for_one_try(make_client, staff, oidc, redis):
    await oidc.configure(codeUser="crc_a", clientId="console", audience="participants-api")
    client = await make_client(
        jwt_secret=None, oidc_issuer=oidc.issuer, oidc_client_id="console", oidc_audience="participants-api"
    )
    before = set(await redis.keys("*"))
    start = await client.get("/console/login/oidc", allow_redirects=False)
    assert start.status == 302 and FLOW_COOKIE in start.cookies
    assert "HttpOnly" in start.headers["Set-Cookie"] and "SameSite=Lax" in start.headers["Set-Cookie"]
    assert set(await redis.keys("*")) == before  # nothing kept for a visitor
    async with client.session.get(start.headers["Location"], allow_redirects=False) as at_provider:
        back = at_provider.headers["Location"]  # our callback, with the code and the state
    done = await client.session.get(back, allow_redirects=False)
    assert done.status == 303 and COOKIE_NAME in done.cookies and done.cookies[FLOW_COOKIE].value == ""
    assert (await client.get("/console/", allow_redirects=False)).status == 200
    # The same callback again: the flow's cookie is gone, so it is refused.
    replay = await client.session.get(back, allow_redirects=False)
    assert replay.status == 403
    # A state this flow did not send is refused, and ends the flow.
    client.session.cookie_jar.clear()
    assert FLOW_COOKIE in (await client.get("/console/login/oidc", allow_redirects=False)).cookies
    forged = await client.get("/console/login/oidc/callback?code=x&state=forged", allow_redirects=False)
    assert forged.status == 403 and forged.cookies[FLOW_COOKIE].value == ""


async def test_sign_in_log_lines_name_the_user_by_a_keyed_digest(client, staff, redis, caplog):
    caplog.set_level("INFO", logger="participants.signin")
    assert (await sign_in(client, "crc_a")).status == 303
    resp = await client.post(
        "/user-service/api/oauth/token", json={"username": "crc_a", "password": PASSWORD}
    )
    assert resp.status == 200
    key = await deployment_key(redis)
    users = [r.user for r in caplog.records if r.name == "participants.signin"]  # type: ignore[attr-defined]
    assert users == [user_digest(key, "crc_a")] * 2
    assert users[0] != hashlib.sha256(b"crc_a").hexdigest()[:12]  # not findable from a list of names
    assert user_digest(b"another deployment" * 2, "crc_a") != users[0]
