"""The extract job: one site's participants, streamed by Postgres as CSV straight into object storage.

``COPY (SELECT ...) TO STDOUT (FORMAT csv, HEADER)`` runs through asyncpg's ``copy_from_query``;
each chunk Postgres sends is hashed, counted and written to a streaming multipart upload. Nothing
is held whole in memory or on local disk, and rows never pass through Python one by one (quoting
and the formula guard are SQL). The object becomes visible only when the upload completes, and the
job is ``COMPLETED`` only after that, so a partial file is never downloadable.

Safe to run more than once (arq's rule): a finished job is skipped, a re-run overwrites the same
object key and the same row. The worker's heartbeat (worker/heartbeats.py) records the job's
progress every ``job_heartbeat_seconds``; between chunks the job stops if that heartbeat found it
cancelled or superseded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from typing import Any
from uuid import UUID

import asyncpg
from arq.worker import func

from service.core import job_attempts
from service.core import jobs as job_store
from service.core.extract_options import ExtractOptions
from service.core.extracts import COUNT_SQL, extract_select
from service.core.files import CSV_CONTENT_TYPE, content_disposition
from service.core.storage import Storage, StorageError
from service.settings import Settings
from service.worker import maintenance
from service.worker.heartbeats import Heartbeats

log = logging.getLogger("participants.worker.extract")


# The failure reason of an extract whose owner lost the right to extract before it started.
ACCESS_REVOKED = "errorCode.noSufficientPrivileges"


class StopRequested(Exception):
    """Cancel requested (or this attempt superseded): abort the COPY and the upload."""


def failure_reason(exc: BaseException) -> str:
    """Why a job failed, for the job row: the kind of failure, never data (a Postgres message can
    quote values, so only its SQLSTATE and class are kept)."""
    if isinstance(exc, StorageError):
        # The kind only: the detail (endpoint, bucket) goes to the worker log, not to the job's owner.
        return f"storage: {type(exc).__name__} ({str(exc).split(':', 1)[0]})"
    if isinstance(exc, asyncpg.PostgresError):
        return f"database: {type(exc).__name__} (SQLSTATE {exc.sqlstate})"
    return f"{type(exc).__name__}"


BLOCK_SIZE = 1024 * 1024  # what the upload is handed at a time: far fewer calls into obstore than COPY chunks
BLOCKS_IN_FLIGHT = 3


async def stream_extract(
    conn: asyncpg.Connection,
    storage: Storage,
    key: str,
    select_sql: str,
    *,
    content_disposition_value: str | None = None,
    on_progress: Any = None,
    progress_every: float = 1.0,
) -> tuple[int, int, str]:
    """Stream ``select_sql`` as CSV into ``key``; return (rows, bytes, sha256 hex).

    COPY chunks (~10 KB each) are gathered into 1 MiB blocks, which a writer task hashes and
    uploads while the next block arrives; the bounded queue keeps memory at a few blocks and,
    when storage is slow, stops reading from Postgres instead of buffering.
    """
    digest = hashlib.sha256()
    size = 0
    newlines = 0
    next_beat = time.monotonic() + progress_every
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=BLOCKS_IN_FLIGHT)
    failure: list[BaseException] = []

    async with storage.open_upload(
        key, content_type=CSV_CONTENT_TYPE, content_disposition=content_disposition_value
    ) as upload:

        async def write_blocks() -> None:
            while (block := await queue.get()) is not None:
                if failure:
                    continue  # keep draining so the reader never blocks; it raises the failure
                try:
                    digest.update(block)
                    await upload.write(block)
                except Exception as exc:
                    failure.append(exc)

        writer = asyncio.create_task(write_blocks())
        buffer = bytearray()

        async def sink(chunk: bytes) -> None:
            nonlocal size, newlines, next_beat
            if failure:
                raise failure[0]
            size += len(chunk)
            newlines += chunk.count(b"\n")  # progress only: a quoted newline counts too
            buffer.extend(chunk)
            if len(buffer) >= BLOCK_SIZE:
                await queue.put(bytes(buffer))
                buffer.clear()
            if on_progress is not None and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + progress_every
                await on_progress(max(0, newlines - 1))

        try:
            status = await conn.copy_from_query(select_sql, output=sink, format="csv", header=True)
            if buffer:
                await queue.put(bytes(buffer))
            await queue.put(None)
            await writer
            if failure:
                raise failure[0]
        finally:
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
    # "COPY n": the exact number of rows, whatever newlines the cells hold.
    rows = int(status.split()[-1])
    return rows, size, digest.hexdigest()


async def extract_participants_job(ctx: dict[str, Any], job_uuid_str: str) -> str:
    settings: Settings = ctx["settings"]
    pool: asyncpg.Pool = ctx["db"]
    storage: Storage = ctx["storage"]
    job_uuid = UUID(job_uuid_str)
    started = time.monotonic()

    async with pool.acquire() as conn:
        job = await job_attempts.claim_or_give_up(conn, job_uuid, settings)
        if job is None:
            return "skipped"
        attempt: int = job["attempts"]
        if job["cancel_requested"]:
            await job_store.finish_job(conn, job_uuid, job_store.CANCELLED, attempt=attempt, error="cancelled")
            return job_store.CANCELLED
        if not job["owner_holds_right"]:  # read with the claim
            # The owner's right to extract here was revoked after the submit: no file is made.
            await job_store.finish_job(conn, job_uuid, job_store.FAILED, attempt=attempt, error=ACCESS_REVOKED)
            log.info("extract refused: the owner's right is gone", extra={"job_uuid": job_uuid_str})
            return job_store.FAILED

        options = ExtractOptions.from_params(job["params"])
        heartbeats: Heartbeats = ctx["heartbeats"]
        counting: asyncio.Task[None] | None = None

        with heartbeats.track(job_uuid, attempt) as beat:

            async def count_expected() -> None:
                # Progress only: counted, on a connection of its own while COPY streams, for a job
                # still running at its first progress tick. A short job never pays the round trip:
                # its rows_expected is its row count, written with the final status.
                async with pool.acquire() as count_conn:
                    beat.rows_expected = options.rows_in_slice(await count_conn.fetchval(COUNT_SQL, job["site_id"]))

            async def on_progress(rows_done: int) -> None:
                nonlocal counting
                beat.rows_done = rows_done  # the worker's heartbeat records it
                if counting is None:
                    counting = asyncio.create_task(count_expected())
                if beat.stop:
                    raise StopRequested

            try:
                rows, size, sha = await stream_extract(
                    conn,
                    storage,
                    job["object_key"],
                    extract_select(job["site_id"], options),
                    content_disposition_value=content_disposition(job["file_name"]),
                    on_progress=on_progress,
                    progress_every=settings.job_heartbeat_seconds,
                )
            except StopRequested:
                await job_store.finish_job(conn, job_uuid, job_store.CANCELLED, attempt=attempt, error="cancelled")
                log.info("extract cancelled", extra={"job_uuid": job_uuid_str})
                return job_store.CANCELLED
            except asyncio.CancelledError:
                # arq cancels a job on timeout, and on worker shutdown (then it runs the job again).
                # Only a timeout is final; the write is shielded from the cancellation.
                if time.monotonic() - started >= settings.extract_job_timeout_seconds * 0.95:
                    await asyncio.shield(
                        job_store.finish_job(
                            conn,
                            job_uuid,
                            job_store.FAILED,
                            attempt=attempt,
                            error=f"timed out after {settings.extract_job_timeout_seconds} s",
                        )
                    )
                raise
            except Exception as exc:
                reason = failure_reason(exc)
                detail = str(exc)[:500] if isinstance(exc, StorageError) else reason
                log.warning("extract failed", extra={"job_uuid": job_uuid_str, "reason": reason, "detail": detail})
                # If Postgres itself is gone this raises too: the row stays IN_PROGRESS and the
                # sweeper runs the job again once Postgres is back.
                await job_store.finish_job(conn, job_uuid, job_store.FAILED, attempt=attempt, error=reason)
                return job_store.FAILED
            finally:
                # Never go on (or hand its connection back) with the count still running.
                if counting is not None:
                    with contextlib.suppress(Exception):
                        await counting
                # Leftovers of attempts killed mid-upload (this one's own upload is complete or
                # aborted); a first attempt follows none, and skips the scan of the folder.
                if attempt > 1:
                    with contextlib.suppress(OSError):
                        await storage.discard_partials(job["object_key"])

        done = await job_store.finish_job(
            conn,
            job_uuid,
            job_store.COMPLETED,
            attempt=attempt,
            retention=dt.timedelta(hours=settings.job_retention_hours),
            row_count=rows,
            byte_size=size,
            sha256=sha,
            rows_expected=rows,  # the slice holds exactly what COPY wrote
            unless_cancelled=True,
        )
        # Not recorded: superseded, or a cancel that arrived after the last chunk, which still wins
        # (this attempt can still end CANCELLED only in that case).
        if not done and await job_store.finish_job(
            conn, job_uuid, job_store.CANCELLED, attempt=attempt, error="cancelled"
        ):
            await storage.delete(job["object_key"])
            return job_store.CANCELLED
    log.info("extract finished", extra={"job_uuid": job_uuid_str, "rows": rows, "bytes": size, "recorded": done})
    return job_store.COMPLETED if done else "superseded"


FUNCTIONS: list[Any] = [func(extract_participants_job, name=job_store.EXTRACT_FUNCTION)]
CRON_JOBS = maintenance.CRON_JOBS
