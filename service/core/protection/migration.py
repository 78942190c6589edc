"""Rows from before encryption: ``encrypt_existing`` moves every plain personal field into its
ciphertext (and blind index), a batch per short transaction while the service serves, then
applies the migration that drops the plain columns (0026, waiting until no row holds one).

Its state is the rows themselves: a row is done once its plain columns are NULL, so a run stopped
midway simply finds fewer rows the next time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from service.core.db import migrate, waiting_migration
from service.core.protection.fields import BLIND, PERSONAL, keys, sealed
from service.core.protection.rotation import Say

STORED = (*(c + "_ct" for c in PERSONAL), *(c + "_bidx" for c in BLIND))
HOLDS_PLAIN = "(" + " OR ".join(f"{c} IS NOT NULL" for c in PERSONAL) + ")"
COUNT_PLAIN = f"SELECT count(*) FROM participants WHERE {HOLDS_PLAIN}"
BATCH_PLAIN = f"""
SELECT id, study_id, subject_key, {", ".join(PERSONAL)} FROM participants
WHERE id > $1 AND {HOLDS_PLAIN} ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
"""
# A column already encrypted keeps its ciphertext (it is the newer value); the plain copies go in
# the same statement, so no row is ever without its value.
SEAL_ROWS = f"""
UPDATE participants p SET {", ".join(f"{c} = coalesce(p.{c}, u.{c})" for c in STORED)},
    {", ".join(f"{c} = NULL" for c in PERSONAL)}
FROM unnest($1::bigint[], {", ".join(f"${i + 2}::bytea[]" for i in range(len(STORED)))}) AS u(id, {", ".join(STORED)})
WHERE p.id = u.id
"""


async def has_plain_columns(conn: asyncpg.Connection) -> bool:
    """The plain columns still exist (migration 0026 has not dropped them)."""
    found = await conn.fetchval(
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'participants' AND column_name = ANY($1::text[])",
        list(PERSONAL),
    )
    return bool(found)


def _stored(conn: asyncpg.Connection, row: asyncpg.Record) -> list[Any]:
    plain = {c: row[c] for c in PERSONAL if row[c] is not None}
    out = sealed(keys(conn), row["study_id"], row["subject_key"], plain)
    return [out.get(c) for c in STORED]


async def _pass(conn: asyncpg.Connection, batch: int, done: int, total: int, say: Say) -> int:
    """One pass over the rows holding plain data, by id; return how many it encrypted (rows held
    by another transaction meanwhile are skipped: the caller passes again)."""
    ring = keys(conn)
    last, now = 0, 0
    while True:
        await ring.refresh(conn)  # a data-key rotation may have begun: write under its new key
        async with conn.transaction():
            rows = await conn.fetch(BATCH_PLAIN, last, batch)
            if rows:
                columns = list(zip(*(_stored(conn, r) for r in rows), strict=True))
                await conn.execute(SEAL_ROWS, [r["id"] for r in rows], *(list(c) for c in columns))
        if not rows:
            return now
        last = rows[-1]["id"]
        now += len(rows)
        say(f"encrypted {done + now}/{max(total, done + now)} rows")


async def encrypt_existing(conn: asyncpg.Connection, say: Say, batch: int = 1000) -> list[str]:
    """Encrypt every row still holding plain personal fields, then apply the migrations waiting
    on that (0026 drops the plain columns); return the migrations applied."""
    await migrate(conn)  # up to the waiting one: the ciphertext columns exist
    if await has_plain_columns(conn):
        total = await conn.fetchval(COUNT_PLAIN)
        say(f"{total} rows hold plain personal fields: encrypting them in batches of {batch}")
        done = 0
        while left := await conn.fetchval(COUNT_PLAIN):
            now = await _pass(conn, batch, done, done + left, say)
            done += now
            if not now:
                await asyncio.sleep(0.2)  # every row left is locked right now
        say(f"no row holds plain personal fields ({done} encrypted now)")
    else:
        say("the plain columns are gone already: nothing to encrypt")
    applied = await migrate(conn)
    say("applied: " + (", ".join(applied) or "nothing (up to date)"))
    if (waiting := await waiting_migration(conn)) is not None:
        say(f"migration {waiting[0]} still waits: {waiting[1]}")
    return applied
