"""The set-based SQL of a bulk upload.

Rows are COPYed (binary, ``copy_records_to_table``) into a session-local staging table as the
file streams in, outside any transaction. Then one short transaction decides every row at once
and inserts the accepted ones with their audit rows in a single statement:

1. the enrollment cap: ``participant_store.lock_study_and_check_cap`` (the study row lock, so
   concurrent adds to a capped study queue there and never overshoot);
2. ``participantIDNotUnique`` for an ID already in the study, ``participantIDDuplicatedInFile`` for
   one repeated in the file (the first occurrence wins);
3. ``participantsEnrollmentCapReached`` for the rows past the cap, in file order;
4. ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` plus the audit rows, in one
   statement. A row that lost a race with a concurrent upload (skipped by ON CONFLICT) is
   reported ``participantIDNotUnique``: each ID is added by exactly one upload.

The staging table outlives the commit so that the summary can be streamed from it; it is dropped
when the upload is done (and with the session, if the connection dies).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from service.core import audit
from service.core.bulk.parser import BulkCsvParser, Row
from service.core.participant_ids import new_access_codes
from service.core.participants import lock_study_and_check_cap
from service.core.protection.fields import STORED, STORED_LIST, keys, sealed, stored_values
from service.core.roles import Scope

STAGING = "bulk_rows"
COPY_BATCH = 20_000  # parsed rows per COPY
# asyncpg encodes a COPY's rows on the event loop; given a list it encodes them all in one go (20,000
# rows held the loop 50 to 200 ms here). Given an async iterable it awaits between rows, so the rows
# go through one that yields to the loop every ENCODE_SLICE rows (about 1 ms), at some 0.5 us a row.
ENCODE_SLICE = 500
# Parsing runs on the event loop a slice at a time (about 1,000 rows, 3 to 4 ms), yielding between
# slices, so a request arriving meanwhile waits for one slice at most. Not in a thread: a parsing
# thread keeps the GIL busy, and the loop then waits up to the switch interval (5 ms) each time it
# takes the GIL back, which it does several times per request it serves.
PARSE_SLICE = 16 * 1024
# The personal values are staged already encrypted (fields.STORED): nothing personal is ever in
# clear in Postgres, not even in a session's temp table. A registering upload stages each valid
# row's access code too.
STAGED_COLUMNS = ["row_no", "subject_key", *STORED, "errors"]

CREATE_STAGING = f"""
DROP TABLE IF EXISTS pg_temp.{STAGING};
CREATE TEMP TABLE {STAGING} (
    row_no integer NOT NULL,
    subject_key text NOT NULL,
    {", ".join(c + " bytea" for c in STORED)},
    errors text[] NOT NULL,
    added boolean NOT NULL DEFAULT false
)
"""

# Field errors come from Python. An ID already in the study is not unique; one seen earlier in the
# file (its first occurrence wins) is duplicated in the file, whatever became of that first row.
MARK_NOT_UNIQUE = f"""
UPDATE {STAGING} b SET errors = ARRAY[CASE WHEN EXISTS (
        SELECT 1 FROM participants p WHERE p.study_id = $1 AND lower(p.subject_key) = lower(b.subject_key))
    THEN 'participantIDNotUnique' ELSE 'participantIDDuplicatedInFile' END]
FROM (
    SELECT row_no, row_number() OVER (PARTITION BY lower(subject_key) ORDER BY row_no) AS nth
    FROM {STAGING} WHERE subject_key <> ''
) d
WHERE d.row_no = b.row_no AND b.errors = '{{}}'
  AND (d.nth > 1
       OR EXISTS (SELECT 1 FROM participants p WHERE p.study_id = $1 AND lower(p.subject_key) = lower(b.subject_key)))
