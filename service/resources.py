"""Typed application keys and the cleanup contexts that open and close what they hold.

Every resource is made in startup and closed in cleanup (``app.cleanup_ctx``): cleanup runs if and
only if startup finished. Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
from aiohttp import web
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from .auth import JwksCache, TokenVerifier
from .db import create_pool as create_db_pool
from .settings import Settings
from .storage import Storage

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", ArqRedis)
HTTP = web.AppKey("http", aiohttp.ClientSession)
TOKEN_VERIFIER = web.AppKey("token_verifier", TokenVerifier)
STORAGE = web.AppKey("storage", Storage)


def redis_settings(settings: Settings) -> RedisSettings:
    assert settings.redis_url, "PARTICIPANTS_REDIS_URL must be resolved before the app starts"
    return RedisSettings.from_dsn(settings.redis_url)


async def db_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    assert s.database_url, "PARTICIPANTS_DATABASE_URL must be resolved before the app starts"
    app[DB] = await create_db_pool(s.database_url, s.db_pool_min, s.db_pool_max, s.db_timeout_seconds)
    yield
    await app[DB].close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = await create_pool(redis_settings(app[SETTINGS]), default_queue_name=app[SETTINGS].default_queue)
    yield
    await app[REDIS].aclose()


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    session = aiohttp.ClientSession()
    app[HTTP] = session
    jwks = JwksCache(s.jwks_url, session, s.jwks_cache_seconds) if s.jwks_url else None
    app[TOKEN_VERIFIER] = TokenVerifier(s, jwks)
    yield
    await session.close()


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    """Object storage for job files (obstore keeps no connections that need closing)."""
    app[STORAGE] = Storage.from_settings(app[SETTINGS])
    yield
