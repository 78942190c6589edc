"""Bearer tokens: HS256 with the configured secret, RS256 against a real (local) JWKS server."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.world import SITE_A, STUDY, expect

LIST_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
UNAUTHENTICATED = {"message": "errorCode.unauthenticated", "params": {}}


def hs_token(secret: str, **claims: object) -> str:
    now = int(time.time())
    body = {"preferred_username": "crc_a", "iat": now, "exp": now + 60, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def get(client, token: str | None, scheme: str = "Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return await client.get(LIST_URL, headers=headers)


async def test_valid_token_any_scheme_case(client, world):
    await world.standard()
    for scheme in ("Bearer", "bearer", "BEARER"):
        body = await expect(await get(client, world.token("crc_a"), scheme), 200)
        assert body == {"studyParticipants": []}


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "basic",
        "empty",
        "garbage",
        "expired",
        "alg_none",
        "wrong_key",
        "no_exp",
        "no_username",
        "exp_past_a_float",
    ],
)
async def test_bad_tokens_are_401(client, world, settings, case):
    await world.standard()
    secret = settings.jwt_secret
    now = int(time.time())
    token, scheme = {
        "missing": (None, "Bearer"),
        "basic": ("dXNlcjpwYXNz", "Basic"),
        "empty": ("", "Bearer"),
        "garbage": ("not.a.token", "Bearer"),
        # expired one second ago: no leeway by default
        "expired": (hs_token(secret, exp=now - 1), "Bearer"),
        "alg_none": (
            b64({"alg": "none", "typ": "JWT"})
            + "."
            + b64({"preferred_username": "crc_a", "exp": now + 60})
            + ".",
            "Bearer",
        ),
        "wrong_key": (hs_token("another-secret-another-secret-another"), "Bearer"),
        "no_exp": (jwt.encode({"preferred_username": "crc_a"}, secret, algorithm="HS256"), "Bearer"),
        "no_username": (jwt.encode({"exp": now + 60}, secret, algorithm="HS256"), "Bearer"),
        # Signed, and an integer as PyJWT wants, but past any float: refused, not a 500.
        "exp_past_a_float": (hs_token(secret, exp=10**400), "Bearer"),
    }[case]
    resp = await get(client, token, scheme)
    if case in ("missing", "basic", "empty"):  # no bearer token at all: nothing to say about one
        assert await expect(resp, 401) == UNAUTHENTICATED
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        return
    reason = "expired" if case == "expired" else "invalid"
    assert await expect(resp, 401) == {**UNAUTHENTICATED, "params": {"reason": reason}}
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="'), challenge


async def test_audience_and_issuer_are_checked(make_client, world, settings):
    await world.standard()
    client = await make_client(jwt_audience="participants-api", jwt_issuer="https://idp.example")
    secret = settings.jwt_secret
    good = hs_token(secret, aud="participants-api", iss="https://idp.example")
    await expect(await get(client, good), 200)
    await expect(await get(client, hs_token(secret, aud="other-api", iss="https://idp.example")), 401)
    await expect(await get(client, hs_token(secret, aud="participants-api", iss="https://evil.example")), 401)
    await expect(await get(client, hs_token(secret, iss="https://idp.example")), 401)  # no audience at all


async def test_valid_token_unknown_user_is_403_no_role(client, world, settings):
    await world.standard()
    token = hs_token(settings.jwt_secret, preferred_username="stranger")
    assert await expect(await get(client, token), 403) == {
        "message": "errorCode.noRoleSetUp",
        "params": {"studyOid": STUDY, "siteOid": SITE_A},
    }


async def test_username_claim_falls_back_to_sub(client, world, settings):
    await world.standard()
    now = int(time.time())
    token = jwt.encode({"sub": "crc_a", "exp": now + 60}, settings.jwt_secret, algorithm="HS256")
    await expect(await get(client, token), 200)


@pytest.fixture
async def jwks_server():
    """A small real identity provider: serves a JWKS and counts how often it is asked."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    hits = {"count": 0}

    async def keys(request: web.Request) -> web.Response:
        hits["count"] += 1
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/certs", keys)
    server = TestServer(app)
    await server.start_server()
    yield server.make_url("/certs"), key, hits
    await server.close()


async def test_rs256_via_jwks(make_client, world, jwks_server):
    url, key, hits = jwks_server
    await world.standard()
    client = await make_client(
        jwks_url=str(url), jwt_issuer="https://kc.example/realms/oc", jwt_audience="oc4"
    )
    now = int(time.time())
    claims = {
        "preferred_username": "crc_a",
        "iss": "https://kc.example/realms/oc",
        "aud": "oc4",
        "exp": now + 60,
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    await expect(await get(client, token), 200)
    await expect(await get(client, token), 200)
    assert hits["count"] == 1  # cached

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
    await expect(await get(client, forged), 401)
    unknown_kid = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "nope"})
    await expect(await get(client, unknown_kid), 401)
    expired = jwt.encode({**claims, "exp": now - 1}, key, algorithm="RS256", headers={"kid": "k1"})
    await expect(await get(client, expired), 401)


async def test_a_remembered_token_still_expires(client, world, settings):
    await world.standard()
    token = hs_token(settings.jwt_secret, exp=int(time.time()) + 2)
    await expect(await get(client, token), 200)  # verified, and now remembered
    await asyncio.sleep(
        max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()) + 0.05
    )
    await expect(await get(client, token), 401)
