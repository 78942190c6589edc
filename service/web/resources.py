"""Typed application keys and the cleanup contexts that open and close what they hold.

Every resource is made in startup and closed in cleanup (``app.cleanup_ctx``): cleanup runs if and
only if startup finished. Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
from aiohttp import web
from arq.connections import ArqRedis

from service.core import db
from service.core.connections import Connections
from service.core.links import Links
from service.core.protection.loading import load_keyring, refreshing
from service.core.redis import connect_redis
from service.core.storage import Storage
from service.core.throttle import LoginThrottle
from service.settings import Settings
from service.web.clients import Proxies
from service.web.oidc import KeySet, OidcProvider
from service.web.tokens import TOKEN_VERIFIER, TokenVerifier

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", ArqRedis)
STORAGE = web.AppKey("storage", Storage)
OIDC = web.AppKey("oidc", OidcProvider)  # present only when PARTICIPANTS_OIDC_ISSUER is set
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
TRUSTED_PROXIES = web.AppKey(
    "trusted_proxies", Proxies
)  # PARTICIPANTS_TRUSTED_PROXIES, parsed (web/clients.py)
LINKS = web.AppKey("links", Links)  # connections opened to Postgres and Redis, failovers seen
# The four above as the one value core's use-cases take (made last, from the others).
CONNECTIONS = web.AppKey("connections", Connections)


async def db_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    assert s.database_url, "PARTICIPANTS_DATABASE_URL must be resolved before the app starts"
    keyring = await load_keyring(s)  # personal fields are encrypted: no keys, no start
    app[DB] = await db.create_pool(
        s.database_url, s.db_pool_min, s.db_pool_max, s.db_timeout_seconds, s.db_acquire_timeout_seconds,
        link=app[LINKS].postgres, keyring=keyring,
    )  # fmt: skip
    async with refreshing(app[DB], keyring, s.key_refresh_seconds):
        yield
    await app[DB].close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    app[REDIS] = await connect_redis(s, default_queue_name=s.default_queue, link=app[LINKS].redis)
    app[LOGIN_THROTTLE] = LoginThrottle(
        app[REDIS], s.login_max_failures, s.login_window_seconds,
        address_max_failures=s.login_max_failures_per_address,
    )  # fmt: skip
    yield
    await app[REDIS].aclose()


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    session = aiohttp.ClientSession()  # for the identity provider: discovery, keys, password grant
    oidc = None
    if s.oidc_issuer:
        oidc = app[OIDC] = OidcProvider(
            s.oidc_issuer, session, s.jwks_cache_seconds, s.jwks_min_refresh_seconds
        )
    jwks = (
        KeySet.static(s.jwks_url, session, s.jwks_cache_seconds, s.jwks_min_refresh_seconds)
        if s.jwks_url
        else None
    )
    app[TOKEN_VERIFIER] = TokenVerifier(s, jwks, oidc)
    yield
    await session.close()


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    """Object storage for job files (obstore keeps no connections that need closing)."""
    app[STORAGE] = Storage.from_settings(app[SETTINGS])
    app[CONNECTIONS] = Connections(app[DB], app[REDIS], app[STORAGE], app[SETTINGS])
    yield
