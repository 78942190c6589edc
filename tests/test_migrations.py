"""Migrations: applied once, in order, even when several processes start together."""

from __future__ import annotations

import asyncio

import asyncpg

from service.core.db import dsn_with_database, migrate, migration_files, pending_migrations


async def test_concurrent_migrations_apply_each_file_once(server_dsn):
    name = "participants_migrations_test"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
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
