"""A database from before encryption (migrated up to 0023, rows holding plain personal fields):
migration 0026 waits and the service serves meanwhile; ``participants encrypt-existing`` runs while
a real API keeps adding and reading participants, then 0026 applies and the plain columns are gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from service.core.db import migrate, pending_migrations, waiting_migration
from service.core.protection.fields import PERSONAL, keys, opened_rows
from service.core.protection.migration import has_plain_columns
from service.settings import Settings
from tests.keyed_db import Traffic, fresh_database, keyed_pool, seed_row, serving, start_cli, wait_process
from tests.world import SITE_A, World

PLAIN = 3000
DROP = "0026_drop_plain_contact.sql"

INSERT_PLAIN = """
INSERT INTO participants (study_id, site_id, subject_key, oid, first_name, last_name, email, phone, identifier,
                          access_code, participate_status)
SELECT $1, $2, 'SEED-' || g, 'SS_SEED_' || g, 'Zoë SEED-' || g, 'O''Brien SEED-' || g, 'seed-' || g || '@example.org',
       '+1 5550101', 'MRN-SEED-' || g, CASE WHEN g % 10 = 0 THEN 'PLAINCODE' || g END,
       CASE WHEN g % 10 = 0 THEN 'CREATED' ELSE '' END
FROM generate_series(0, $3 - 1) g
"""


@pytest.fixture
async def before_encryption(base_settings: Settings, server_dsn: str) -> AsyncIterator[Settings]:
    async with fresh_database(server_dsn, up_to="0023") as dsn:
        yield base_settings.model_copy(update={"database_url": dsn, "key_refresh_seconds": 0.5})


async def test_encrypt_existing_while_requests_are_served(before_encryption: Settings, tmp_path) -> None:
    settings = before_encryption
    async with keyed_pool(settings) as pool:
        world = World(pool, settings)
        await world.standard()
        site = await pool.fetchrow("SELECT id, study_id FROM sites WHERE oid = $1", SITE_A)
        await pool.execute(INSERT_PLAIN, site["study_id"], site["id"], PLAIN)

        # The runner leaves 0026 waiting: nothing pending for readiness, the reason recorded.
        async with pool.acquire() as conn:
            assert DROP not in await migrate(conn)  # the ones before it apply
            assert await pending_migrations(conn) == []
            waiting = await waiting_migration(conn)
        assert waiting is not None and waiting[0] == DROP and "participants encrypt-existing" in waiting[1]

        log = tmp_path / "serve.log"
        with serving(settings, log) as base:
            async with aiohttp.ClientSession(base) as http, http.get("/readyz") as ready:
                assert ready.status == 200, await ready.text()
            assert "participants encrypt-existing" in log.read_text()
            traffic = Traffic(base, world, [f"SEED-{i}" for i in range(0, PLAIN, 41)])
            running = asyncio.create_task(traffic.run())
            await asyncio.sleep(1.0)
            code, out, err = await wait_process(
                start_cli(settings, "encrypt-existing", "--batch-size", "400")
            )
            await asyncio.sleep(1.5)  # and after the drop
            traffic.stop()
            await running
        assert code == 0, err
        assert f"{PLAIN} rows hold plain personal fields" in out and f"encrypted {PLAIN}/{PLAIN} rows" in out
        assert f"applied: {DROP}" in out
        assert traffic.requests > 50 and traffic.failures == []

        async with pool.acquire() as conn:
            assert not await has_plain_columns(conn)
            assert await waiting_migration(conn) is None and await pending_migrations(conn) == []
            rows = await conn.fetch("SELECT * FROM participants ORDER BY id")
            values = await opened_rows(conn, rows)
            assert keys(conn).active_field_key
        assert len(rows) > PLAIN
        for row, personal in zip(rows, values, strict=True):
            key = row["subject_key"]
            want = seed_row(key)
            assert {c: personal[c] for c in want if c != "subject_key"} == {
                c: want[c] for c in want if c != "subject_key"
            }
            if key.startswith("SEED-"):
                n = int(key.removeprefix("SEED-"))
                assert personal["access_code"] == (f"PLAINCODE{n}" if n % 10 == 0 else None)
                assert row["first_name_bidx"] is not None
            assert all(c not in row for c in PERSONAL)

        # Run again: nothing to do, nothing fails.
        code, out, err = await wait_process(start_cli(settings, "encrypt-existing"))
        assert code == 0 and "nothing to encrypt" in out, err


async def test_a_fresh_database_applies_the_drop_at_once(server_dsn: str) -> None:
    async with fresh_database(server_dsn) as dsn:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            applied = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            assert {"0023_encrypted_contact.sql", DROP} <= applied
            assert await waiting_migration(conn) is None
        finally:
            await conn.close()


async def test_a_request_after_a_schema_change_is_answered(make_client, world, pool) -> None:
    """A column change while serving (0026's drop) outdates the statements prepared before it; the
    first used inside a transaction fails it, and the request runs again rather than failing."""
    from tests.world import expect

    client = await make_client(db_pool_min=1, db_pool_max=1)  # one connection: it prepared them all
    await world.standard()
    url = f"/pages/auth/api/clinicaldata/studies/S_JUNO(PROD)/sites/{SITE_A}/participants"
    await expect(await client.post(url, json={"subjectKey": "P-1"}, headers=world.auth("crc_a")), 200)
    await expect(await client.delete(url + "/P-1", headers=world.auth("crc_a")), 200)
    await pool.execute("ALTER TABLE participants ADD COLUMN schema_change_probe text")
    try:
        restored = await expect(await client.post(url + "/P-1/restore", headers=world.auth("crc_a")), 200)
        assert restored["status"] == "Available"
    finally:
        await pool.execute("ALTER TABLE participants DROP COLUMN schema_change_probe")
