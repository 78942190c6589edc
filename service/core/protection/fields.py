"""Participants' personal fields in and out of their ciphertext columns.

Each personal column ``c`` is stored as ``c_ct`` (AES-256-GCM, keyring.py); the ones looked up by
value also as ``c_bidx`` (a blind index). The keyring travels with the database connection
(``keys``): every pool and command connection of a process carries the one it loaded.

A row not yet encrypted (a database from before encryption, until ``participants encrypt-existing``
has passed it) still holds the plain column, and reads take it from there: rows are read whole
(``p.*``), so the plain columns are simply absent once a migration has dropped them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from service.core.protection.keyring import Keyring, UnknownDataKey

CONTACT = ("first_name", "last_name", "email", "phone", "identifier")
PERSONAL = (*CONTACT, "access_code")
# Looked up by value: exact-match search (names, identifier) and the access code (unique).
BLIND = ("first_name", "last_name", "identifier", "access_code")
# The access code's index is global (codes are unique across studies); the others are per study.
GLOBAL_BLIND = ("access_code",)


def keys(conn: Any) -> Keyring:
    """The keyring ``conn`` carries (set when its pool or command connection was opened)."""
    ring: Keyring | None = getattr(conn, "keyring", None)
    if ring is None:
        raise RuntimeError("this connection carries no keyring: open it with the process's keys")
    return ring


def blind_of(ring: Keyring, column: str, value: str | None, study_id: int) -> bytes | None:
    return ring.blind(column, value, None if column in GLOBAL_BLIND else study_id)


# Every stored personal column, in the order the INSERT statements list them.
STORED = tuple(c + "_ct" for c in PERSONAL) + tuple(c + "_bidx" for c in BLIND)
STORED_LIST = ", ".join(STORED)
# The personal column each of ``STORED`` holds.
_STORED_FROM = PERSONAL + BLIND


def sealed(
    ring: Keyring, study_id: int, subject_key: str, values: Mapping[str, str | None]
) -> dict[str, Any]:
    """Column -> stored value for each personal column in ``values`` only (an update of some of
    them): its ciphertext and, for a looked-up column, its blind index (``stored_values``'s)."""
    stored = zip(STORED, _STORED_FROM, stored_values(ring, study_id, subject_key, values), strict=True)
    return {column: value for column, personal, value in stored if personal in values}


def stored_values(
    ring: Keyring, study_id: int, subject_key: str, values: Mapping[str, str | None]
) -> list[Any]:
    """The values of ``STORED``, in order, for a row whose personal columns hold ``values`` (a
    column missing from it: None, as for a new participant)."""
    personal = tuple(values.get(c) for c in PERSONAL)
    out: list[Any] = ring.encrypt_all(study_id, subject_key, PERSONAL, personal)
    out += (blind_of(ring, column, values.get(column), study_id) for column in BLIND)
    return out


def _open(ring: Keyring, row: Mapping[str, Any], columns: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    study_id, subject_key = row["study_id"], row["subject_key"]
    for column in columns:
        blob = row.get(column + "_ct")
        if blob is None:
            out[column] = row.get(column)  # not encrypted yet (or never given): the plain column, if any
        else:
            out[column] = ring.decrypt(study_id, subject_key, column, blob)
    return out


async def opened(
    conn: asyncpg.Connection, row: Mapping[str, Any], columns: tuple[str, ...] = PERSONAL
) -> dict[str, str | None]:
    """The row's personal fields in clear. A key this process has not loaded yet (a rotation just
    began elsewhere) makes it read the key table once more."""
    ring = keys(conn)
    try:
        return _open(ring, row, columns)
    except UnknownDataKey:
        await ring.refresh(conn)
        return _open(ring, row, columns)


async def opened_rows(
    conn: asyncpg.Connection, rows: list[asyncpg.Record], columns: tuple[str, ...] = PERSONAL
) -> list[dict[str, str | None]]:
    ring = keys(conn)
    try:
        return [_open(ring, r, columns) for r in rows]
    except UnknownDataKey:
        await ring.refresh(conn)
        return [_open(ring, r, columns) for r in rows]


async def with_personal(conn: asyncpg.Connection, row: asyncpg.Record | None) -> dict[str, Any] | None:
    """``row`` as a dict whose personal columns hold their values in clear (for code that renders
    them, an invitation say: never stored, never logged)."""
    if row is None:
        return None
    return {**dict(row), **await opened(conn, row)}


def has_plaintext(row: Mapping[str, Any]) -> bool:
    """The row still holds a personal field in a plain column (from before encryption)."""
    return any(row.get(c) is not None for c in PERSONAL)
