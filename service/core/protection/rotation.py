"""Key rotations: a new key-encryption key for the data keys (``rotate_kek``: the data keys are
re-wrapped, no row is touched), and a new field key for the rows (``rotate_data_key``: every
ciphertext under the old key is re-encrypted, batch by batch, while the service serves).

Neither ever sees a value leave the process: ciphertexts are opened and sealed again in memory.
docs/key-management.md describes both procedures.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from service.core import audit
from service.core.idempotency import reseal_bodies
from service.core.protection.fields import PERSONAL, keys
from service.core.protection.kek import Kek
from service.core.protection.keyring import HEADER, KEYS_LOCK_ID, Keyring

Say = Callable[[str], None]

# Held (session level) by the one rotate-data-key that runs: a second one refuses at once.
ROTATION_LOCK_ID = 0x524F5441  # "ROTA"
CT = tuple(c + "_ct" for c in PERSONAL)


class RotationRefused(Exception):
    """The rotation cannot run now; the message says why and what to do (never a key or a value)."""


# --- the key-encryption key ----------------------------------------------------------------------


async def rotate_kek(conn: asyncpg.Connection, new: Kek) -> int:
    """Re-wrap every data key still in use under ``new``, in one transaction, audited; return how
    many. ``conn`` carries the keyring loaded with the current KEK (so every key is known to open)."""
    old = keys(conn).kek
    if new.kek_id == old.kek_id:
        raise RotationRefused(f"the new key-encryption key is the current one ({old.kek_id})")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_ID)
        rows = await conn.fetch(
            "SELECT id, purpose, wrapped, kek_id FROM data_keys WHERE state <> 'retired' ORDER BY id FOR UPDATE"
        )
        for r in rows:
            if r["kek_id"] != old.kek_id:
                raise RotationRefused(f"data key {r['id']} is wrapped by {r['kek_id']}, not by {old.kek_id}")
            key = await old.unwrap(bytes(r["wrapped"]), r["purpose"])
            wrapped = await new.wrap(key, r["purpose"])
            if await new.unwrap(wrapped, r["purpose"]) != key:  # never commit a key we cannot open again
                raise RotationRefused(f"{new.kek_id} does not give back the key it wrapped")
            await conn.execute(
                "UPDATE data_keys SET wrapped = $2, kek_id = $3 WHERE id = $1", r["id"], wrapped, new.kek_id
            )
        await audit.record_by(
            conn, audit.CLI, "keys.rotateKek", details={"from": old.kek_id, "to": new.kek_id}
        )
    return len(rows)


# --- the field key -------------------------------------------------------------------------------


def _under(first: int) -> str:
    """SQL: the row holds a ciphertext whose key id is in the bytea[] parameter ``$first``."""
    return "(" + " OR ".join(f"substring({c} FROM 1 FOR 4) = ANY(${first}::bytea[])" for c in CT) + ")"


COUNT_UNDER = f"SELECT count(*) FROM participants WHERE {_under(1)}"
BATCH_UNDER = f"""
SELECT id, study_id, subject_key, {", ".join(CT)} FROM participants
WHERE id > $2 AND {_under(1)} ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
"""
UPDATE_CTS = f"""
UPDATE participants p SET {", ".join(f"{c} = u.{c}" for c in CT)}
FROM unnest($1::bigint[], {", ".join(f"${i + 2}::bytea[]" for i in range(len(CT)))}) AS u(id, {", ".join(CT)})
WHERE p.id = u.id
"""
BEGIN_ROTATION = """
INSERT INTO key_rotations (from_key, to_key) VALUES ($1, $2) RETURNING *
"""
PROGRESS = "UPDATE key_rotations SET last_participant_id = $2, rows_done = $3 WHERE id = $1"


@dataclass
class Rotation:
    id: int
    from_key: int
    to_key: int
    last_participant_id: int
    rows_done: int


def _prefixes(key_ids: list[int]) -> list[bytes]:
    return [HEADER.pack(k) for k in key_ids]


async def _retiring(conn: asyncpg.Connection) -> list[int]:
    return [
        r["id"]
        for r in await conn.fetch("SELECT id FROM data_keys WHERE purpose = 'fields' AND state = 'retiring'")
    ]


async def _begin(conn: asyncpg.Connection, ring: Keyring) -> Rotation:
    """The active field key becomes 'retiring' and a new one 'active', the rotation recorded."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_ID)
        old = await conn.fetchval("SELECT id FROM data_keys WHERE purpose = 'fields' AND state = 'active'")
        await conn.execute("UPDATE data_keys SET state = 'retiring' WHERE id = $1", old)
        new = await conn.fetchval(
            "INSERT INTO data_keys (purpose, wrapped, kek_id) VALUES ('fields', $1, $2) RETURNING id",
            await ring.kek.wrap(os.urandom(32), "fields"),
            ring.kek.kek_id,
        )
        row = await conn.fetchrow(BEGIN_ROTATION, old, new)
        total = await conn.fetchval(COUNT_UNDER, _prefixes(await _retiring(conn)))
        await audit.record_by(conn, audit.CLI, "keys.rotateDataKey.start", details={"rows": total})
    return Rotation(row["id"], old, new, 0, 0)


