"""The extract job: one site's participants, decrypted in the worker and streamed as CSV straight
into object storage.

A server-side cursor reads the rows in batches (worker/extract_rows.py); each batch is decrypted,
guarded against formulas and quoted as COPY would (core/extract_csv.py), then hashed, counted and
written to a streaming multipart upload in 1 MiB blocks (worker/copy_to_storage.py). Nothing is
held whole in memory or on local disk. The object becomes visible only when the upload completes,
and the job is ``COMPLETED`` only after that, so a partial file is never downloadable. A ciphertext
that does not open under its row (moved from another participant, edited) fails the job with
``errorCode.unreadableData``: the file never holds a wrong person's value.

Safe to run more than once (arq's rule): a finished job is skipped, a re-run overwrites the same
object key and the same row. The site's rows are counted first (the status shows the total from
the start); the worker's heartbeat (worker/heartbeats.py) records the rows written every
``job_heartbeat_seconds``; between blocks the job stops if that heartbeat found it cancelled or
superseded.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from typing import Any
from uuid import UUID

import asyncpg
from arq.worker import func

from service.core.extract_options import ExtractOptions
from service.core.extracts import start_writing
from service.core.files import content_disposition
from service.core.jobs import attempts, lifecycle
from service.core.jobs.model import CANCELLED, COMPLETED, EXTRACT_FUNCTION, FAILED
from service.core.storage import Storage, StorageError
from service.settings import Settings
from service.worker.copy_to_storage import block_writer
from service.worker.extract_rows import rows_to_storage
from service.worker.failures import StopRequested, failure_reason
from service.worker.heartbeats import Heartbeats
from service.worker.retries import Claimed, can_retry, hand_back, is_outage

log = logging.getLogger("participants.worker.extract")


# The failure reason of an extract whose owner lost the right to extract before it started.
ACCESS_REVOKED = "errorCode.noSufficientPrivileges"


async def extract_participants_job(ctx: dict[str, Any], job_uuid_str: str) -> str:
    """One attempt; an outage under it (Postgres, storage) hands the job back to run again soon."""
    claimed = Claimed()
    try:
        return await _extract(ctx, job_uuid_str, claimed)
    except Exception as exc:
        # Before its claim nothing of the job ran: arq drops the message and the sweeper queues
        # the job again from its row (IN_QUEUE) once Postgres answers.
        if not is_outage(exc) or claimed.attempt is None:
            raise
        return await hand_back(ctx, UUID(job_uuid_str), claimed.attempt, exc)


async def _extract(ctx: dict[str, Any], job_uuid_str: str, claimed: Claimed) -> str:
    settings: Settings = ctx["settings"]
    pool: asyncpg.Pool = ctx["db"]
    storage: Storage = ctx["storage"]
    job_uuid = UUID(job_uuid_str)
    started = time.monotonic()

    async with pool.acquire() as conn:
        job = await attempts.claim_or_give_up(conn, job_uuid, settings)
        if job is None:
            return "skipped"
        attempt: int = job["attempts"]
        claimed.attempt = attempt
        if job["cancel_requested"]:
            await lifecycle.cancel_attempt(conn, job_uuid, attempt)
            return CANCELLED
        if not job["owner_holds_right"]:  # read with the claim
            # The owner's right to extract here was revoked after the submit: no file is made.
            await lifecycle.fail_job(conn, job_uuid, ACCESS_REVOKED, attempt)
            log.info("extract refused: the owner's right is gone", extra={"job_uuid": job_uuid_str})
            return FAILED

        options = ExtractOptions.from_params(job["params"])
        heartbeats: Heartbeats = ctx["heartbeats"]

        with heartbeats.track(job_uuid, attempt) as beat:
            # The row count before a row is streamed (one count of the site's partial index, or
            # the planner's estimate for a very large site: docs/extract.md), so the status knows
            # the total from the start and the console can draw a bar and a time left.
            beat.rows_expected, beat.estimated = await start_writing(
                conn, job_uuid, attempt, job["site_id"], options
            )
            beat.phase = "writing"

            async def on_progress(rows_done: int) -> None:
                beat.rows_done = rows_done  # the worker's heartbeat records it
                if beat.stop:
                    raise StopRequested

            try:
                async with block_writer(
                    storage,
                    job["object_key"],
                    content_disposition_value=content_disposition(job["file_name"]),
                    on_progress=on_progress,
                    progress_every=settings.job_heartbeat_seconds,
                    prefix=codecs.BOM_UTF8 if options.bom else b"",
                ) as out:
                    rows = await rows_to_storage(conn, out, job["study_id"], job["site_id"], options)
                    await out.finish()
                made = out.file(rows)
            except StopRequested:
                await lifecycle.cancel_attempt(conn, job_uuid, attempt)
                log.info("extract cancelled", extra={"job_uuid": job_uuid_str})
                return CANCELLED
            except asyncio.CancelledError:
                # arq cancels a job on timeout, and on worker shutdown (then it runs the job again).
                # Only a timeout is final; the write is shielded from the cancellation.
                if time.monotonic() - started >= settings.extract_job_timeout_seconds * 0.95:
                    reason = f"timed out after {settings.extract_job_timeout_seconds} s"
                    await asyncio.shield(lifecycle.fail_job(conn, job_uuid, reason, attempt))
                raise
            except Exception as exc:
                if is_outage(exc) and can_retry(settings, attempt):
                    raise  # handed back on a fresh connection (retries.hand_back)
                reason = failure_reason(exc)
                detail = str(exc)[:500] if isinstance(exc, StorageError) else reason
                log.warning(
                    "extract failed", extra={"job_uuid": job_uuid_str, "reason": reason, "detail": detail}
                )
                # If Postgres itself is gone this raises too, and the job is handed back instead.
                await lifecycle.fail_job(conn, job_uuid, reason, attempt)
                return FAILED
            finally:
                # Leftovers of attempts killed mid-upload (this one's own upload is complete or
                # aborted); a first attempt follows none, and skips the scan of the folder.
                if attempt > 1:
                    with contextlib.suppress(OSError):
                        await storage.discard_partials(job["object_key"])

        # rows_expected: the slice holds exactly the rows written.
        made = dataclasses.replace(made, rows_expected=made.row_count)
        done = await lifecycle.complete_job(
            conn, job_uuid, attempt, made, dt.timedelta(hours=settings.job_retention_hours)
        )
        # Not recorded: superseded, or a cancel that arrived after the last chunk, which still wins
        # (this attempt can still end CANCELLED only in that case).
        if not done and await lifecycle.cancel_attempt(conn, job_uuid, attempt):
            await storage.delete(job["object_key"])
            return CANCELLED
    extra = {"job_uuid": job_uuid_str, "rows": made.row_count, "bytes": made.byte_size, "recorded": done}
    log.info("extract finished", extra=extra)
    return COMPLETED if done else "superseded"


FUNCTIONS: list[Any] = [func(extract_participants_job, name=EXTRACT_FUNCTION)]
