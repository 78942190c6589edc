"""Migrations: applied once, in order, even when several processes start together."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from service.core import accounts
from service.core.db import SQL_DIR, dsn_with_database, migrate, migration_files, pending_migrations
from service.core.roles import issued_before_epoch


async def test_concurrent_migrations_apply_each_file_once(server_dsn):
    name = f"participants_migrations_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = dsn_with_database(server_dsn, name)
        conns = [await asyncpg.connect(dsn) for _ in range(4)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(n for r in results for n in r)
        assert applied == [p.name for p in migration_files()]
        assert await pending_migrations(conns[0]) == []
        assert await migrate(conns[0]) == []
        for c in conns:
            await c.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_credentials_epoch_applies_on_an_existing_database(server_dsn, tmp_path):
    """0016 on a database that has users already: they keep their tokens and sessions (the epoch
    is the Unix epoch until their first change), and a change moves it to now."""
    name = f"participants_migrations_epoch_{uuid.uuid4().hex[:12]}"
    older = tmp_path / "sql"
    older.mkdir()
    for path in migration_files():
        if path.name < "0016":
            (older / path.name).write_text(path.read_text())
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(dsn_with_database(server_dsn, name))
        try:
            await migrate(conn, older)
            await conn.execute("INSERT INTO users (username, full_name) VALUES ('old_timer', 'Old Timer')")
            applied = await migrate(conn, SQL_DIR)  # 0016, then any later file
            assert applied[0] == "0016_credentials_epoch.sql" and all(a > "0016" for a in applied)
            user = await accounts.active_user(conn, "old_timer")
            assert user is not None and user.credentials_changed_at == 0.0
            assert not issued_before_epoch(1.0, user.credentials_changed_at)  # any token still works
            assert not user.session_outdated(1.0)
            await accounts.revoke_sessions(conn, "old_timer")
            user = await accounts.active_user(conn, "old_timer")
            assert user is not None and abs(user.credentials_changed_at - time.time()) < 60
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
