"""The OIDC provider the tests run (oauth2-mock-server) behaves like the Keycloak realm we rely on."""

from __future__ import annotations

import aiohttp
import jwt


async def test_discovery_jwks_and_password_grant(oidc):
    await oidc.configure(
        users={"crc_a": "right password"},
        clientId="participants",
        clientSecret="s3cret",
        audience="participants-api",
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(oidc.issuer + "/.well-known/openid-configuration") as resp:
            meta = await resp.json()
        assert meta["issuer"] == oidc.issuer and meta["jwks_uri"].startswith(oidc.issuer)
        assert "password" in meta["grant_types_supported"]
        async with http.get(meta["jwks_uri"]) as resp:
            keys = (await resp.json())["keys"]
        assert keys and all("d" not in k for k in keys)  # public keys only
        form = {
            "grant_type": "password",
            "username": "crc_a",
            "password": "right password",
            "client_id": "participants",
            "client_secret": "s3cret",
        }
        async with http.post(meta["token_endpoint"], data=form) as resp:
            assert resp.status == 200
            token = (await resp.json())["access_token"]
        async with http.post(meta["token_endpoint"], data={**form, "password": "wrong"}) as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "invalid_grant"
        async with http.post(meta["token_endpoint"], data={**form, "client_secret": "wrong"}) as resp:
            assert resp.status == 401
    key = jwt.PyJWKSet.from_dict({"keys": keys})[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="participants-api", issuer=oidc.issuer)
    assert claims["preferred_username"] == "crc_a" and claims["azp"] == "participants"


async def test_authorization_code_with_pkce(oidc):
    """What a browser sign-in does: /authorize redirects with a code, the code and verifier buy tokens."""
    import base64
    import hashlib
    import secrets
    from urllib.parse import parse_qs, urlsplit

    await oidc.configure(codeUser="dm", clientId="console", audience="participants-api")
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    async with aiohttp.ClientSession() as http:
        async with http.get(oidc.issuer + "/.well-known/openid-configuration") as resp:
            meta = await resp.json()
        query = {
            "response_type": "code",
            "client_id": "console",
            "redirect_uri": "http://127.0.0.1:1/cb",
            "scope": "openid",
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        async with http.get(meta["authorization_endpoint"], params=query, allow_redirects=False) as resp:
            assert resp.status == 302
            back = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert back["state"] == ["s1"]
        form = {
            "grant_type": "authorization_code",
            "code": back["code"][0],
            "code_verifier": verifier,
            "client_id": "console",
            "redirect_uri": "http://127.0.0.1:1/cb",
        }
        async with http.post(meta["token_endpoint"], data={**form, "code_verifier": "x" * 43}) as resp:
            assert resp.status >= 400  # a wrong verifier is refused (and the code is spent)
        async with http.get(meta["authorization_endpoint"], params=query, allow_redirects=False) as resp:
            code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
        async with http.post(meta["token_endpoint"], data={**form, "code": code}) as resp:
            assert resp.status == 200, await resp.text()
            tokens = await resp.json()
    for name in ("access_token", "id_token"):
        claims = jwt.decode(tokens[name], options={"verify_signature": False})
        assert claims["preferred_username"] == "dm" and claims["iss"] == oidc.issuer
