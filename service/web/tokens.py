"""Bearer tokens: minting (HS256, local accounts) and verifying them.

Two ways to verify a token, chosen by its ``alg`` header:
- HS256 with ``PARTICIPANTS_JWT_SECRET`` (local accounts through the token endpoint, ``participants
  token``), checked against ``JWT_ISSUER``/``JWT_AUDIENCE`` when set;
- RS256/ES256/... against an OIDC provider found by discovery from ``PARTICIPANTS_OIDC_ISSUER``
  (issuer and audience checked; see ``oidc.py`` for key caching and rotation), or against a bare
  ``PARTICIPANTS_JWKS_URL``. An HS256 token is never checked against a provider's key, and with no
  secret configured no HS256 token is accepted at all (algorithm confusion).
Anything else is 401 ``unauthenticated`` with ``params.reason`` ``expired`` (past its ``exp``) or
``invalid`` (``alg: none``, wrong key, wrong audience, too long a lifetime, malformed) and RFC 6750's
``WWW-Authenticate: Bearer error="invalid_token"``; a provider that cannot be reached before its keys
were ever fetched is 503.
A verified token gives an ``Identity``: the name and when the token was issued. Who the token names
is looked up once (web/auth.py, core/roles.py ``load_scope``), and that lookup refuses a token
issued before the user's credentials last changed (``revoked``).
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from aiohttp import web

from service.core.errors import ApiError
from service.core.roles import Identity, token_refused
from service.settings import Settings
from service.web.oidc import KeySet, OidcProvider, ProviderUnavailable

ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


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


VERIFIED_CACHE_SIZE = 10_000
VERIFIED_CACHE_SECONDS = 60.0


class TokenVerifier:
    """Verifies tokens and remembers the verified ones briefly (clients send the same token many
    times): a remembered token is still refused the moment its own ``exp`` passes."""

    def __init__(self, settings: Settings, jwks: KeySet | None, oidc: OidcProvider | None = None) -> None:
        self.settings = settings
        self.jwks = jwks
        self.oidc = oidc
        self._verified: dict[str, tuple[Identity, float, float]] = {}  # token -> (who, exp, remember until)

    async def username(self, token: str) -> Identity:
        """Who ``token`` names and when it was issued (401 ``unauthenticated`` when it is refused)."""
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None:
            who, exp, until = hit
            if now < exp + self.settings.jwt_leeway_seconds and time.monotonic() < until:
                return who
            del self._verified[token]
            if now >= exp + self.settings.jwt_leeway_seconds:
                raise token_refused("expired")
        who, exp = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (who, exp, time.monotonic() + VERIFIED_CACHE_SECONDS)
        return who

    async def _verify(self, token: str) -> tuple[Identity, float]:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise token_refused("invalid") from None
        alg = header.get("alg")
        kid = header.get("kid")
        issuer, audience = s.jwt_issuer, s.jwt_audience
        if alg == "HS256" and s.jwt_secret:
            key: Any = s.jwt_secret
        elif alg in ASYMMETRIC_ALGORITHMS and (self.oidc is not None or self.jwks is not None):
            if self.oidc is not None:
                keys, issuer, audience = self.oidc.keys, s.oidc_issuer, s.oidc_expected_audience
            else:
                keys = self.jwks  # type: ignore[assignment]
            try:
                jwk = await keys.key(kid if isinstance(kid, str) else None)
            except ProviderUnavailable:
                raise ApiError("serviceUnavailable", headers={"Retry-After": "5"}) from None
            # The key decides the algorithm, not the token: an RSA key never checks an ES256 token.
            if jwk is None or jwk.algorithm_name != alg:
                raise token_refused("invalid")
            key = jwk.key
        else:
            raise token_refused("invalid")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["exp"], "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise token_refused("expired") from None
        except jwt.PyJWTError:
            raise token_refused("invalid") from None
        name = claims.get(s.jwt_username_claim) or claims.get("sub")
        if not isinstance(name, str) or not name or len(name) > 255:
            raise token_refused("invalid")
        try:
            exp = float(claims["exp"])  # PyJWT checked it is a number; not that it fits a float
            iat = _iat(claims)
        except (OverflowError, ValueError, TypeError):
            raise token_refused("invalid") from None
        now = time.time()
        if exp - (now if iat is None else min(iat, now)) > s.jwt_max_lifetime_seconds:
            raise token_refused("invalid")  # a token for years: a leaked one would never end
        # Without an iat the token is taken as issued as early as it can have been (its exp minus the
        # longest lifetime accepted): a change of the user's credentials since then refuses it.
        issued_at = exp - s.jwt_max_lifetime_seconds if iat is None else min(iat, now)
        return Identity(name, issued_at), exp


def _iat(claims: dict[str, Any]) -> float | None:
    """The token's ``iat`` when it has a usable one. Never trusted beyond now (the callers cap it):
    a forged future ``iat`` must not make a long-lived token look short, or outlive a revocation."""
    iat = claims.get("iat")
    return float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None


TOKEN_VERIFIER = web.AppKey("token_verifier", TokenVerifier)
