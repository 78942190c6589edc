"""Participants as the tests see them in Postgres: seeded encrypted (service/dev/synthetic.py) and
read back decrypted with the run's keyring, which the tests' pool carries."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.core.protection.fields import keys, sealed, with_personal
from service.dev.synthetic import add_participants


async def person(pool: asyncpg.Pool, subject_key: str) -> dict[str, Any] | None:
    """The participant with this ID (any study), its personal columns in clear."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM participants WHERE subject_key = $1", subject_key)
        return await with_personal(conn, row)


async def seed(pool: asyncpg.Pool, study_oid: str, site_oid: str | None, people: list[dict[str, Any]]) -> int:
    """``people`` (see add_participants) at a site of the study (None: study level)."""
    async with pool.acquire() as conn:
        ids = await conn.fetchrow(
            "SELECT st.id AS study_id, si.id AS site_id FROM studies st"
            " LEFT JOIN sites si ON si.oid = $2 AND si.study_id = st.id WHERE st.oid = $1",
            study_oid,
            site_oid,
        )
        assert ids is not None, study_oid
        return await add_participants(conn, ids["study_id"], ids["site_id"], people)


async def everyone(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every participant in ID order, personal columns in clear."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM participants ORDER BY subject_key, id")
        return [p for r in rows if (p := await with_personal(conn, r)) is not None]


async def code_of(pool: asyncpg.Pool, subject_key: str | None = None) -> str | None:
    """The participant's access code in clear (the only participant's, without an ID)."""
    found = await person(pool, subject_key) if subject_key else (await everyone(pool))[0]
    assert found is not None, subject_key
    return found["access_code"]


async def change_personal(pool: asyncpg.Pool, participant_id: int, column: str, value: str | None) -> None:
    """Write one personal column behind the service's back (as another process would), encrypted."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT study_id, subject_key FROM participants WHERE id = $1", participant_id
        )
        stored = sealed(keys(conn), row["study_id"], row["subject_key"], {column: value})
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(stored))
        await conn.execute(f"UPDATE participants SET {sets} WHERE id = $1", participant_id, *stored.values())
