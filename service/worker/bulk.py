"""The asynchronous bulk upload job: the stored CSV, streamed from object storage through the same
parser and the same set-based SQL as the synchronous endpoint.

All or nothing, and safe to run more than once (arq's rule): the participants, their audit rows,
the result file's metadata, the job's ``COMPLETED`` status and its webhook event commit in one
transaction. The result CSV (``Row,ParticipantID,Status,Message``) is written by Postgres' COPY
straight into storage from inside that transaction, before the commit; a re-run after a crash
overwrites the same object. The uploaded file holds personal data and is deleted once the job is
final.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from typing import Any
from uuid import UUID

import asyncpg
from arq.cron import CronJob
from arq.worker import func

from service.core.bulk import staging
from service.core.bulk.summary import (
    added_entries,
    failed_entries,
    failure_body,
    result_object_key,
    shown_params,
    summary_head,
)
from service.core.errors import ApiError
from service.core.files import content_disposition
from service.core.jobs import attempts, lifecycle
from service.core.jobs.model import BULK_FUNCTION, CANCELLED, COMPLETED, FAILED
from service.core.roles import check_bulk_allowed, load_scope
from service.core.storage import Storage, StorageError, StorageNotFound
from service.settings import Settings
from service.worker.copy_to_storage import copy_query_to_storage
from service.worker.failures import StopRequested, failure_reason
from service.worker.heartbeats import Heartbeats
from service.worker.retries import Claimed, can_retry, hand_back, is_outage

log = logging.getLogger("participants.worker.bulk")

# A million-row file takes a couple of minutes; arq cancels a job past its timeout.
BULK_JOB_TIMEOUT_SECONDS = 3600
# The job status carries the summary; past this many entries per list it is cut short (the
# result file has every row) and says so with "truncated": true.
RESULT_LIST_MAX = 10_000

# The result file, by COPY: the formula-injection guard of the extract (sql/0003_extract.sql).
RESULT_SELECT = f"""
SELECT row_no AS "Row", csv_guard(subject_key) AS "ParticipantID",
       CASE WHEN added THEN 'Added' ELSE 'Failed' END AS "Status",
       array_to_string(ARRAY(SELECT 'errorCode.' || e FROM unnest(errors) AS e), '; ') AS "Message"
FROM {staging.STAGING}
ORDER BY row_no
"""


class Superseded(Exception):
    """Another attempt owns the job now: roll this one back."""


async def job_summary(
    conn: asyncpg.Connection, outcome: staging.Outcome, created_by: str, created_at: str
) -> dict[str, Any]:
    """The synchronous endpoint's JSON summary, its lists cut at ``RESULT_LIST_MAX``."""
    failed = await conn.fetch(staging.FAILED_ROWS + " LIMIT $1", RESULT_LIST_MAX)
    added = await conn.fetch(staging.ADDED_ROWS + " LIMIT $1", RESULT_LIST_MAX)
    body = {
        **summary_head(outcome.added, outcome.failed, "SUCCESS", created_by, created_at),
        "failedParticipants": failed_entries(list(failed)),
        "participants": added_entries(list(added)),
    }
    if outcome.added > RESULT_LIST_MAX or outcome.failed > RESULT_LIST_MAX:
        body["truncated"] = True
    return body


async def bulk_add_participants_job(ctx: dict[str, Any], job_uuid_str: str) -> str:
    """One attempt; an outage under it (Postgres, storage) hands the job back to run again soon
    (nothing of the attempt committed: its insert and its status are one transaction)."""
    claimed = Claimed()
    try:
        return await _bulk_add(ctx, job_uuid_str, claimed)
    except Exception as exc:
        # Before its claim nothing of the job ran: arq drops the message and the sweeper queues
        # the job again from its row (IN_QUEUE) once Postgres answers.
        if not is_outage(exc) or claimed.attempt is None:
            raise
        return await hand_back(ctx, UUID(job_uuid_str), claimed.attempt, exc)


