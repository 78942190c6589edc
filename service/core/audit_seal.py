"""Sealing the audit log in a keyed hash chain, and verifying the chain (docs/data-protection.md, "Audit sealing").

Each audit row, in id order, gets a seal in ``audit_seals``: ``mac = HMAC-SHA256(key, previous
mac || the row's canonical bytes)``, the first chaining from 32 zero bytes. Writers never wait:
the sealer runs in the background (a worker cron) and only ever inserts seals.

The watermark. Ids come from a sequence and commit out of order, so a row with a lower id than
the highest one visible may still be on its way. The sealer reads ``W = max(id)``, then takes a
transaction id ``X`` of its own (after the read), and waits until every transaction older than
``X`` has ended. A writer has its transaction id before it draws an audit id (the column's default,
migration 0024); any id up to ``W`` was drawn before ``W`` was, so before the read, so by a
transaction older than ``X``: once those have ended, the rows up to ``W`` are all that will ever be
there. A snapshot's ``xmax`` would not do for ``X``: it is one past the newest *ended* transaction,
and a running transaction may hold an id above that which the snapshot then does not list.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import time
from dataclasses import dataclass

import asyncpg
import orjson

from service.core.protection.fields import keys

GENESIS = bytes(32)  # what the first sealed row chains from
BATCH = 5000  # rows sealed per statement (and per transaction), and fetched per round trip by verify
SEAL_LOCK_ID = 0x4155444954  # "AUDIT": one sealer at a time, whichever worker runs it
POLL_SECONDS = 0.02

_ROW = (
    "SELECT id, at, user_id, username, action, study_id, site_id, participant_id, job_uuid,"
    " details::text AS details FROM audit_log"
)


def seal_key(conn: asyncpg.Connection) -> bytes:
    """The key the audit log is sealed and verified with: the keyring's audit key (a data key
    wrapped by the key-encryption key, core/protection), carried by ``conn``."""
    return keys(conn).audit_key


def canonical(row: asyncpg.Record) -> bytes:
    """Every column of an audit row as bytes that read the same on every read of the row: a JSON
    array, the time in UTC with microseconds, the details with sorted keys."""
    at: dt.datetime = row["at"]
    job = row["job_uuid"]
    return orjson.dumps(
        [
            row["id"],
            at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            row["user_id"],
            row["username"],
            row["action"],
            row["study_id"],
            row["site_id"],
            row["participant_id"],
            None if job is None else str(job),
            orjson.loads(row["details"]),
        ],
        option=orjson.OPT_SORT_KEYS,
    )


def chain(key: bytes, previous: bytes, row: asyncpg.Record) -> bytes:
    return hmac.new(key, previous + canonical(row), hashlib.sha256).digest()


# --- Sealing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Watermark:
    """Seal through ``through_id`` once every transaction older than ``after_xid`` has ended."""

    through_id: int
    after_xid: int


async def take_watermark(conn: asyncpg.Connection) -> Watermark | None:
    """None when there is nothing new to seal (no transaction id is spent then)."""
    _outside_transaction(conn)
    row = await conn.fetchrow(
        "SELECT (SELECT max(id) FROM audit_log) AS top, (SELECT max(audit_id) FROM audit_seals) AS sealed"
    )
    if row["top"] is None or (row["sealed"] is not None and row["sealed"] >= row["top"]):
        return None
    # A statement of its own, after the read above, committed at once: from then on every snapshot
    # lists each still-running transaction older than this one.
    xid = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
    return Watermark(row["top"], xid)


async def settled(conn: asyncpg.Connection, mark: Watermark, wait: float) -> bool:
    """Every transaction older than the watermark's has ended (checked for up to ``wait`` seconds)."""
    _outside_transaction(conn)
    deadline = time.monotonic() + wait
    while True:
        if await conn.fetchval(
            "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8", str(mark.after_xid)
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)