"""

MARK_PAST_CAP = f"""
UPDATE {STAGING} SET errors = ARRAY['participantsEnrollmentCapReached']
WHERE row_no IN (SELECT row_no FROM {STAGING} WHERE errors = '{{}}' ORDER BY row_no OFFSET $1)
"""

# Inserted in ID order, so that two uploads sharing IDs wait on each other's index entries in the
# same order and cannot deadlock. Audit details name the fields given, never their values.
#
# OIDs: the rule of participant_oid() (sql/0001_init.sql), decided for the whole set at once. Called
# once per row, that function looks its OID up in participants; planned while a study is still
# empty, the lookup scans the table this very statement is filling, which makes a 100,000-row
# upload quadratic. So the plain OID is computed here, checked against the study and the batch in
# one join, and only the rows whose plain OID is taken go through participant_oid() for a suffix.
# tests/test_bulk.py checks that both paths give the same OIDs.
INSERT_ACCEPTED = f"""
WITH accepted AS (
    SELECT subject_key, {STORED_LIST},
           'SS_' || upper(regexp_replace(subject_key, '[^A-Za-z0-9]', '', 'g')) AS plain_oid
    FROM {STAGING} WHERE errors = '{{}}' AND NOT added
), numbered AS (
    SELECT a.*, row_number() OVER (PARTITION BY plain_oid ORDER BY lower(subject_key)) AS nth
    FROM accepted a
), ins AS (
    INSERT INTO participants (study_id, site_id, subject_key, oid, {STORED_LIST}, participate_status,
                              created_by, updated_by)
    SELECT $1, $2, n.subject_key,
           CASE WHEN n.nth > 1 OR taken.oid IS NOT NULL THEN participant_oid($1, n.subject_key)
                ELSE n.plain_oid END,
           {", ".join("n." + c for c in STORED)},
           CASE WHEN n.access_code_ct IS NULL THEN '' ELSE 'CREATED' END, $3, $3
    FROM numbered n
    LEFT JOIN (SELECT DISTINCT oid FROM participants WHERE study_id = $1) taken ON taken.oid = n.plain_oid
    ORDER BY lower(n.subject_key)
    ON CONFLICT DO NOTHING
    RETURNING id, subject_key, first_name_ct, last_name_ct, email_ct, phone_ct, identifier_ct, access_code_ct
), aud AS (
    INSERT INTO audit_log (user_id, username, action, study_id, site_id, participant_id, details)
    SELECT $3, $4, 'participant.create', $1, $2, ins.id,
           jsonb_build_object(
               'fields', to_jsonb(array_remove(ARRAY[
                   CASE WHEN ins.first_name_ct IS NOT NULL THEN 'firstName' END,
                   CASE WHEN ins.last_name_ct IS NOT NULL THEN 'lastName' END,
                   CASE WHEN ins.email_ct IS NOT NULL THEN 'emailAddress' END,
                   CASE WHEN ins.phone_ct IS NOT NULL THEN 'phoneNumber' END,
                   CASE WHEN ins.identifier_ct IS NOT NULL THEN 'identifier' END], NULL)),
               'registered', ins.access_code_ct IS NOT NULL,
               'bulk', true)
    FROM ins
)
UPDATE {STAGING} b SET added = true
FROM ins WHERE b.errors = '{{}}' AND lower(b.subject_key) = lower(ins.subject_key)
"""

# Accepted but skipped by ON CONFLICT: a concurrent upload or add committed the same ID first.
MARK_LOST_RACE = f"""
UPDATE {STAGING} SET errors = ARRAY['participantIDNotUnique'] WHERE errors = '{{}}' AND NOT added
"""
# Accepted, skipped, and the ID still free: the only other unique key, its new access code, was
# drawn twice (about 1 in 10^10 per row at a million codes). Those rows are inserted again with
# fresh codes.
CODE_COLLISIONS = f"""
SELECT b.row_no, b.subject_key FROM {STAGING} b
WHERE b.errors = '{{}}' AND NOT b.added AND b.access_code_ct IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM participants p WHERE p.study_id = $1 AND lower(p.subject_key) = lower(b.subject_key))
"""
NEW_CODES = f"""
UPDATE {STAGING} b SET access_code_ct = c.ct, access_code_bidx = c.bidx
FROM unnest($1::integer[], $2::bytea[], $3::bytea[]) AS c(row_no, ct, bidx) WHERE b.row_no = c.row_no
"""
CODE_DRAWS = 3

COUNTS = f"SELECT count(*) FILTER (WHERE added) AS added, count(*) FILTER (WHERE NOT added) AS failed FROM {STAGING}"

FAILED_ROWS = f"SELECT row_no, subject_key, errors FROM {STAGING} WHERE NOT added ORDER BY row_no"
ADDED_ROWS = f"SELECT row_no, subject_key FROM {STAGING} WHERE added ORDER BY row_no"


@dataclass(frozen=True)
class Outcome:
    added: int
    failed: int


async def create_staging(conn: asyncpg.Connection) -> None:
    await conn.execute(CREATE_STAGING)


async def drop_staging(conn: asyncpg.Connection) -> None:
    """Drop the staging table. A connection left mid-protocol (a COPY its job's cancellation cut
    short) or lost cannot run the statement: it is closed instead, and the temporary table ends
    with its session."""
    if conn.is_closed():
        return
    try:
        await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{STAGING}")
    except (asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresError, OSError):
        conn.terminate()


Sealer = Callable[[Row], tuple[Any, ...]]


def row_sealer(conn: asyncpg.Connection, study_id: int, register: bool) -> Sealer:
    """Turns a parsed row into its staged record: the contact values encrypted with their blind
    indexes and, ``register``ing, a valid row's new access code likewise."""
    ring = keys(conn)
    codes: list[str] = []

    def seal(row: Row) -> tuple[Any, ...]:
        row_no, key, first, last, email, phone, identifier, errors = row
        code = None
        if register and not errors:
            if not codes:
                codes.extend(new_access_codes(1000))  # one draw from the system's generator per 1,000
            code = codes.pop()
        values = {"first_name": first, "last_name": last, "email": email, "phone": phone,
                  "identifier": identifier, "access_code": code}  # fmt: skip
        return (row_no, key, *stored_values(ring, study_id, key, values), errors)

    return seal


