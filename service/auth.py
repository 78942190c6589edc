"""Bearer tokens: who is calling.

Two ways to verify a token, chosen by its ``alg`` header:
- HS256 with ``PARTICIPANTS_JWT_SECRET`` (dev and small deployments; ``participants token`` mints one);
- RS256/ES256 against an OIDC provider's JWKS (``PARTICIPANTS_JWKS_URL``), with issuer and audience
  checks and the key set cached (refetched when an unknown ``kid`` shows up, at most every 30 s).
Anything else (``alg: none``, wrong key, expired, wrong audience) is 401 ``unauthenticated``.
What the caller may do is decided elsewhere (``roles.py``); this module only names the caller.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from .errors import ApiError
from .settings import Settings

ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
JWKS_MIN_REFRESH_SECONDS = 30.0


def mint_token(settings: Settings, username: str, ttl_seconds: int = 3600) -> str:
    """An HS256 token for ``username`` signed with the configured secret (dev, bootstrap, tests)."""
    if not settings.jwt_secret:
        raise RuntimeError("PARTICIPANTS_JWT_SECRET is not set: this deployment cannot mint tokens")
    now = int(time.time())
    claims: dict[str, Any] = {
        settings.jwt_username_claim: username,
        "sub": username,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


class JwksCache:
    """The identity provider's signing keys, fetched over HTTP and kept for a while."""

    def __init__(self, url: str, session: aiohttp.ClientSession, max_age: float) -> None:
        self.url = url
        self.session = session
        self.max_age = max_age
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        now = time.monotonic()
        if now - self._fetched_at > self.max_age or (
            kid not in self._keys and now - self._fetched_at > JWKS_MIN_REFRESH_SECONDS
        ):
            await self._refresh()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid or "")

    async def _refresh(self) -> None:
        async with self._lock:
            try:
                async with self.session.get(self.url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    resp.raise_for_status()
                    data = await resp.json(content_type=None)
                keyset = jwt.PyJWKSet.from_dict(data)
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError):
                # Keep the keys we had; a token signed by an unknown key stays unauthenticated.
                self._fetched_at = time.monotonic()
                return
            self._keys = {k.key_id or "": k for k in keyset.keys}
            self._fetched_at = time.monotonic()


VERIFIED_CACHE_SIZE = 10_000
VERIFIED_CACHE_SECONDS = 60.0


class TokenVerifier:
    """Verifies tokens and remembers the verified ones briefly (clients send the same token many
    times): a remembered token is still refused the moment its own ``exp`` passes."""

    def __init__(self, settings: Settings, jwks: JwksCache | None) -> None:
        self.settings = settings
        self.jwks = jwks
        self._verified: dict[str, tuple[str, float, float]] = {}  # token -> (username, exp, remember until)

    async def username(self, token: str) -> str:
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None:
            name, exp, until = hit
            if now < exp + self.settings.jwt_leeway_seconds and time.monotonic() < until:
                return name
            del self._verified[token]
        name, exp = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (name, exp, time.monotonic() + VERIFIED_CACHE_SECONDS)
        return name

    async def _verify(self, token: str) -> tuple[str, float]:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise ApiError("unauthenticated") from None
        alg = header.get("alg")
        if alg == "HS256" and s.jwt_secret:
            key: Any = s.jwt_secret
        elif alg in ASYMMETRIC_ALGORITHMS and self.jwks is not None:
            jwk = await self.jwks.key(header.get("kid"))
            if jwk is None:
                raise ApiError("unauthenticated")
            key = jwk.key
        else:
            raise ApiError("unauthenticated")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["exp"], "verify_aud": s.jwt_audience is not None},
            )
        except jwt.PyJWTError:
            raise ApiError("unauthenticated") from None
        name = claims.get(s.jwt_username_claim) or claims.get("sub")
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ApiError("unauthenticated")
        return name, float(claims["exp"])


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>``; the scheme is case-insensitive (seeds write ``bearer``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 16384:
        raise ApiError("unauthenticated")
    return token


async def authenticated_username(request: web.Request) -> str:
    from .resources import TOKEN_VERIFIER

    return await request.app[TOKEN_VERIFIER].username(bearer_token(request))
