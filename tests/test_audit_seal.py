"""The audit trail is tamper-evident: its rows are final for the service's role, a background sealer
chains them with a keyed hash, and `participants verify-audit` names the first row tampered with
(edited, deleted, inserted, swapped), as an attacker with the tables' owner rights would."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from service.core import audit, audit_seal
from tests.test_cli import run_cli
from tests.test_extract_reliability import _start_worker, _stop
from tests.world import SITE_A, STUDY, expect

SITE_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
TESTER = audit.Actor(None, "tester")


async def seal(pool: asyncpg.Pool, settings, wait: float = 10.0) -> int:
    async with pool.acquire() as conn:
        return await audit_seal.seal_pending(conn, audit_seal.seal_key(conn), wait)


def verify_audit(settings) -> tuple[int, str]:
    done = run_cli(settings, "verify-audit")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.strip()


async def tamper(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """As the tables' owner (here a superuser) would: with the append-only triggers off."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


async def add(client, world, key: str, **fields: str) -> None:
    body = {"subjectKey": key, **fields}
    await expect(await client.post(SITE_URL, json=body, headers=world.auth("crc_a")), 200)


@pytest.fixture
async def sealed(client, world, pool, settings) -> list[asyncpg.Record]:
    """Audit rows written through the API (creates and updates), one id lost to a rolled-back
    writer (a gap, as any failed transaction leaves), all sealed and verified intact."""
    await world.standard()
    for i in range(4):
        await add(client, world, f"AS-{i}", firstName="Ann")
    async with pool.acquire() as conn:
        rolled_back = conn.transaction()
        await rolled_back.start()
        await audit.record_by(conn, TESTER, "test.rolledBack")
        await rolled_back.rollback()
    for i in range(4, 7):
        await add(client, world, f"AS-{i}", firstName="Ann")
    await add(client, world, "AS-1", firstName="Bob")  # an update: another action
    rows = await pool.fetch("SELECT id, action FROM audit_log ORDER BY id")
    assert await seal(pool, settings) == len(rows)
    assert await seal(pool, settings) == 0  # sealed once only
    code, out = verify_audit(settings)
    assert code == 0, out
    assert out == (
        f"audit log intact: {len(rows)} sealed rows verified, last sealed id {rows[-1]['id']}"
        f" (head {out.split('(head ')[1][:16]}), 0 newer rows not sealed yet"
    )
    return list(rows)


def gap_in(rows: list[asyncpg.Record]) -> int:
    ids = [r["id"] for r in rows]
    missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
    assert missing, ids
    return missing[0]


