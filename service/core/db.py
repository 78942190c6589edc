"""Postgres: the connection pool and the forward-only migrations in ``sql/``.

Migrations are numbered files (``0001_init.sql``, ``0002_...sql``) applied in order, each in its
own transaction, under a Postgres advisory lock so that several processes starting at once
apply each file exactly once. Applied names are recorded in ``schema_migrations``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from service.core.links import Link, address
from service.core.protection.keyring import Keyring

log = logging.getLogger("participants.db")

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MIGRATION_LOCK_ID = 0x5041525449  # "PARTI": any constant shared by every process of the service


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


class KeyedConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that carries the process's keyring (core/protection): the core functions that
    encrypt or decrypt personal fields find the keys on the connection they were handed."""

    keyring: Keyring | None = None


async def connect(dsn: str, keyring: Keyring | None = None) -> asyncpg.Connection:
    """One connection outside any pool (the CLI's), with the pool's codecs and, when given, the
    keyring: the same core functions (an audit row's JSON details, say) run on it unchanged."""
    conn = await asyncpg.connect(dsn, connection_class=KeyedConnection)
    await _init_connection(conn)
    conn.keyring = keyring
    return conn


class PooledConnection(KeyedConnection):
    """A pooled connection released without asyncpg's reset query.

    The reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) costs a round trip on
    every release, half of a simple request's round trips. Pooled connections never take session
    advisory locks, LISTEN, SET or keep cursors open (migrations use their own connection), so
    there is nothing to reset; an open transaction is still rolled back by the pool itself.
    """

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    dsn: str,
    min_size: int = 2,
    max_size: int = 20,
    timeout: float = 5.0,  # noqa: ASYNC109 - asyncpg's connect timeout, handed on
    acquire_timeout: float | None = None,
    link: Link | None = None,
    keyring: Keyring | None = None,
) -> asyncpg.Pool:
    """A pool of ``PooledConnection``s. With ``acquire_timeout``, every ``acquire()`` (and the pool's
    own ``fetch``/``execute`` helpers) gives up after that long with ``TimeoutError``: an exhausted
    pool becomes a fast 503, never a request that hangs.

    ``dsn`` may name several hosts with ``target_session_attrs=read-write``: each new connection
    goes to whichever of them is the primary then, so after a failover the pool's new connections
    find the promoted standby by themselves. ``link`` counts them and notices the change of host.
    ``keyring``: the process's keys, carried by every connection (core/protection/fields.keys)."""

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        conn.keyring = keyring
        if link is not None:
            link.opened(server_address(conn))

    pool = await asyncpg.create_pool(
        dsn,
        connection_class=PooledConnection,
        min_size=min_size,
        max_size=max_size,
        init=init,
        timeout=timeout,
        command_timeout=None,
    )
    assert pool is not None
    if acquire_timeout is not None:
        # asyncpg has no pool-wide default and builds its Pool itself: give this one a class whose
        # acquire() defaults the timeout (same slots, so the class can be swapped). The pool's own
        # fetch/execute helpers call self.acquire(), so they wait no longer either.
        pool.__class__ = _timed_pool_class(acquire_timeout)
    return pool


@functools.cache
def _timed_pool_class(default_timeout: float) -> type[asyncpg.Pool]:
    """A Pool subclass adding no slots (so an instance's class can be swapped to it) whose
    ``acquire`` waits at most ``default_timeout`` unless told otherwise."""

    def acquire(self: asyncpg.Pool, *, timeout: float | None = None) -> Any:
        if timeout is None:
            # An idle connection is handed over without waiting: no timer is needed, and asyncpg's
            # timer is a task of its own (asyncio.wait_for) on every request.
            idle = getattr(self, "_queue", None)
            timeout = None if idle is not None and not idle.empty() else default_timeout
        return asyncpg.Pool.acquire(self, timeout=timeout)

    return type("TimedPool", (asyncpg.Pool,), {"__slots__": (), "acquire": acquire})


def server_address(conn: asyncpg.Connection) -> str:
    """The server ``conn`` reached, as the DSN named it (``host:port``, or a socket's path)."""
    addr = getattr(conn, "_addr", None)  # asyncpg keeps the address it connected to, privately
    if isinstance(addr, tuple) and len(addr) >= 2:
        return address(addr[0], addr[1])
    return str(addr) if addr else "unknown"


async def is_standby(conn: asyncpg.Connection) -> bool:
    """The server ``conn`` reached is in recovery (a standby: read-only)."""
    return bool(await conn.fetchval("SELECT pg_is_in_recovery()"))


async def forget_read_only(pool: asyncpg.Pool, exc: BaseException) -> None:
    """After a write refused as read-only (the server our connections reach was demoted, or is a
    standby the DSN let through), every open connection of ``pool`` is closed on release and its
    next ``acquire`` connects afresh, to whichever host is the primary now."""
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        log.warning("a write was refused as read-only: the pool reconnects")
        await pool.expire_connections()


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted(p for p in sql_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))


async def migrate(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply every migration not yet applied; return the names applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files(sql_dir):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def pending_migrations(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = set()
    if exists:
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    return [p.name for p in migration_files(sql_dir) if p.name not in done]


async def migrate_dsn(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def dsn_with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at ``database``, keeping host, user and query (e.g. a socket directory)."""
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}" + (f"?{query}" if query else "")
