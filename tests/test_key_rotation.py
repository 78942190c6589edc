"""Key rotations against real processes: ``participants rotate-data-key`` while a served API keeps
adding and reading participants (no request fails, every row opens after, the old key is gone),
a rotation killed midway and run again, and ``rotate-kek`` with the refusal of the old KEK."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from service.core.protection.fields import CONTACT, PERSONAL, keys, opened_rows
from service.core.protection.kek import LocalKek
from service.core.protection.keyring import Keyring
from service.dev.synthetic import add_participants
from service.settings import Settings
from tests.keyed_db import (
    Traffic,
    fresh_database,
    keyed_pool,
    new_kek_env,
    run_cli,
    seed_row,
    serving,
    start_cli,
    wait_process,
)
from tests.world import SITE_A, World

SEEDED = 3000


@pytest.fixture
async def keyed(base_settings: Settings, server_dsn: str) -> AsyncIterator[Settings]:
    """Settings on a database of the test's own, its keys re-read every half second."""
    async with fresh_database(server_dsn) as dsn:
        yield base_settings.model_copy(update={"database_url": dsn, "key_refresh_seconds": 0.5})


async def seed(pool, settings: Settings, count: int = SEEDED) -> World:
    world = World(pool, settings)
    await world.standard()
    site = await pool.fetchrow("SELECT id, study_id FROM sites WHERE oid = $1", SITE_A)
    async with pool.acquire() as conn:
        await add_participants(
            conn, site["study_id"], site["id"], [seed_row(f"SEED-{i}") for i in range(count)]
        )
    return world


async def active_field_key(pool) -> int:
    return int(await pool.fetchval("SELECT id FROM data_keys WHERE purpose = 'fields' AND state = 'active'"))


async def assert_all_open_under(pool, key_id: int) -> None:
    """Every row opens with the right values, every ciphertext under ``key_id``."""
    async with pool.acquire() as conn:
        await keys(conn).refresh(conn)
        rows = await conn.fetch("SELECT * FROM participants ORDER BY id")
        values = await opened_rows(conn, rows)
    assert rows
    for row, personal in zip(rows, values, strict=True):
        want = seed_row(row["subject_key"])
        assert {c: personal[c] for c in CONTACT} == {c: want[c] for c in CONTACT}, row["subject_key"]
        for column in PERSONAL:
            blob = row[column + "_ct"]
            assert blob is None or Keyring.key_of(blob) == key_id


async def test_rotate_data_key_while_requests_are_served(keyed: Settings, tmp_path) -> None:
    async with keyed_pool(keyed) as pool:
        world = await seed(pool, keyed)
        old = await active_field_key(pool)
        with serving(keyed, tmp_path / "serve.log") as base:
            traffic = Traffic(base, world, [f"SEED-{i}" for i in range(0, SEEDED, 37)])
            running = asyncio.create_task(traffic.run())
            await asyncio.sleep(1.0)
            code, out, err = await wait_process(start_cli(keyed, "rotate-data-key", "--batch-size", "500"))
            await asyncio.sleep(1.5)  # and after: the served processes read and write under the new key
            traffic.stop()
            await running
        assert code == 0, err
        assert "is now the active one" in out and "waiting" in out and "re-encrypted 500/" in out
        assert traffic.requests > 50 and traffic.failures == []
        new = await active_field_key(pool)
        assert new != old
        await assert_all_open_under(pool, new)
        retired = await pool.fetchrow("SELECT state, wrapped FROM data_keys WHERE id = $1", old)
        assert retired["state"] == "retired" and bytes(retired["wrapped"]) == b""
        audited = await pool.fetch(
            "SELECT action, details FROM audit_log WHERE action LIKE 'keys.%' ORDER BY id"
        )
        assert [a["action"] for a in audited] == ["keys.rotateDataKey.start", "keys.rotateDataKey.end"]
        assert audited[1]["details"]["rows"] >= SEEDED