async def test_the_service_role_can_neither_update_nor_delete_audit_rows(sealed, pool):
    first = sealed[0]["id"]
    for sql in (
        "UPDATE audit_log SET details = '{}' WHERE id = $1",
        "DELETE FROM audit_log WHERE id = $1",
        "UPDATE audit_seals SET mac = sha256('x') WHERE audit_id = $1",
        "DELETE FROM audit_seals WHERE audit_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await pool.execute(sql, first)
    assert await pool.fetchval("SELECT count(*) FROM audit_seals") == len(sealed)


async def test_new_rows_are_an_unsealed_tail_until_the_next_seal(sealed, client, world, pool, settings):
    await add(client, world, "AS-NEW")
    await add(client, world, "AS-NEWER")
    code, out = verify_audit(settings)
    assert code == 0 and out.endswith(", 2 newer rows not sealed yet"), out
    assert await seal(pool, settings) == 2
    code, out = verify_audit(settings)
    assert code == 0 and f"{len(sealed) + 2} sealed rows verified" in out, out


async def test_an_edited_row_is_named(sealed, pool, settings):
    target = sealed[2]
    await tamper(pool, "UPDATE audit_log SET details = details || '{\"x\": 1}' WHERE id = $1", target["id"])
    code, out = verify_audit(settings)
    assert code == 1
    assert out.startswith(
        f"audit log broken at audit row {target['id']} ({target['action']}): does not match"
    )


async def test_a_deleted_row_is_named(sealed, pool, settings):
    target = sealed[3]["id"]
    async with pool.acquire() as conn, conn.transaction():  # the owner's way: switch the trigger off
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        await conn.execute("DELETE FROM audit_log WHERE id = $1", target)
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    code, out = verify_audit(settings)
    assert code == 1
    assert out == f"audit log broken at audit row {target}: deleted: sealed, and no longer in the audit log"


async def test_a_row_deleted_with_its_seal_breaks_the_chain_at_the_next_row(sealed, pool, settings):
    target = sealed[3]["id"]
    await tamper(pool, "DELETE FROM audit_log WHERE id = $1", target)
    await tamper(pool, "DELETE FROM audit_seals WHERE audit_id = $1", target)
    code, out = verify_audit(settings)
    assert code == 1 and out.startswith(f"audit log broken at audit row {sealed[4]['id']} ("), out


async def test_a_row_inserted_inside_the_sealed_range_is_named(sealed, pool, settings):
    gap = gap_in(sealed)
    await tamper(
        pool, "INSERT INTO audit_log (id, username, action) VALUES ($1, 'crc_a', 'participant.create')", gap
    )
    code, out = verify_audit(settings)
    assert code == 1
    assert out == (
        f"audit log broken at audit row {gap} (participant.create): inserted: it has no seal, inside the sealed range"
    )


async def test_swapped_actions_are_named_at_the_first_of_the_two(sealed, pool, settings):
    create = next(r for r in sealed if r["action"] == "participant.create")
    update = next(r for r in sealed if r["action"] == "participant.update")
    await tamper(
        pool,
        "UPDATE audit_log SET action = CASE id WHEN $1 THEN $4 ELSE $3 END WHERE id IN ($1, $2)",
        create["id"],
        update["id"],
        create["action"],
        update["action"],
    )
    code, out = verify_audit(settings)
    assert code == 1
    first = min(create["id"], update["id"])
    assert out.startswith(f"audit log broken at audit row {first} (") and "does not match its seal" in out


async def test_swapped_ids_are_named(sealed, pool, settings):
    a, b = sealed[1]["id"], sealed[5]["id"]
    await tamper(
        pool, "UPDATE audit_log SET id = CASE id WHEN $1 THEN -$2 ELSE -$1 END WHERE id IN ($1, $2)", a, b
    )
    await tamper(pool, "UPDATE audit_log SET id = -id WHERE id < 0")
    code, out = verify_audit(settings)
    assert code == 1 and out.startswith(f"audit log broken at audit row {a} ("), out


async def test_a_truncated_log_is_reported(sealed, pool, settings):
    await pool.execute("TRUNCATE audit_log")  # possible for the service's role, and visible
    code, out = verify_audit(settings)
    assert code == 1 and out.startswith(f"audit log broken at audit row {sealed[0]['id']}: deleted"), out


async def test_another_key_fails_at_the_first_row(sealed, pool, settings):
    async with pool.acquire() as conn:
        verdict = await audit_seal.verify(conn, b"\x01" * 32)
    assert not verdict.intact
    assert f"audit row {sealed[0]['id']} (" in verdict.message and "seal key" in verdict.message


async def test_batches_of_sealing_and_verifying_chain_on(pool, settings):
    n = audit_seal.BATCH * 2 + 7
    await pool.execute(
        "INSERT INTO audit_log (username, action, details)"
        " SELECT 'tester', 'test.bulk', jsonb_build_object('n', g, 'b', g % 3) FROM generate_series(1, $1) g",
        n,
    )
    assert await seal(pool, settings) == n
    async with pool.acquire() as conn:
        verdict = await audit_seal.verify(conn, audit_seal.seal_key(conn))
    assert verdict.intact and f"{n} sealed rows verified" in verdict.message, verdict.message


async def test_a_writer_holding_a_lower_id_is_waited_for(pool, settings):
    """The writer of the highest id committed first, with the older transaction id; a transaction
    holding a lower id is still open. Sealing must wait for it, not seal past it."""
    older, holder = await pool.acquire(), await pool.acquire()
    try:
        older_tx, holder_tx = older.transaction(), holder.transaction()
        await older_tx.start()
        await older.fetchval("SELECT pg_current_xact_id()")
        await holder_tx.start()
        await audit.record_by(holder, TESTER, "test.holder")  # the lower id, uncommitted
        await audit.record_by(older, TESTER, "test.older")
        await older_tx.commit()
        assert await seal(pool, settings, wait=0.3) == 0
        assert await pool.fetchval("SELECT count(*) FROM audit_seals") == 0
        await holder_tx.commit()
    finally:
        await pool.release(older)
        await pool.release(holder)
    assert await seal(pool, settings) == 2
    async with pool.acquire() as conn:
        assert (await audit_seal.verify(conn, audit_seal.seal_key(conn))).intact


async def test_concurrent_writers_while_sealing_never_look_inserted(pool, settings):
    slow_may_commit = asyncio.Event()
    slow_ids: list[int] = []

    async def writer(n: int, slow: bool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await audit.record_by(conn, TESTER, "test.concurrent", {"n": n})
            if slow:
                slow_ids.append(await conn.fetchval("SELECT currval('audit_log_id_seq')"))
                await slow_may_commit.wait()
            else:
                await conn.execute("SELECT pg_sleep(0.01 * $1::int % 5)", n)

    writers = [asyncio.create_task(writer(n, slow=n % 4 == 1)) for n in range(20)]
    await asyncio.sleep(0.5)  # the fast ones commit around the slow ones' ids
    sealing = [asyncio.create_task(seal(pool, settings, wait=0.5)) for _ in range(3)]
    sealed_early = sum(await asyncio.gather(*sealing))
    assert len(slow_ids) == 5
    in_flight = await pool.fetchval("SELECT count(*) FROM audit_seals WHERE audit_id >= $1", min(slow_ids))
    assert in_flight == 0, "sealed past a row not yet committed"
    slow_may_commit.set()
    await asyncio.gather(*writers)
    assert sealed_early + await seal(pool, settings) == 20
    async with pool.acquire() as conn:
        verdict = await audit_seal.verify(conn, audit_seal.seal_key(conn))
    assert verdict.intact and "20 sealed rows verified" in verdict.message, verdict.message


@pytest.mark.slow
async def test_the_worker_seals_within_seconds(client, world, pool, settings, tmp_path):
    await world.standard()
    proc = _start_worker(settings, tmp_path / "worker.log", "default")
    try:
        for i in range(3):
            await add(client, world, f"W-{i}")
        written = time.monotonic()
        total = await pool.fetchval("SELECT count(*) FROM audit_log")
        while await pool.fetchval("SELECT count(*) FROM audit_seals") < total:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() - written < 20, (tmp_path / "worker.log").read_text()
            await asyncio.sleep(0.1)
        await add(client, world, "W-late")  # the worker already runs: a few seconds at most
        written = time.monotonic()
        while await pool.fetchval("SELECT count(*) FROM audit_seals") <= total:
            assert time.monotonic() - written < 5, (tmp_path / "worker.log").read_text()
            await asyncio.sleep(0.1)
    finally:
        _stop(proc)
    code, out = verify_audit(settings)
    assert code == 0 and f"{total + 1} sealed rows verified" in out, out


async def test_an_audit_id_is_drawn_after_its_writer_has_a_transaction_id(pool):
    default = await pool.fetchval(
        "SELECT column_default FROM information_schema.columns WHERE table_name = 'audit_log' AND column_name = 'id'"
    )
    assert default == "audit_log_next_id()"
    async with pool.acquire() as conn, conn.transaction():
        assert await conn.fetchval("SELECT pg_current_xact_id_if_assigned()") is None
        await conn.fetchval("SELECT audit_log_next_id()")
        assert await conn.fetchval("SELECT pg_current_xact_id_if_assigned()") is not None
