"""The extract decrypts in the worker: its CSV is byte for byte what COPY of the plaintext with the SQL
guards made; rows under two field keys (a rotation under way) come out whole; a ciphertext moved
from another participant fails the job instead of putting a wrong value in the file."""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

import pytest

from service.core.extract_csv import Encoder
from service.core.extract_options import ExtractOptions
from service.core.extracts import CSV_HEADER, extract_select
from service.core.protection.fields import keys
from service.core.protection.keyring import INSERT_KEY, Keyring
from service.worker.context import shutdown, startup
from service.worker.extract import extract_participants_job
from service.worker.failures import UNREADABLE_DATA
from tests.test_extract import HEADER, add_participant, download, parse_csv, run_jobs, submit
from tests.world import SITE_A

# Values COPY quotes or the guard changes, and ordinary ones.
VALUES = [
    "", "a,b", 'q"q', "line\nx", "cr\rx", "\r", "=1", "+1 555", "+1 555\n", "+12 34", "+1234 5",
    "-", "@x", "\tx", "＝x", "＋1 555", "﹦y", "Émile", "Ｚoë", " sp ", "x\ty", "名前", "plain", None,
]  # fmt: skip
STUDY_ID = 7
PERSONAL = ("first_name", "last_name", "email", "phone", "identifier", "access_code")


async def _copy_of_plaintext(conn: Any, rows: list[tuple[str, str | None]]) -> str:
    """What the extract was before: COPY of the plaintext through the SQL guards."""
    await conn.execute("CREATE TEMP TABLE plain_rows (n int, k text, v text) ON COMMIT DROP")
    await conn.executemany(
        "INSERT INTO plain_rows VALUES ($1, $2, $3)", [(n, k, v) for n, (k, v) in enumerate(rows)]
    )
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(
        "SELECT csv_guard(k), csv_guard(v), csv_guard(v), csv_guard(v), csv_guard_phone(v), csv_guard(v),"
        " csv_guard(v), csv_guard(nullif(v, '')) FROM plain_rows ORDER BY n",
        output=sink,
        format="csv",
    )
    return b"".join(chunks).decode()


def _records(ring: Keyring, rows: list[tuple[str, str | None]], plain: bool) -> list[tuple[Any, ...]]:
    """Records as the extract's query reads them: encrypted, or (``plain``) from before encryption."""
    out = []
    for k, v in rows:
        if plain:
            out.append((k, v or "", *([None] * 6), *([v] * 6)))
        else:
            out.append((k, v or "", *(ring.encrypt(STUDY_ID, k, c, v) for c in PERSONAL)))
    return out


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain columns"])
async def test_csv_is_byte_for_byte_what_copy_made(pool, plain):
    rows = [(f"K{n:02d}", v) for n, v in enumerate(VALUES)] + [("=key", "x"), ("", "y")]
    async with pool.acquire() as conn, conn.transaction():
        expected = await _copy_of_plaintext(conn, rows)
        ring = keys(conn)
    _, cells = extract_select(1, ExtractOptions(), frozenset(PERSONAL) if plain else frozenset())
    encoder = Encoder(STUDY_ID, cells, ring.field_keys, participate=True)
    records = _records(ring, rows, plain)
    got = encoder.batch(records)
    assert got.splitlines(keepends=True) == expected.splitlines(keepends=True)
    # Row by row too: most batches take Python's writer, those with an empty string or a CR not.
    assert "".join(encoder.batch([r]) for r in records) == expected


async def test_without_participate_info_the_last_two_cells_are_empty(pool):
    async with pool.acquire() as conn:
        ring = keys(conn)
    _, cells = extract_select(1, ExtractOptions(include_participate=False))
    encoder = Encoder(STUDY_ID, cells, ring.field_keys, participate=False)
    record = _records(ring, [("K1", "=v")], plain=False)[0][:-1]  # the query leaves the access code out
    assert encoder.batch([record]) == "K1,'=v,'=v,'=v,'=v,'=v,,\n"


async def _rotate(pool: Any) -> tuple[int, int]:
    """A second field key made active, the first one retiring, as a rotation begins: (old, new)."""
    async with pool.acquire() as conn:
        ring = keys(conn)
        old = ring.active_field_key
        await conn.execute("UPDATE data_keys SET state = 'retiring' WHERE id = $1", old)
        await conn.execute(
            INSERT_KEY, "fields", await ring.kek.wrap(os.urandom(32), "fields"), ring.kek.kek_id
        )
        await ring.refresh(conn)
        return old, ring.active_field_key


async def _rotate_back(pool: Any, old: int, new: int) -> None:
    """The run's keys as they were (they last the whole test run)."""
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM data_keys WHERE id = $1", new)
        await conn.execute("UPDATE data_keys SET state = 'active' WHERE id = $1", old)
        await keys(conn).refresh(conn)


async def test_rows_under_two_field_keys_come_out_whole(client, world, pool, settings):
    await world.standard()
    for n in range(3):
        await add_participant(pool, SITE_A, f"OLD-{n}", first_name=f"Old{n}", email=f"old{n}@example.org")
    job_uuid = await submit(client, world)
    # The worker loads its keys before the rotation: the new key's rows make it read them again.
    ctx: dict[str, Any] = {"settings": settings}
    await startup(ctx)
    old, new = await _rotate(pool)
    try:
        for n in range(3):
            await add_participant(pool, SITE_A, f"NEW-{n}", first_name=f"New{n}", email=f"new{n}@example.org")
        under = await pool.fetch("SELECT substring(first_name_ct for 4) AS k FROM participants")
        assert {Keyring.key_of(bytes(r["k"])) for r in under} == {old, new}
        assert await extract_participants_job(ctx, job_uuid) == "COMPLETED"
    finally:
        await shutdown(ctx)
        await _rotate_back(pool, old, new)
    resp = await download(client, world, job_uuid)
    rows = parse_csv(await resp.read())
    assert rows[0] == HEADER
    assert [(r[0], r[1], r[3]) for r in rows[1:]] == [
        *((f"NEW-{n}", f"New{n}", f"new{n}@example.org") for n in range(3)),
        *((f"OLD-{n}", f"Old{n}", f"old{n}@example.org") for n in range(3)),
    ]


async def test_a_ciphertext_moved_from_another_participant_fails_the_job(
    client, world, pool, settings, caplog
):
    await world.standard()
    await add_participant(pool, SITE_A, "MOVED-1", first_name="Victim", last_name="One")
    await add_participant(pool, SITE_A, "MOVED-2", first_name="Intruder", last_name="Two")
    await pool.execute(
        "UPDATE participants SET first_name_ct = (SELECT first_name_ct FROM participants WHERE subject_key = 'MOVED-2')"
        " WHERE subject_key = 'MOVED-1'"
    )
    caplog.set_level("DEBUG")
    job_uuid = await submit(client, world)
    await run_jobs(settings)
    job = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1", UUID(job_uuid))
    assert job["status"] == "FAILED" and job["error"] == UNREADABLE_DATA, (job["status"], job["error"])
    assert not (settings.storage_dir / job["object_key"]).exists()
    for secret in ("Victim", "Intruder", "MOVED-1", "MOVED-2"):
        assert secret not in caplog.text and secret not in job["error"]


def test_header_is_the_files_first_line():
    assert CSV_HEADER.split(",") == HEADER
