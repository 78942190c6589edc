"""Participants as the tests see them in Postgres: seeded encrypted (service/dev/synthetic.py) and
read back decrypted with the run's keyring, which the tests' pool carries."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.core.protection.fields import with_personal
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
