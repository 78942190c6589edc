"""Participants written straight to the table, encrypted as the service writes them: what the
benchmarks and the tests seed sites with (many rows at once, values the API would refuse too).

One binary COPY per call; the OID is made from the ID, unique within the study as long as the IDs
are, without participant_oid()'s lookup.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

from service.core.protection.fields import PERSONAL, STORED, keys, stored_values

COLUMNS = ["study_id", "site_id", "subject_key", "oid", "status", "participate_status", *STORED]


def synthetic_oid(subject_key: str) -> str:
    return "SS_" + re.sub(r"[^A-Za-z0-9]", "", subject_key).upper() + "_" + hashlib.md5(subject_key.encode()).hexdigest()[:8]


async def add_participants(
    conn: asyncpg.Connection,
    study_id: int,
    site_id: int | None,
    people: Iterable[Mapping[str, Any]],
) -> int:
    """Each of ``people`` (a mapping with ``subject_key``, optionally ``status``,
    ``participate_status`` and any personal column of fields.PERSONAL) as a new participant."""
    ring = keys(conn)
    records = []
    for p in people:
        key = p["subject_key"]
        values = {c: p.get(c) for c in PERSONAL}
        records.append(
            (study_id, site_id, key, p.get("oid") or synthetic_oid(key), p.get("status", "available"),
             p.get("participate_status", "CREATED" if values["access_code"] else ""),
             *stored_values(ring, study_id, key, values))
        )  # fmt: skip
    await conn.copy_records_to_table("participants", records=records, columns=COLUMNS)
    return len(records)