def _resealed(ring: Keyring, row: asyncpg.Record, retiring: set[int]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for column, ct in zip(PERSONAL, CT, strict=True):
        blob = row[ct]
        if blob is not None and Keyring.key_of(blob) in retiring:
            value = ring.decrypt(row["study_id"], row["subject_key"], column, blob)
            blob = ring.encrypt(row["study_id"], row["subject_key"], column, value)
        out.append(blob)
    return out


async def _pass(
    conn: asyncpg.Connection, rotation: Rotation, retiring: list[int], batch: int, total: int, say: Say
) -> int:
    """Re-encrypt the rows under ``retiring`` after ``rotation.last_participant_id``, a batch per
    short transaction (rows another transaction holds are skipped: the caller passes again)."""
    ring = keys(conn)
    prefixes, retiring_set = _prefixes(retiring), set(retiring)
    done_now = 0
    while True:
        await ring.refresh(conn)  # the new key is the active one here too
        async with conn.transaction():
            rows = await conn.fetch(BATCH_UNDER, prefixes, rotation.last_participant_id, batch)
            if rows:
                columns = list(zip(*(_resealed(ring, r, retiring_set) for r in rows), strict=True))
                await conn.execute(UPDATE_CTS, [r["id"] for r in rows], *(list(c) for c in columns))
                rotation.last_participant_id = rows[-1]["id"]
                rotation.rows_done += len(rows)
                await conn.execute(PROGRESS, rotation.id, rotation.last_participant_id, rotation.rows_done)
        if not rows:
            return done_now
        done_now += len(rows)
        say(f"re-encrypted {rotation.rows_done}/{max(total, rotation.rows_done)} rows")


async def _wait_for_processes(
    conn: asyncpg.Connection, rotation_id: int, refresh_seconds: float, say: Say
) -> None:
    """Every process re-reads the keys every ``refresh_seconds``: two periods after the rotation
    began, all of them write under the new key (a resumed run waits only what is left)."""
    elapsed = await conn.fetchval(
        "SELECT extract(epoch FROM now() - started_at)::float8 FROM key_rotations WHERE id = $1", rotation_id
    )
    left = 2 * refresh_seconds - float(elapsed)
    if left > 0:
        say(f"waiting {left:.1f} s for every process to write under the new key")
        await asyncio.sleep(left)


async def _finish(conn: asyncpg.Connection, rotation: Rotation, retiring: list[int]) -> bool:
    """When no row is left under a retiring key: retire them (their wrapped bytes deleted) and
    close the rotation, audited. False when a row still is (the caller passes again)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_ID)
        if await conn.fetchval(COUNT_UNDER, _prefixes(retiring)):
            return False
        # Kept Idempotency-Key answers are sealed under field keys too (core/idempotency.py).
        await reseal_bodies(conn, _prefixes(retiring))
        await conn.execute(
            "UPDATE data_keys SET state = 'retired', wrapped = ''::bytea WHERE id = ANY($1::int[])", retiring
        )
        await conn.execute("UPDATE key_rotations SET finished_at = now() WHERE id = $1", rotation.id)
        await audit.record_by(conn, audit.CLI, "keys.rotateDataKey.end", details={"rows": rotation.rows_done})
    return True


async def rotate_data_key(
    conn: asyncpg.Connection, refresh_seconds: float, say: Say, batch: int = 1000
) -> dict[str, Any]:
    """A new active field key; every row under the old one re-encrypted; the old one retired and
    its wrapped bytes deleted. Resumes a rotation a killed run left unfinished."""
    if not await conn.fetchval("SELECT to_regclass('key_rotations') IS NOT NULL"):
        raise RotationRefused(
            "migration 0026 has not applied (rows still hold plain personal fields):"
            " run participants encrypt-existing first"
        )
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ROTATION_LOCK_ID):
        raise RotationRefused("another participants rotate-data-key is running")
    try:
        running = await conn.fetchrow("SELECT * FROM key_rotations WHERE finished_at IS NULL")
        if running is None:
            rotation = await _begin(conn, keys(conn))
            say(f"field key {rotation.to_key} is now the active one; key {rotation.from_key} is retiring")
        else:
            rotation = Rotation(
                running["id"], running["from_key"], running["to_key"],
                running["last_participant_id"], running["rows_done"],
            )  # fmt: skip
            say(f"continuing the rotation from key {rotation.from_key} to key {rotation.to_key}"
                f" ({rotation.rows_done} rows done)")  # fmt: skip
        await _wait_for_processes(conn, rotation.id, refresh_seconds, say)
        retiring = await _retiring(conn)
        total = rotation.rows_done + await conn.fetchval(COUNT_UNDER, _prefixes(retiring))
        say(f"re-encrypting {total - rotation.rows_done} rows in batches of {batch}")
        await _pass(conn, rotation, retiring, batch, total, say)
        while not await _finish(conn, rotation, retiring):
            # Rows locked by a request during the pass, or written by a process not switched yet.
            left = await conn.fetchval(COUNT_UNDER, _prefixes(retiring))
            say(f"{left} rows still under the old key: another pass")
            rotation.last_participant_id = 0
            if not await _pass(conn, rotation, retiring, batch, rotation.rows_done + left, say):
                await asyncio.sleep(0.2)  # every one of them is locked right now
        await keys(conn).refresh(conn)
        say(f"done: {rotation.rows_done} rows re-encrypted; key {', '.join(map(str, retiring))} retired")
        return {"from": rotation.from_key, "to": rotation.to_key, "rows": rotation.rows_done}
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ROTATION_LOCK_ID)