async def _bulk_add(ctx: dict[str, Any], job_uuid_str: str, claimed: Claimed) -> str:
    settings: Settings = ctx["settings"]
    pool: asyncpg.Pool = ctx["db"]
    storage: Storage = ctx["storage"]
    job_uuid = UUID(job_uuid_str)
    started = time.monotonic()

    async with pool.acquire() as conn, contextlib.AsyncExitStack() as stack:
        job = await attempts.claim_or_give_up(conn, job_uuid, settings)
        if job is None:
            return "skipped"
        attempt: int = job["attempts"]
        claimed.attempt = attempt
        heartbeats: Heartbeats = ctx["heartbeats"]
        beat = stack.enter_context(heartbeats.track(job_uuid, attempt))
        upload_key: str = job["params"]["uploadKey"]
        created_at: str = job["params"].get("createdAt", "")

        async def end(ended: Awaitable[bool], status: str) -> str:
            """This attempt's final status; the upload goes once the job is final (it holds personal data)."""
            if await ended:
                await _delete_upload(storage, upload_key)
            return status

        async def fail(reason: str) -> str:
            return await end(lifecycle.fail_job(conn, job_uuid, reason, attempt), FAILED)

        async def cancelled() -> str:
            return await end(lifecycle.cancel_attempt(conn, job_uuid, attempt), CANCELLED)

        if job["cancel_requested"]:
            return await cancelled()
        # The owner's rights and the study's state are checked again: they may have changed since.
        scope = await load_scope(conn, job["owner_username"], job["study_oid"], job["site_oid"])

        upload_bytes = int(job["params"].get("uploadBytes") or 0)

        async def on_progress(rows_done: int, bytes_read: int) -> None:
            # The worker's heartbeat records them. Until the whole file is read its row count is
            # an estimate from its size (labelled so on the wire).
            beat.rows_done = rows_done
            if upload_bytes and bytes_read:
                beat.rows_expected = max(rows_done, round(rows_done * upload_bytes / bytes_read))
                beat.estimated = True
            if beat.stop:
                raise StopRequested

        result_key = result_object_key(job_uuid, attempt)

        async def on_decided(tx: asyncpg.Connection, outcome: staging.Outcome) -> None:
            made = await copy_query_to_storage(
                tx,
                storage,
                result_key,
                RESULT_SELECT,
                content_disposition_value=content_disposition(job["file_name"]),
            )
            summary = await job_summary(tx, outcome, scope.full_name, created_at)
            made = dataclasses.replace(made, result=summary, rows_expected=beat.rows_expected)
            # In the insert's transaction: the participants and the job's COMPLETED commit together.
            retention = dt.timedelta(hours=settings.job_retention_hours)
            if not await lifecycle.complete_job(tx, job_uuid, attempt, made, retention):
                raise Superseded

        try:
            check_bulk_allowed(scope)
            await attempts.enter_phase(conn, beat, "reading")
            register = bool(job["params"].get("register"))
            parser = await staging.stage_csv(
                conn,
                storage.read_stream(upload_key),
                scope,
                settings.bulk_max_bytes,
                register,
                on_progress=on_progress,
            )
            beat.rows_done = beat.rows_expected = parser.data_rows
            beat.estimated = False
            # Deciding and inserting every row is one transaction, long for a large file (about 11 s
            # for 200,000 rows): a phase of its own, so the status does not sit at 100 % unexplained.
            await attempts.enter_phase(conn, beat, "committing")
            outcome = await staging.apply(
                conn,
                scope,
                parser.valid_rows,
                {"rows": parser.data_rows, "bytes": parser.bytes_read, "jobUuid": job_uuid_str},
                on_decided=on_decided,
                register=register,
            )
        except ApiError as err:
            # A file-level failure: the job FAILED, its result the synchronous endpoint's failure body.
            body = failure_body(err.code, scope.full_name, created_at, shown_params(err.code, err.params))
            return await end(
                lifecycle.fail_job(conn, job_uuid, f"errorCode.{err.code}", attempt, result=body), FAILED
            )
        except StopRequested:
            return await cancelled()
        except Superseded:
            await _delete_upload(storage, result_key)  # this attempt's file; the upload is the winner's
            return "superseded"
        except StorageNotFound:
            return await fail("storage: upload missing")
        except asyncio.CancelledError:
            # arq cancels on timeout (final) and on worker shutdown (it runs the job again).
            if time.monotonic() - started >= BULK_JOB_TIMEOUT_SECONDS * 0.95:
                await asyncio.shield(fail("timed out"))
            raise
        except (StorageError, asyncpg.PostgresError) as exc:
            await _delete_upload(storage, result_key)  # written before a rollback, perhaps
            if is_outage(exc) and can_retry(settings, attempt):
                raise  # handed back on a fresh connection (retries.hand_back)
            reason = failure_reason(exc)
            log.warning("bulk upload job failed", extra={"job_uuid": job_uuid_str, "reason": reason})
            return await fail(reason)
        finally:
            await asyncio.shield(staging.drop_staging(conn))
    await _delete_upload(storage, upload_key)
    log.info(
        "bulk upload job finished",
        extra={"job_uuid": job_uuid_str, "added": outcome.added, "failed": outcome.failed},
    )
    return COMPLETED


async def _delete_upload(storage: Storage, key: str) -> None:
    """Delete a job's object (the upload, or an attempt's result file that did not commit)."""
    try:
        await storage.delete(key)
    except StorageError as exc:  # the file stays until someone deletes it; the job is final anyway
        log.warning("could not delete a bulk job object", extra={"error": type(exc).__name__})


# As for extracts: Postgres counts the attempts, so arq's own count never stops a re-run first, and
# no result is kept in Redis, so a delivery that ended before its claim never keeps the sweeper
# from enqueueing the same UUID again.
FUNCTIONS: list[Any] = [
    func(
        bulk_add_participants_job,
        name=BULK_FUNCTION,
        timeout=BULK_JOB_TIMEOUT_SECONDS,
        keep_result=0,
        max_tries=1000,
    )
]
CRON_JOBS: list[CronJob] = []