async def stage(conn: asyncpg.Connection, rows: Sequence[Row], seal: Sealer) -> None:
    """COPY a batch of parsed rows into the staging table (binary COPY, one round trip)."""
    if rows:
        await conn.copy_records_to_table(STAGING, records=_sealed(rows, seal), columns=STAGED_COLUMNS)


async def _sealed(rows: Sequence[Row], seal: Sealer) -> AsyncIterator[tuple[Any, ...]]:
    for i, row in enumerate(rows):
        if i % ENCODE_SLICE == 0:
            await asyncio.sleep(0)
        yield seal(row)


async def stage_csv(
    conn: asyncpg.Connection,
    body: AsyncIterable[bytes],
    scope: Scope,
    max_bytes: int,
    register: bool = False,
    on_progress: Callable[[int, int], Awaitable[None]] | None = None,
) -> BulkCsvParser:
    """Parse ``body`` into a fresh staging table, a batch of rows per COPY; return the parser
    (its counts). ``on_progress(rows, bytes)`` after each COPY. File-level problems raise
    ``ApiError`` from the parser."""
    assert scope.study is not None
    parser = BulkCsvParser(scope.site is not None, max_bytes)
    seal = row_sealer(conn, scope.study["id"], register)
    await create_staging(conn)
    batch: list[Row] = []
    async for chunk in body:
        for start in range(0, len(chunk), PARSE_SLICE):
            batch += parser.feed(chunk[start : start + PARSE_SLICE])
            await asyncio.sleep(0)  # let the loop answer others between slices
            if len(batch) >= COPY_BATCH:
                await stage(conn, batch, seal)
                batch = []
                if on_progress is not None:
                    await on_progress(parser.data_rows, parser.bytes_read)
    batch += parser.close()
    await stage(conn, batch, seal)
    return parser


