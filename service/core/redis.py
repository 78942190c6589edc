"""Redis, which carries job messages (arq) and nothing that must survive it: Postgres holds the
truth about every job, and the sweeper re-enqueues what Redis lost.

One way to reach it, for the API (sessions, sign-in throttle, submits), the workers and the CLI:
``connect_redis``. Either the server named by ``PARTICIPANTS_REDIS_URL``, or, with
``PARTICIPANTS_REDIS_SENTINELS``, whichever server the sentinels name master: each new connection
asks them, and a connection still open to a master that was demoted is dropped on its first
read-only error (redis-py's Sentinel client), so writes never go to a replica. Every call has a
connect and a read timeout: a Redis that stops answering is an error (503) within them, never a
request that hangs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import redis.exceptions
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.typing import EncodableT

from service.core.links import Link, address
from service.settings import Settings


def sentinel_hosts(settings: Settings) -> list[tuple[str, int]]:
    hosts = []
    for entry in settings.redis_sentinels:
        host, _, port = entry.rpartition(":")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's description of the connection (database, credentials; the sentinels when set)."""
    if settings.redis_sentinels:
        base = RedisSettings.from_dsn(settings.redis_url) if settings.redis_url else RedisSettings()
        base.host = sentinel_hosts(settings)
        base.sentinel = True
        base.sentinel_master = settings.redis_sentinel_master
        return base
    assert settings.redis_url, "PARTICIPANTS_REDIS_URL must be resolved before the app starts"
    return RedisSettings.from_dsn(settings.redis_url)


async def connect_redis(
    settings: Settings, *, default_queue_name: str | None = None, link: Link | None = None
) -> ArqRedis:
    """A client (arq's, so it also enqueues) with the timeouts and retries of ``settings``; answers
    a PING before it is returned. ``link`` counts its connections and notices a new master."""
    rs = redis_settings(settings)

    async def on_connect(conn: Connection) -> None:
        await conn.on_connect()
        if link is not None:
            link.opened(address(conn.host, conn.port))

    options: dict[str, Any] = {
        "db": rs.database,
        "username": rs.username,
        "password": rs.password,
        "ssl": rs.ssl,
        "socket_connect_timeout": settings.redis_connect_timeout_seconds,
        "socket_timeout": settings.redis_timeout_seconds,
        # A refused or dropped connection (a master that died, Sentinel still naming it) is tried
        # again a few times. A timeout is not: the caller has waited its bound once already.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.1), settings.redis_retries),
        "retry_on_error": [redis.exceptions.ConnectionError],
        "redis_connect_func": on_connect,
    }
    if rs.sentinel:
        sentinel = Sentinel(rs.host, **options)  # type: ignore[no-untyped-call]  # sentinels get the timeouts too
        client = cast(ArqRedis, sentinel.master_for(rs.sentinel_master, redis_class=ArqRedis))
    else:
        client = ArqRedis(host=rs.host, port=rs.port, unix_socket_path=rs.unix_socket_path, **options)
    if default_queue_name is not None:
        client.default_queue_name = default_queue_name
    try:
        await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


# Redis failing under a call: unreachable, timed out, or a demoted master refusing writes.
OUTAGE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError)


async def forget_connections(client: Redis, exc: BaseException) -> None:
    """After ``exc`` (a Redis outage), close every connection of ``client``'s pool, idle ones
    included: the next call connects afresh (through Sentinel, to whichever server is master then),
    so a master that stopped answering and wakes up after being replaced never gets a write
    through a connection left idle in the pool."""
    if isinstance(exc, OUTAGE):
        with contextlib.suppress(Exception):
            await client.connection_pool.disconnect()


async def eval_script(client: Redis, script: str, keys: Sequence[str], *args: EncodableT) -> Any:
    """``EVAL script`` over ``keys`` with ``args``: the script's reply.

    redis-py types every key and argument of ``eval`` as ``str`` and its reply as ``str`` (or an
    awaitable of it), whatever the script takes and returns; the client sends ints and bytes as it
    does for any command, and the asyncio client's reply is always awaited."""
    reply = client.eval(script, len(keys), *keys, *args)  # type: ignore[arg-type]
    return await cast("Awaitable[Any]", reply)
