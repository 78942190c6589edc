"""Erasing one participant's personal data for good (docs/erasure.md): the one use-case behind the
API (a data manager's call and an admin's), the console's button and ``participants erase``.

In one transaction: every personal column (ciphertext, blind index and, on a database from before
encryption, the plain column) becomes NULL; the participant is ``removed`` with no Participate
status and ``erased_at`` set (it keeps its ID, OID, site and audit rows); its queued invitations
are cancelled; the Idempotency-Key answers about it are forgotten; every completed extract of its
site read before the erasure expires at once (``expires_at`` now, ``error`` the reason), and an
extract of the site still running is asked to stop. After the commit the files of those extracts
are deleted and their jobs become ``EXPIRED``; a file storage cannot delete now stays due, and the
worker's expiry cron deletes it on its next run (``expire_read_before_erasure`` there also catches
an extract that was running and finished anyway).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from service.core import audit, idempotency
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.protection.fields import BLIND, PERSONAL
from service.core.storage import Storage, StorageError

log = logging.getLogger("participants.erasure")

# The reason an extract expired early, as its job's ``error``: names no participant.
EXTRACT_REASON = "expired: a participant of this site was erased"
INVITATION_REASON = "cancelled: participant erased"

STORED_COLUMNS = tuple(c + "_ct" for c in PERSONAL) + tuple(c + "_bidx" for c in BLIND)


class Erasure(BaseModel):
    """The answer of an erasure (the API's 200)."""

    subjectKey: str
    erasedAt: dt.datetime
    extractsDeleted: int


@dataclass(frozen=True)
class _Done:
    erased_at: dt.datetime
    files: list[tuple[UUID, str | None]]
    bodies: list[str | None]


FIND = """
SELECT p.*, st.oid AS study_oid FROM participants p JOIN studies st ON st.id = p.study_id
WHERE st.oid = $1 AND lower(p.subject_key) = lower($2)
"""


async def find_in_study(conn: asyncpg.Connection, study_oid: str, subject_key: str) -> asyncpg.Record:
    """The participant ``subject_key`` of study ``study_oid`` (an admin's or the CLI's lookup)."""
    row = await conn.fetchrow(FIND, study_oid, subject_key.strip())
    if row is None:
        raise ApiError("participantNotFound", {"studyOid": study_oid, "subjectKey": subject_key[:100]})
    return row


async def _plain_columns(conn: asyncpg.Connection) -> list[str]:
    """The plain personal columns this database still has (a migration drops them one day)."""
    rows = await conn.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = 'participants'
             AND column_name = ANY($1::text[])""",
        list(PERSONAL),
    )
    return sorted(r["column_name"] for r in rows)


# Completed extracts of a site read before an erasure there: they may hold the erased values. A
# job whose first attempt started after the erasure read the row erased.
EXPIRE_SITE_EXTRACTS = """
UPDATE jobs SET expires_at = least(expires_at, now()), error = $2
WHERE type = 'EXTRACT_PARTICIPANTS' AND site_id = $1 AND status = 'COMPLETED'
RETURNING uuid, object_key
"""
STOP_SITE_EXTRACTS = """
UPDATE jobs SET cancel_requested = true
WHERE type = 'EXTRACT_PARTICIPANTS' AND site_id = $1 AND status = 'IN_PROGRESS'
"""
# The same rule over every site, for the expiry cron: an extract that was running during an
# erasure (and did not stop) is expired as soon as it completes.
EXPIRE_READ_BEFORE_ERASURE = """
UPDATE jobs j SET expires_at = now(), error = $1
WHERE j.type = 'EXTRACT_PARTICIPANTS' AND j.status = 'COMPLETED' AND j.expires_at > now()
  AND EXISTS (SELECT 1 FROM participants p
              WHERE p.site_id = j.site_id AND p.erased_at IS NOT NULL
                AND p.erased_at > coalesce(j.started_at, j.created_at))
RETURNING uuid
"""


async def _erase_rows(conn: asyncpg.Connection, actor: Actor, participant_id: int) -> _Done:
    async with conn.transaction():
        row = await conn.fetchrow("SELECT * FROM participants WHERE id = $1 FOR UPDATE", participant_id)
        if row is None:
            raise ApiError("participantNotFound")
        plain = await _plain_columns(conn)
        held = sorted(
            c for c in PERSONAL if row.get(c + "_ct") is not None or (c in plain and row.get(c) is not None)
        )
        columns = (*STORED_COLUMNS, *plain)
        assignments = ", ".join(f"{c} = NULL" for c in columns)
        erased_at: dt.datetime = await conn.fetchval(
            f"""UPDATE participants SET {assignments}, status = 'removed', participate_status = '',
                       erased_at = coalesce(erased_at, now()), updated_at = now(), updated_by = $2
                WHERE id = $1 RETURNING erased_at""",
            participant_id,
            actor.user_id,
        )
        cancelled = await conn.fetchval(
            """WITH c AS (UPDATE invitations SET status = 'FAILED', last_error = $2
                          WHERE participant_id = $1 AND status = 'QUEUED' RETURNING 1)
               SELECT count(*) FROM c""",
            participant_id,
            INVITATION_REASON,
        )
        bodies = await idempotency.forget_participant(conn, participant_id)
        files: list[tuple[UUID, str | None]] = []
        again = row["erased_at"] is not None
        # Extracts are per site: a study-level participant is in none. Erased before: every extract
        # read since then read it erased, and those from before were expired then.
        if row["site_id"] is not None and not again:
            jobs = await conn.fetch(EXPIRE_SITE_EXTRACTS, row["site_id"], EXTRACT_REASON)
            files = [(j["uuid"], j["object_key"]) for j in jobs]
            await conn.execute(STOP_SITE_EXTRACTS, row["site_id"])
        details: dict[str, Any] = {
            "fields": held,  # names only: the values are gone
            "statusBefore": row["status"],
            "again": again,
            "extractsExpired": len(files),
            "invitationsCancelled": cancelled,
            "idempotentAnswersForgotten": len(bodies),
        }
        await audit.record_on_participant(conn, actor, "participant.erase", row, details)
    return _Done(erased_at, files, bodies)


async def delete_expired_files(
    conn: asyncpg.Connection, storage: Storage, files: list[tuple[UUID, str | None]]
) -> int:
    """Delete each job's file and mark the job ``EXPIRED``; return how many are. A file storage
    cannot delete now keeps its job due (``expires_at`` passed) for the expiry cron."""
    done = 0
    for job_uuid, object_key in files:
        if object_key:
            try:
                await storage.delete(object_key)
                await storage.discard_partials(object_key)
            except (StorageError, OSError) as exc:
                extra = {"job_uuid": str(job_uuid), "error": type(exc).__name__}
                log.warning(
                    "could not delete an extract after an erasure; the expiry cron retries", extra=extra
                )
                continue
        await conn.execute(
            "UPDATE jobs SET status = 'EXPIRED' WHERE uuid = $1 AND status = 'COMPLETED'", job_uuid
        )
        done += 1
    return done


async def erase(
    conn: asyncpg.Connection, storage: Storage, actor: Actor, participant: asyncpg.Record
) -> Erasure:
    """Erase ``participant`` (a row found by the caller, who checked the caller's right to erase).
    Erasing again changes nothing more and answers the first erasure's time."""
    done = await _erase_rows(conn, actor, participant["id"])
    deleted = await delete_expired_files(conn, storage, done.files)
    for key in filter(None, done.bodies):
        with contextlib.suppress(StorageError, OSError):  # a bulk summary: subject keys and codes only
            await storage.delete(key)
    log.info("participant erased", extra={"participant_id": participant["id"], "extracts": deleted})
    return Erasure(subjectKey=participant["subject_key"], erasedAt=done.erased_at, extractsDeleted=deleted)


async def expire_read_before_erasure(conn: asyncpg.Connection) -> list[UUID]:
    """Completed extracts that started before an erasure at their site: due now (the cron then
    deletes their files). Returns their UUIDs."""
    rows = await conn.fetch(EXPIRE_READ_BEFORE_ERASURE, EXTRACT_REASON)
    return [r["uuid"] for r in rows]


class ErasureEntry(BaseModel):
    studyOid: str
    siteOid: str | None
    subjectKey: str
    participantId: int
    erasedAt: dt.datetime


async def erasures_since(conn: asyncpg.Connection, since: dt.datetime | None) -> list[ErasureEntry]:
    """Every erasure at or after ``since`` (all when None), oldest first: what to apply again after
    restoring a backup taken before them."""
    rows = await conn.fetch(
        """SELECT st.oid AS study_oid, si.oid AS site_oid, p.subject_key, p.id, p.erased_at
           FROM participants p JOIN studies st ON st.id = p.study_id LEFT JOIN sites si ON si.id = p.site_id
           WHERE p.erased_at IS NOT NULL AND ($1::timestamptz IS NULL OR p.erased_at >= $1)
           ORDER BY p.erased_at, p.id""",
        since,
    )
    return [
        ErasureEntry(
            studyOid=r["study_oid"],
            siteOid=r["site_oid"],
            subjectKey=r["subject_key"],
            participantId=r["id"],
            erasedAt=r["erased_at"],
        )
        for r in rows
    ]
