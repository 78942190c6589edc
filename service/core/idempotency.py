"""Retry-safe submits: the rules and SQL behind the ``Idempotency-Key`` request header.

A CTMS that timed out sends the same request again. The first request claims ``(user, key)`` in its
own short statement before any work; its answer (2xx or 4xx) is then kept for ``retention`` and a
retry gets that answer again instead of a second participant, job or upload. The same key with a
different request is ``idempotencyKeyReused`` (422); a retry while the first is still being worked
on is ``requestInProgress`` (409). A 5xx or 429 is not kept: the claim is released so a retry runs.

A kept body is sealed under the active field key (core/protection/blobs.py): a connect call's
answer holds a participant's contact data. An answer about one participant names it
(``participant_id``), and erasing that participant deletes the answer (core/erasure.py).

A claim whose request never finished (its process died) is taken over after ``lease``: longer
than any request may run, so a slow request is never run twice at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from service.core.errors import ApiError
from service.core.protection.blobs import opened_blob, seal
from service.core.protection.fields import keys

MAX_KEY_LENGTH = 255
# Answers kept with the key: those that cannot change on a retry. Not kept: anything else, which
# a retry should meet afresh.
KEPT_HEADERS = ("Content-Type", "Location", "Job-Uuid", "Retry-After", "WWW-Authenticate")
SEAL_PURPOSE = "idempotency"


def _context(username: str, key: str) -> bytes:
    """A kept body's associated data: it opens only as the answer of this user's key."""
    return username.encode() + b"\x1f" + key.encode()


def transient(status: int) -> bool:
    """Answers not kept: a 5xx (an outage) and a 429 (a quota that frees up) would be wrong for
    the retry, which runs the work afresh."""
    return status >= 500 or status == 429


@dataclass(frozen=True)
class Kept:
    """The first request's answer."""

    status: int
    headers: dict[str, str]
    body: bytes | None
    body_key: str | None  # the body is in object storage (a large streamed answer)


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise ApiError("invalidIdempotencyKey", {"maxLength": MAX_KEY_LENGTH})
    return key


def fingerprint(method: str, target: str, body_digest: bytes) -> bytes:
    """What makes two requests "the same": method, decoded path with its query, the body's SHA-256."""
    return hashlib.sha256(b"\0".join((method.encode(), target.encode(), body_digest))).digest()


async def claim(
    conn: asyncpg.Connection, username: str, key: str, print_: bytes, retention: float, lease: float
) -> Kept | None:
    """Claim ``key`` for this request (None: go ahead and do the work), or the kept answer.

    A new key is inserted; an expired one, or an abandoned claim past its lease, is taken over;
    otherwise the existing row decides (422 for another request, 409 while in flight). The read is
    a statement of its own so that it sees a claim another request committed a moment ago.
    """
    for _ in range(3):  # the row may vanish between the two statements (released, purged)
        mine = await conn.fetchval(
            """
            INSERT INTO idempotency_keys AS k (username, key, fingerprint) VALUES ($1, $2, $3)
            ON CONFLICT (username, key) DO UPDATE
               SET fingerprint = EXCLUDED.fingerprint, created_at = now(), status = NULL,
                   headers = NULL, body = NULL, body_key = NULL, sealed = false, participant_id = NULL
             WHERE k.created_at < now() - $4::float8 * interval '1 second'
                OR (k.status IS NULL AND k.created_at < now() - $5::float8 * interval '1 second')
            RETURNING true
            """,
            username, key, print_, retention, lease,
        )  # fmt: skip
        if mine:
            return None
        row = await conn.fetchrow(
            "SELECT fingerprint, status, headers, body, body_key, sealed FROM idempotency_keys"
            " WHERE username = $1 AND key = $2",
            username, key,
        )  # fmt: skip
        if row is None:
            continue
        if row["fingerprint"] != print_:
            raise ApiError("idempotencyKeyReused")
        if row["status"] is None:
            raise ApiError("requestInProgress", headers={"Retry-After": "1"})
        headers = orjson.loads(row["headers"]) if row["headers"] else {}
        body = row["body"]
        if body is not None and row["sealed"]:
            body = await opened_blob(conn, SEAL_PURPOSE, _context(username, key), body)
        return Kept(row["status"], headers, body, row["body_key"])
    raise ApiError("requestInProgress", headers={"Retry-After": "1"})


async def keep(
    conn: asyncpg.Connection, username: str, key: str, status: int, headers: dict[str, Any],
    body: bytes | None, body_key: str | None = None, participant_id: int | None = None,
) -> None:  # fmt: skip
    """Keep the answer, its body sealed; ``participant_id``: the participant it is about, if any."""
    if body is not None:
        body = seal(keys(conn), SEAL_PURPOSE, _context(username, key), body)
    await conn.execute(
        "UPDATE idempotency_keys SET status = $3, headers = $4::jsonb, body = $5, body_key = $6,"
        " sealed = $5::bytea IS NOT NULL, participant_id = $7 WHERE username = $1 AND key = $2",
        username, key, status, orjson.dumps(headers).decode(), body, body_key, participant_id,
    )  # fmt: skip


async def release(conn: asyncpg.Connection, username: str, key: str) -> None:
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE username = $1 AND key = $2 AND status IS NULL", username, key
    )


async def forget_participant(conn: asyncpg.Connection, participant_id: int) -> list[str | None]:
    """Forget every kept answer about ``participant_id``; return their storage keys (to delete)."""
    rows = await conn.fetch(
        "DELETE FROM idempotency_keys WHERE participant_id = $1 RETURNING body_key", participant_id
    )
    return [r["body_key"] for r in rows]


async def purge_expired(conn: asyncpg.Connection, retention: float, batch: int) -> list[str | None]:
    """Forget answers older than ``retention``; return their storage keys (to delete)."""
    rows = await conn.fetch(
        """
        DELETE FROM idempotency_keys WHERE ctid IN (
            SELECT ctid FROM idempotency_keys
            WHERE created_at < now() - $1::float8 * interval '1 second' LIMIT $2)
        RETURNING body_key
        """,
        retention,
        batch,
    )
    return [r["body_key"] for r in rows]


UNDER_KEYS = """
SELECT username, key, body FROM idempotency_keys
WHERE sealed AND substring(body FROM 1 FOR 4) = ANY($1::bytea[])
FOR UPDATE
"""


async def reseal_bodies(conn: asyncpg.Connection, prefixes: list[bytes]) -> int:
    """Re-encrypt under the active field key the kept bodies sealed under a key ``prefixes`` name
    (a field-key rotation's retiring ones), in the caller's transaction, before that key goes:
    a retry after the rotation still replays its answer. Returns how many."""
    ring = keys(conn)
    rows = await conn.fetch(UNDER_KEYS, prefixes)
    for r in rows:
        context = _context(r["username"], r["key"])
        plain = await opened_blob(conn, SEAL_PURPOSE, context, bytes(r["body"]))
        await conn.execute(
            "UPDATE idempotency_keys SET body = $3 WHERE username = $1 AND key = $2",
            r["username"],
            r["key"],
            seal(ring, SEAL_PURPOSE, context, plain),
        )
    return len(rows)
