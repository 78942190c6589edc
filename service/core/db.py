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


# A migration that cannot apply yet because of the data (participants still holding plain personal
# fields, say) raises this SQLSTATE, its message saying why and its hint what to run: the runner
# then stops there without failing, and applies it on a later run once the condition holds.
WAITING_SQLSTATE = "PW001"

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS schema_migrations_waiting (
    name text PRIMARY KEY, reason text NOT NULL, since timestamptz NOT NULL DEFAULT now()
);
"""
RECORD_WAITING = """
INSERT INTO schema_migrations_waiting (name, reason) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET reason = EXCLUDED.reason
"""


def _upto(path: Path, up_to: str | None) -> bool:
    return up_to is None or path.name[: len(up_to)] <= up_to


async def migrate(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR, up_to: str | None = None) -> list[str]:
    """Apply every migration not yet applied (with ``up_to``, e.g. "0023", none after it); return
    the names applied now. A migration waiting on the data (``WAITING_SQLSTATE``) stops the run
    there: it and the ones after it stay pending, a warning says what to run."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(BOOTSTRAP)
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files(sql_dir):
            if path.name in done:
                continue
            if not _upto(path, up_to):
                break
            try:
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
                    await conn.execute("DELETE FROM schema_migrations_waiting WHERE name = $1", path.name)
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) != WAITING_SQLSTATE:
                    raise
                reason = f"{exc.args[0] if exc.args else exc}; {getattr(exc, 'hint', None) or ''}".strip("; ")
                await conn.execute(RECORD_WAITING, path.name, reason)
                log.warning("migration %s is waiting, nothing after it applied: %s", path.name, reason)
                break
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def waiting_migration(conn: asyncpg.Connection) -> tuple[str, str] | None:
    """The migration the runner last found waiting on the data (name, reason), if still unapplied."""
    if not await conn.fetchval("SELECT to_regclass('schema_migrations_waiting') IS NOT NULL"):
        return None
    row = await conn.fetchrow(
        "SELECT w.name, w.reason FROM schema_migrations_waiting w"
        " WHERE NOT EXISTS (SELECT 1 FROM schema_migrations m WHERE m.name = w.name) ORDER BY w.name LIMIT 1"
    )
    return (row["name"], row["reason"]) if row else None


async def pending_migrations(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Migrations a start would apply: the unapplied ones before any waiting on the data (that one
    is not a fault of this process, and readiness does not wait for it: docs/key-management.md)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = set()
    if exists:
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    waiting = await waiting_migration(conn)
    pending = [p.name for p in migration_files(sql_dir) if p.name not in done]
    if waiting is not None and waiting[0] in pending:
        pending = pending[: pending.index(waiting[0])]
    return pending


async def migrate_dsn(dsn: str, up_to: str | None = None) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, up_to=up_to)
    finally:
        await conn.close()


def dsn_with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at ``database``, keeping host, user and query (e.g. a socket directory)."""
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}" + (f"?{query}" if query else "")
