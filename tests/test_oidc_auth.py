"""Tokens from a real OpenID Connect provider (oauth2-mock-server, see oidc_server.py), configured by
PARTICIPANTS_OIDC_ISSUER alone: discovery, issuer and audience, key rotation, RS256 and ES256,
algorithm confusion; and the token endpoint forwarding the password grant to it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import aiohttp
import jwt

from tests.serving import refused_port
from tests.world import SITE_A, STUDY, expect

ADD_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
TOKEN_URL = "/user-service/api/oauth/token"
AUDIENCE = "participants-api"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def oidc_client(make_client, oidc, **extra):
    """The service with the provider as its only verification method (no HS256 secret)."""
    return await make_client(jwt_secret=None, oidc_issuer=oidc.issuer, oidc_audience=AUDIENCE, **extra)


async def add(client, token: str, key: str):
    return await client.post(ADD_URL, json={"subjectKey": key, "firstName": "Jo"}, headers=bearer(token))


async def test_a_provider_token_works_end_to_end_on_add_participant(make_client, world, oidc):
    await world.standard()
    client = await oidc_client(make_client, oidc)
    token = await oidc.token(preferred_username="crc_a", aud=AUDIENCE)
    body = await expect(await add(client, token, "OIDC-1"), 200)
    assert body["subjectKey"] == "OIDC-1"
    stats = await oidc.stats()
    assert stats.get("/.well-known/openid-configuration", 0) >= 1 and stats.get("/jwks", 0) >= 1


async def test_es256_and_a_rotated_key(make_client, world, oidc):
    await world.standard()
    client = await oidc_client(make_client, oidc, jwks_min_refresh_seconds=0.5)
    old = await oidc.new_key("RS256")
    await expect(
        await add(client, await oidc.token(kid=old, preferred_username="crc_a", aud=AUDIENCE), "ROT-1"), 200
    )
    # The provider rotates: a key the service has never seen signs the next tokens.
    await asyncio.sleep(0.6)  # past the refetch rate limit
    for i, alg in enumerate(("ES256", "RS256")):
        kid = await oidc.new_key(alg)
        token = await oidc.token(kid=kid, preferred_username="crc_a", aud=AUDIENCE)
        assert jwt.get_unverified_header(token)["alg"] == alg
        await expect(await add(client, token, f"ROT-{2 + i}"), 200)
        await asyncio.sleep(0.6)


async def test_unknown_kids_refetch_the_keys_at_most_once_per_interval(
    make_client, world, oidc, start_oidc_provider
):
    await world.standard()
    client = await oidc_client(make_client, oidc, jwks_min_refresh_seconds=1.0)
    await expect(await add(client, await oidc.token(preferred_username="crc_a", aud=AUDIENCE), "RL-1"), 200)
    fetches = (await oidc.stats())["/jwks"]

    # A key the provider published after the service's fetch: the first token signed with it
    # refetches the set once, and it and the next ones are accepted.
    kid = await oidc.new_key("RS256")
    await asyncio.sleep(1.1)  # past the refetch rate limit
    for i in range(5):
        token = await oidc.token(kid=kid, preferred_username="crc_a", aud=AUDIENCE, jti=f"new-{i}")
        await expect(await add(client, token, f"RL-NEW-{i}"), 200)
    assert (await oidc.stats())["/jwks"] == fetches + 1
    fetches += 1

    # Keys the provider never published (another issuer's): a stream of such tokens refetches once
    # per interval, not once per token, and every one is refused.
    other = start_oidc_provider()
    await asyncio.sleep(1.1)
    for i in range(5):
        forged = await other.token(kid=await other.new_key("RS256"), preferred_username="crc_a", aud=AUDIENCE)
        await expect(await add(client, forged, f"RL-X-{i}"), 401)
    assert (await oidc.stats())["/jwks"] == fetches + 1


async def test_tokens_the_service_must_refuse(make_client, world, oidc, start_oidc_provider):
    await world.standard()
    client = await oidc_client(make_client, oidc)
    other = start_oidc_provider()  # another issuer, with keys of its own
    now = int(time.time())
    refused = {
        "another issuer": await other.token(preferred_username="crc_a", aud=AUDIENCE),
        "our keys, another iss claim": await oidc.token(preferred_username="crc_a", aud=AUDIENCE, iss=other.issuer),
        "wrong audience": await oidc.token(preferred_username="crc_a", aud="another-api"),
        "no audience": await oidc.token(preferred_username="crc_a"),
        "expired": await oidc.token(preferred_username="crc_a", aud=AUDIENCE, exp=now - 5),
        "HS256 signed with the provider's public key": await _alg_confusion_token(oidc, now),
        "HS256 with a guessed secret": jwt.encode(
            {"preferred_username": "crc_a", "aud": AUDIENCE, "iss": oidc.issuer, "exp": now + 60},
            "a guess at the secret, 32 bytes or more", algorithm="HS256",
        ),
    }  # fmt: skip
    for case, token in refused.items():
        resp = await add(client, token, "NEVER-1")
        assert resp.status == 401, f"{case}: {resp.status} {await resp.text()}"
        assert (await resp.json())["message"] == "errorCode.unauthenticated"
    assert await world.pool.fetchval("SELECT count(*) FROM participants") == 0


async def _alg_confusion_token(oidc, now: int) -> str:
    """The classic attack: HS256, with the provider's (public) RSA key as the HMAC secret."""
    async with aiohttp.ClientSession() as http, http.get(oidc.issuer + "/jwks") as resp:
        jwk = next(k for k in (await resp.json())["keys"] if k["kty"] == "RSA")
    from cryptography.hazmat.primitives import serialization

    public = jwt.PyJWK(jwk).key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def part(data: dict[str, object]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    head = part({"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]})
    body = part({"preferred_username": "crc_a", "aud": AUDIENCE, "iss": oidc.issuer, "exp": now + 60})
    sig = base64.urlsafe_b64encode(hmac.new(pem, head + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
    return (head + b"." + body + b"." + sig).decode()


async def test_an_unreachable_provider_is_503_not_401(make_client, world):
    await world.standard()
    with refused_port() as port:
        client = await make_client(jwt_secret=None, oidc_issuer=f"http://127.0.0.1:{port}/realms/gone")
        token = jwt.encode(
            {"preferred_username": "crc_a", "exp": int(time.time()) + 60}, _rsa_key(), algorithm="RS256"
        )
        resp = await add(client, token, "DOWN-1")
    assert (await expect(resp, 503))["message"] == "errorCode.serviceUnavailable"
    assert resp.headers["Retry-After"]


def _rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- The token endpoint forwarding to the provider (Keycloak's direct access grants) --------------


async def keycloak_like(oidc) -> None:
    await oidc.configure(users={"crc_a": "provider password"}, clientId="participants", clientSecret="client-secret",
                         audience=AUDIENCE)  # fmt: skip


async def test_password_grant_through_the_provider(make_client, world, oidc, caplog):
    await world.standard()
    await keycloak_like(oidc)
    client = await oidc_client(
        make_client, oidc, oidc_client_id="participants", oidc_client_secret="client-secret"
    )
    resp = await client.post(TOKEN_URL, json={"username": "crc_a", "password": "provider password"})
    token = await expect(resp, 200)
    assert resp.content_type == "text/plain"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == oidc.issuer and claims["azp"] == "participants"  # the provider's own token
    await expect(await add(client, token, "PG-1"), 200)

    wrong = await client.post(TOKEN_URL, json={"username": "crc_a", "password": "not it"})
    assert (await expect(wrong, 401))["message"] == "errorCode.invalidCredentials"
    assert "provider password" not in caplog.text and "not it" not in caplog.text


async def test_provider_refusing_our_client_or_down_is_503(make_client, world, oidc):
    await world.standard()
    await keycloak_like(oidc)
    misconfigured = await oidc_client(
        make_client, oidc, oidc_client_id="participants", oidc_client_secret="stale"
    )
    resp = await misconfigured.post(TOKEN_URL, json={"username": "crc_a", "password": "provider password"})
    assert (await expect(resp, 503))["message"] == "errorCode.serviceUnavailable"
    with refused_port() as port:
        down = await make_client(
            jwt_secret=None, oidc_issuer=f"http://127.0.0.1:{port}/x", oidc_client_id="p"
        )
        resp = await down.post(TOKEN_URL, json={"username": "crc_a", "password": "provider password"})
    await expect(resp, 503)
    assert resp.headers["Retry-After"]
    # Neither counted against the user: the right password still works on a good configuration.
    good = await oidc_client(
        make_client, oidc, oidc_client_id="participants", oidc_client_secret="client-secret"
    )
    for _ in range(5):
        await misconfigured.post(TOKEN_URL, json={"username": "crc_a", "password": "provider password"})
    await expect(await good.post(TOKEN_URL, json={"username": "crc_a", "password": "provider password"}), 200)


async def test_provider_failures_are_throttled_too(make_client, world, oidc):
    await world.standard()
    await keycloak_like(oidc)
    client = await oidc_client(
        make_client, oidc, oidc_client_id="participants", oidc_client_secret="client-secret"
    )
    for _ in range(5):
        await expect(await client.post(TOKEN_URL, json={"username": "crc_a", "password": "guess"}), 401)
    before = (await oidc.stats()).get("/token", 0)
    resp = await client.post(TOKEN_URL, json={"username": "crc_a", "password": "provider password"})
    await expect(resp, 429)
    assert (await oidc.stats()).get("/token", 0) == before  # refused before the provider is asked


async def test_a_provider_yes_for_a_user_disabled_here_is_a_wrong_password(make_client, world, oidc, pool):
    await world.standard()
    await keycloak_like(oidc)
    client = await oidc_client(
        make_client, oidc, oidc_client_id="participants", oidc_client_secret="client-secret"
    )
    async with pool.acquire() as conn:
        await conn.execute("UPDATE users SET disabled = true WHERE username = 'crc_a'")
    before = (await oidc.stats()).get("/token", 0)
    resp = await client.post(TOKEN_URL, json={"username": "crc_a", "password": "provider password"})
    assert (await expect(resp, 401))["message"] == "errorCode.invalidCredentials"
    assert (await oidc.stats()).get("/token", 0) == before + 1  # asked, as for any password