async def before_commit(conn: asyncpg.Connection) -> None:
    """Seam for tests: runs inside the transaction after the insert, just before the commit."""


OnDecided = Callable[[asyncpg.Connection, "Outcome"], Awaitable[None]]


async def apply(
    conn: asyncpg.Connection,
    scope: Scope,
    candidates: int,
    details: dict[str, Any],
    on_decided: OnDecided | None = None,
    register: bool = False,
) -> Outcome:
    """Decide every staged row and insert the accepted ones, in one transaction.

    ``candidates``: the staged rows without field errors (an upper bound of the rows to add).
    ``details``: what the upload's own audit row says (counts, never values).
    ``on_decided``: runs in the same transaction once every row is decided (the async job records
    its result and final status there, so that the participants and the job commit together).
    ``register``: each added participant is registered for Participate with its own access code.
    """
    study, site = scope.study, scope.site
    assert study is not None
    study_id, site_id = study["id"], site["id"] if site else None
    await conn.execute(f"ANALYZE {STAGING}")  # temp tables get no autovacuum; the planner needs counts
    async with conn.transaction():
        admitted = await lock_study_and_check_cap(conn, study, candidates)
        await conn.execute(MARK_NOT_UNIQUE, study_id)
        if study["enforce_enrollment_cap"]:
            await conn.execute(MARK_PAST_CAP, admitted)
        for _ in range(CODE_DRAWS):
            await conn.execute(INSERT_ACCEPTED, study_id, site_id, scope.user_id, scope.username)
            collided = await conn.fetch(CODE_COLLISIONS, study_id) if register else []
            if not collided:
                break
            await _draw_again(conn, study_id, collided)
        await conn.execute(MARK_LOST_RACE)
        row = await conn.fetchrow(COUNTS)
        assert row is not None
        outcome = Outcome(added=row["added"], failed=row["failed"])
        await audit.record(
            conn,
            scope,
            "participant.bulk_add",
            details={**details, "uploadCount": outcome.added, "failureCount": outcome.failed},
        )
        if on_decided is not None:
            await on_decided(conn, outcome)
        await before_commit(conn)
    return outcome


async def _draw_again(conn: asyncpg.Connection, study_id: int, rows: list[asyncpg.Record]) -> None:
    """New access codes for the staged rows whose code was taken (staged as ``row_sealer`` does)."""
    ring = keys(conn)
    codes = new_access_codes(len(rows))
    sealed_codes = [
        sealed(ring, study_id, r["subject_key"], {"access_code": c}) for r, c in zip(rows, codes, strict=True)
    ]
    await conn.execute(
        NEW_CODES,
        [r["row_no"] for r in rows],
        [c["access_code_ct"] for c in sealed_codes],
        [c["access_code_bidx"] for c in sealed_codes],
    )


async def _cursor_batches(
    conn: asyncpg.Connection, query: str, batch: int
) -> AsyncIterator[list[asyncpg.Record]]:
    async with conn.transaction(readonly=True):
        cursor = await conn.cursor(query)
        while rows := await cursor.fetch(batch):
            yield rows


# Rows fetched per cursor round trip for the summary: each batch becomes JSON on the event loop in
# one go (2,000 rows: about 1 ms), so a million-row summary never holds it long.
SUMMARY_BATCH = 2_000


def failed_rows(conn: asyncpg.Connection, batch: int = SUMMARY_BATCH) -> AsyncIterator[list[asyncpg.Record]]:
    return _cursor_batches(conn, FAILED_ROWS, batch)


def added_rows(conn: asyncpg.Connection, batch: int = SUMMARY_BATCH) -> AsyncIterator[list[asyncpg.Record]]:
    return _cursor_batches(conn, ADDED_ROWS, batch)