async def seal_through(conn: asyncpg.Connection, key: bytes, through_id: int) -> int:
    """Seal every unsealed row after the last seal, up to ``through_id``, ``BATCH`` rows per
    transaction; return how many. Call only with a settled watermark's id. Another sealer at work
    (the advisory lock is taken): this one stops."""
    sealed = 0
    while True:
        async with conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SEAL_LOCK_ID):
                return sealed
            last = await conn.fetchrow("SELECT audit_id, mac FROM audit_seals ORDER BY audit_id DESC LIMIT 1")
            after, mac = (last["audit_id"], bytes(last["mac"])) if last else (0, GENESIS)
            rows = await conn.fetch(
                _ROW + " WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3", after, through_id, BATCH
            )
            macs = []
            for row in rows:
                mac = chain(key, mac, row)
                macs.append(mac)
            if rows:
                await conn.execute(
                    "INSERT INTO audit_seals (audit_id, mac) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                    [r["id"] for r in rows],
                    macs,
                )
        sealed += len(rows)
        if len(rows) < BATCH:
            return sealed


class Sealer:
    """Seals in steps that never wait long: a watermark not yet settled is kept for the next run
    (a worker's cron), so sealing progresses as soon as each long transaction ends, even while
    newer ones keep starting."""

    def __init__(self) -> None:
        self.pending: Watermark | None = None

    async def run(self, conn: asyncpg.Connection, key: bytes, wait: float) -> int:
        if self.pending is None:
            self.pending = await take_watermark(conn)
        mark = self.pending
        if mark is None or not await settled(conn, mark, wait):
            return 0
        self.pending = None
        return await seal_through(conn, key, mark.through_id)


async def seal_pending(conn: asyncpg.Connection, key: bytes, wait: float = 10.0) -> int:
    """Seal every audit row whose writers have all ended (waiting up to ``wait`` seconds for those
    in flight); return how many rows were sealed. ``conn`` must not be in a transaction."""
    return await Sealer().run(conn, key, wait)


def _outside_transaction(conn: asyncpg.Connection) -> None:
    # Inside a transaction, the transaction id taken would be the caller's, which never ends first.
    if conn.is_in_transaction():
        raise RuntimeError("the audit sealer must run outside a transaction")


# --- Verifying ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    intact: bool
    message: str  # one line, ids and actions only


async def verify(conn: asyncpg.Connection, key: bytes) -> Verdict:
    """Recompute the chain over every sealed row, in id order, streaming both tables, and report
    the first problem: a sealed row edited or moved, deleted, or a row inserted among sealed ones."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        last_sealed = await conn.fetchval("SELECT max(audit_id) FROM audit_seals")
        tail = await conn.fetchval("SELECT count(*) FROM audit_log WHERE id > $1", last_sealed or 0)
        if last_sealed is None:
            return Verdict(True, f"audit log not sealed yet: 0 rows verified, {tail} unsealed")
        # Two server-side cursors read side by side, BATCH rows per round trip.
        rows = aiter(conn.cursor(_ROW + " WHERE id <= $1 ORDER BY id", last_sealed, prefetch=BATCH))
        seals = aiter(conn.cursor("SELECT audit_id, mac FROM audit_seals ORDER BY audit_id", prefetch=BATCH))
        row, seal = await anext(rows, None), await anext(seals, None)
        previous, verified = GENESIS, 0
        while row is not None or seal is not None:
            if seal is None or (row is not None and row["id"] < seal["audit_id"]):
                assert row is not None
                return _broken(row["id"], row["action"], "inserted: it has no seal, inside the sealed range")
            if row is None or seal["audit_id"] < row["id"]:
                return _broken(seal["audit_id"], None, "deleted: sealed, and no longer in the audit log")
            if not hmac.compare_digest(chain(key, previous, row), bytes(seal["mac"])):
                why = "does not match its seal: edited, moved from another id, or the row sealed before it was removed with its seal"
                if verified == 0:
                    why += " (or the seal key is not the one it was sealed with)"
                return _broken(row["id"], row["action"], why)
            previous, verified = bytes(seal["mac"]), verified + 1
            row, seal = await anext(rows, None), await anext(seals, None)
    return Verdict(
        True,
        f"audit log intact: {verified} sealed rows verified, last sealed id {last_sealed}"
        f" (head {previous[:8].hex()}), {tail} newer rows not sealed yet",
    )


def _broken(audit_id: int, action: str | None, why: str) -> Verdict:
    if action and not (action.isprintable() and len(action) <= 80):
        action = repr(action[:80])  # a tampered row's action must not break the one line
    named = f"audit row {audit_id}" + (f" ({action})" if action else "")
    return Verdict(False, f"audit log broken at {named}: {why}")


async def verify_command(conn: asyncpg.Connection) -> Verdict:
    """``participants verify-audit``: the verdict with the key the service seals with."""
    return await verify(conn, seal_key(conn))
