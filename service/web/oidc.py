"""An OpenID Connect provider as this service uses it: discovery, signing keys, password grant.

``PARTICIPANTS_OIDC_ISSUER`` alone is enough: ``{issuer}/.well-known/openid-configuration`` names
the JWKS and the token endpoint. The document's ``issuer`` must be the configured one exactly
(OpenID Connect Discovery 1.0, section 4.3), else nothing from it is trusted.

Keys are cached for ``jwks_cache_seconds``; a token naming an unknown ``kid`` (the provider rotated
its keys) refetches the set, at most once per ``jwks_min_refresh_seconds``, so a stream of forged
``kid``s cannot turn every request into a call to the provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt

log = logging.getLogger("participants.oidc")

FETCH_TIMEOUT = aiohttp.ClientTimeout(total=5)


class ProviderUnavailable(Exception):
    """The provider did not answer, or answered something unusable (a 503 for our callers)."""


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False) as resp:
            if resp.status != 200:
                raise ProviderUnavailable(f"{url} answered {resp.status}")
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ProviderUnavailable(f"{url}: {type(exc).__name__}") from None


class KeySet:
    """Signing keys fetched from a JWKS URL (given, or resolved by ``url()``) and kept for a while."""

    def __init__(
        self,
        url: Callable[[], Awaitable[str]],
        session: aiohttp.ClientSession,
        max_age: float,
        min_refresh: float,
    ) -> None:
        self._url = url
        self.session = session
        self.max_age = max_age
        self.min_refresh = min_refresh
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def static(cls, url: str, session: aiohttp.ClientSession, max_age: float, min_refresh: float) -> KeySet:
        async def fixed() -> str:
            return url

        return cls(fixed, session, max_age, min_refresh)

    def _due(self, kid: str | None) -> bool:
        if self._fetched_at is None:
            return True
        age = time.monotonic() - self._fetched_at
        return age > self.max_age or (kid not in self._keys and age >= self.min_refresh)

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key named ``kid`` (or the only key when the token names none), None if unknown.

        Raises ``ProviderUnavailable`` only when no key set could ever be fetched."""
        if self._due(kid):
            async with self._lock:
                if self._due(kid):  # another request may have refreshed while we waited
                    await self._refresh()
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        try:
            data = await _get_json(self.session, await self._url())
            keyset = jwt.PyJWKSet.from_dict(data)
        except (ProviderUnavailable, jwt.PyJWKSetError) as exc:
            log.warning("signing keys not refreshed: %s", exc)
            if self._fetched_at is None:
                raise ProviderUnavailable(str(exc)) from None
            # Keep the keys we had; try again no sooner than min_refresh.
            self._fetched_at = time.monotonic() - self.max_age + self.min_refresh
            return
        self._keys = {k.key_id or "": k for k in keyset.keys}
        self._fetched_at = time.monotonic()


class OidcProvider:
    """One issuer: its discovery document (fetched once, lazily), keys and token endpoint."""

    def __init__(
        self, issuer: str, session: aiohttp.ClientSession, max_age: float, min_refresh: float
    ) -> None:
        self.issuer = issuer
        self.session = session
        self._metadata: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self.keys = KeySet(self._jwks_uri, session, max_age, min_refresh)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            async with self._lock:
                if self._metadata is None:
                    url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                    data = await _get_json(self.session, url)
                    if not isinstance(data, dict) or data.get("issuer") != self.issuer:
                        raise ProviderUnavailable("the discovery document names another issuer")
                    for field in ("jwks_uri", "token_endpoint"):
                        if not isinstance(data.get(field), str):
                            raise ProviderUnavailable(f"the discovery document has no {field}")
                    self._metadata = data
        return self._metadata

    async def _jwks_uri(self) -> str:
        return (await self.metadata())["jwks_uri"]

    async def password_grant(
        self, username: str, password: str, client_id: str, client_secret: str | None
    ) -> str | None:
        """The provider's access token for these credentials; None when it refuses the user's
        credentials. Raises ``ProviderUnavailable`` when it is down or refuses our client."""
        endpoint = (await self.metadata())["token_endpoint"]
        form = {"grant_type": "password", "username": username, "password": password, "client_id": client_id}
        if client_secret:
            form["client_secret"] = client_secret
        try:
            post = self.session.post(endpoint, data=form, timeout=FETCH_TIMEOUT, allow_redirects=False)
            async with post as resp:
                body = await resp.json(content_type=None) if resp.content_length != 0 else {}
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"token endpoint: {type(exc).__name__}") from None
        error = body.get("error") if isinstance(body, dict) else None
        if status == 200 and isinstance(body, dict) and isinstance(body.get("access_token"), str):
            return body["access_token"]
        if status in (400, 401) and error == "invalid_grant":
            return None  # RFC 6749 5.2: the resource owner's credentials are wrong (or the user is disabled)
        # invalid_client, unauthorized_client, unsupported_grant_type...: our configuration, not the user.
        log.error("the identity provider refused the password grant: status %s, error %s", status, error)
        raise ProviderUnavailable(f"token endpoint answered {status} {error}")