async def test_a_killed_rotation_continues_where_it_stopped(keyed: Settings) -> None:
    async with keyed_pool(keyed) as pool:
        await seed(pool, keyed)
        old = await active_field_key(pool)
        proc = start_cli(keyed, "rotate-data-key", "--batch-size", "50")
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("re-encrypted"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        stopped = await pool.fetchrow("SELECT * FROM key_rotations")
        assert stopped["finished_at"] is None and 0 < stopped["rows_done"] < SEEDED

        again = run_cli(keyed, "rotate-data-key", "--batch-size", "500")
        assert again.returncode == 0, again.stderr
        assert f"continuing the rotation from key {old}" in again.stdout
        assert f"re-encrypted {SEEDED}/{SEEDED} rows" in again.stdout
        finished = await pool.fetch("SELECT * FROM key_rotations")
        assert len(finished) == 1 and finished[0]["finished_at"] is not None
        assert finished[0]["rows_done"] == SEEDED  # each row once, across both runs
        await assert_all_open_under(pool, await active_field_key(pool))
        assert await pool.fetchval("SELECT state FROM data_keys WHERE id = $1", old) == "retired"


async def test_rotate_kek_rewraps_the_keys_and_the_old_kek_is_refused(keyed: Settings, tmp_path) -> None:
    new_env = new_kek_env()
    new_kek = LocalKek.from_base64(new_env["NEW_KEK"])
    async with keyed_pool(keyed) as pool:
        world = await seed(pool, keyed, 20)
        old_id = LocalKek.from_base64(keyed.kek or "").kek_id
        before = {r["id"]: bytes(r["wrapped"]) for r in await pool.fetch("SELECT id, wrapped FROM data_keys")}
        rows_before = await pool.fetch("SELECT * FROM participants ORDER BY id")
        with serving(keyed, tmp_path / "old.log") as base:  # started with the old KEK: keeps serving
            done = run_cli(keyed, "rotate-kek", "--new-kek-env", "NEW_KEK", **new_env)
            assert done.returncode == 0, done.stderr
            assert f"re-wrapped under {new_kek.kek_id}" in done.stdout
            assert new_env["NEW_KEK"] not in done.stdout + done.stderr
            traffic = Traffic(base, world, ["SEED-3"])
            running = asyncio.create_task(traffic.run())
            await asyncio.sleep(1.5)  # past a key refresh
            traffic.stop()
            await running
            assert traffic.requests and traffic.failures == []
        after = await pool.fetch("SELECT id, wrapped, kek_id FROM data_keys")
        assert {r["kek_id"] for r in after} == {new_kek.kek_id}
        assert all(bytes(r["wrapped"]) != before[r["id"]] for r in after)
        assert [dict(r) for r in await pool.fetch("SELECT * FROM participants WHERE id <= $1 ORDER BY id",
                                                  rows_before[-1]["id"])] == [dict(r) for r in rows_before]  # fmt: skip
        audited = await pool.fetchrow(
            "SELECT username, details FROM audit_log WHERE action = 'keys.rotateKek'"
        )
        assert audited["username"] == "cli" and audited["details"] == {"from": old_id, "to": new_kek.kek_id}

    # A process started with the old KEK refuses, saying which KEK the keys need.
    for command in ("serve", "worker"):
        refused = run_cli(keyed, command, timeout=60, PARTICIPANTS_PROCESSES="1")
        assert refused.returncode == 2, refused.stderr
        assert f"wrapped by {new_kek.kek_id}, and this process was given {old_id}" in refused.stderr
        assert "Traceback" not in refused.stderr
    # With the new one, it starts and reads what the old one wrote.
    renewed = keyed.model_copy(update={"kek": new_env["NEW_KEK"]})
    async with keyed_pool(renewed) as pool:
        with serving(renewed, tmp_path / "new.log") as base:
            traffic = Traffic(base, World(pool, renewed), ["SEED-3", "SEED-7"])
            running = asyncio.create_task(traffic.run())
            await asyncio.sleep(0.5)
            traffic.stop()
            await running
            assert traffic.requests and traffic.failures == []
    # rotate-kek refuses a new KEK that is the current one, and a missing variable, naming no key.
    same = run_cli(renewed, "rotate-kek", "--new-kek-env", "NEW_KEK", **new_env)
    assert same.returncode == 2 and "is the current one" in same.stderr
    missing = run_cli(renewed, "rotate-kek", "--new-kek-env", "NO_SUCH_VARIABLE")
    assert missing.returncode == 2 and "NO_SUCH_VARIABLE is not set" in missing.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_no_key_encryption_key_refuses_to_start(settings: Settings, command: str) -> None:
    from tests.keyed_db import cli_env
    from tests.test_cli import ROOT

    env = cli_env(settings)
    del env["PARTICIPANTS_KEK"]
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", command], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing to start: no key-encryption key: set PARTICIPANTS_KEK" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_kept_idempotent_answer_replays_after_its_key_is_retired(keyed: Settings, tmp_path) -> None:
    """Kept answers are sealed under the field key too: the rotation re-seals them before it
    destroys the old key, so a CTMS retrying after the rotation still gets the first answer."""
    import aiohttp

    from tests.world import STUDY

    async with keyed_pool(keyed) as pool:
        world = await seed(pool, keyed, 5)
        url = f"/pages/auth/api/clinicaldata/studies/{STUDY}/participants/SEED-1/connect"
        headers = {**world.auth("crc_a"), "Idempotency-Key": "ctms-retry-1"}
        with serving(keyed, tmp_path / "serve.log") as base:
            async with aiohttp.ClientSession(base) as http:
                async with http.post(url, json={"firstName": "Renamed"}, headers=headers) as first:
                    assert first.status == 200, await first.text()
                    answer = await first.json()
                sealed = await pool.fetchval("SELECT body FROM idempotency_keys")
                assert b"Renamed" not in bytes(sealed)
                old = Keyring.key_of(bytes(sealed))
                done = run_cli(keyed, "rotate-data-key")
                assert done.returncode == 0, done.stderr
                assert await pool.fetchval("SELECT state FROM data_keys WHERE id = $1", old) == "retired"
                resealed = bytes(await pool.fetchval("SELECT body FROM idempotency_keys"))
                assert Keyring.key_of(resealed) == await active_field_key(pool) != old
                async with http.post(url, json={"firstName": "Renamed"}, headers=headers) as again:
                    assert again.status == 200 and again.headers.get("Idempotent-Replayed") == "true"
                    assert await again.json() == answer
