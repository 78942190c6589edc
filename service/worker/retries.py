"""A job whose dependency failed under it runs again, soon: an outage is not the job's failure.

When Postgres fails over, Redis loses its master or object storage stops answering mid-job, the
attempt is handed back (``IN_QUEUE`` again, its attempt counted) on a fresh connection, and arq runs
the job again after ``job_retry_delay_seconds``, doubling per attempt. Before, such an attempt could
not record anything on its dead connection and sat ``IN_PROGRESS`` until the sweeper found its
heartbeat stale. The last attempt's outage ends the job ``FAILED`` with the reason, as any failure.
An outage before the claim is not handed back: nothing ran, arq drops the message, and the sweeper
queues the job again from its ``IN_QUEUE`` row once Postgres answers.

If even the hand-back cannot be written (Postgres still away), the row still says ``IN_PROGRESS``:
the re-run is deferred until its heartbeat is stale, when the claim may take it over.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from arq.worker import Retry

from service.core.errors import UNAVAILABLE
from service.core.jobs import lifecycle
from service.core.jobs.model import FAILED
from service.core.storage import StorageNotFound
from service.settings import Settings
from service.worker.failures import failure_reason

log = logging.getLogger("participants.worker.retries")

# Pauses between tries to record a hand-back (None: the last try).
RECORD_PAUSES = (0.25, 0.5, 1.0, None)


@dataclass
class Claimed:
    """The attempt a job run claimed, once it has (None before the claim)."""

    attempt: int | None = None


def is_outage(exc: BaseException) -> bool:
    """A dependency failed (unreachable, timed out, read-only, storage unavailable), not the input."""
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, StorageNotFound)


def retry_delay(settings: Settings, attempt: int) -> float:
    return float(settings.job_retry_delay_seconds * 2 ** max(0, attempt - 1))


def can_retry(settings: Settings, attempt: int) -> bool:
    return attempt < settings.job_max_attempts


async def hand_back(ctx: dict[str, Any], job_uuid: UUID, attempt: int, exc: BaseException) -> str:
    """After an outage under ``attempt``: the attempt handed back and a re-run deferred (raises
    arq's ``Retry``), or, on the last attempt, the job ``FAILED`` (returns ``FAILED``)."""
    settings: Settings = ctx["settings"]
    pool: asyncpg.Pool = ctx["db"]
    reason = failure_reason(exc)
    delay = retry_delay(settings, attempt)
    # A Postgres failover leaves no primary for a moment (a promotion takes well under a second):
    # the record is tried a few times before the re-run is left to the stale heartbeat.
    for pause in RECORD_PAUSES:
        try:
            async with pool.acquire(timeout=settings.db_timeout_seconds) as conn:
                if not can_retry(settings, attempt):
                    await lifecycle.fail_job(conn, job_uuid, reason, attempt)
                    log.warning(
                        "job failed on an outage", extra={"job_uuid": str(job_uuid), "reason": reason}
                    )
                    return FAILED
                await lifecycle.release_attempt(conn, job_uuid, attempt, reason)
            break
        except UNAVAILABLE:
            if pause is None:
                stale = max(settings.extract_stale_seconds, settings.job_stale_seconds)
                delay = max(delay, stale + settings.job_heartbeat_seconds)
            else:
                await asyncio.sleep(pause)
    log.warning(
        "job stopped by an outage; it runs again",
        extra={"job_uuid": str(job_uuid), "attempt": attempt, "reason": reason, "retry_in": delay},
    )
    raise Retry(defer=delay)
