"""The webhook outbox: events written in the same transaction as a job's final status.

``record_job_finished`` inserts one ``webhook_messages`` row per enabled endpoint subscribed to
the event (and to the job's study, if scoped). The rows commit or roll back with the job's
status, so an event is never lost and never sent for a status that did not happen. Delivery is
the worker's: a ``NOTIFY`` sent with the rows (so heard only after commit) lets a listening worker
enqueue them at once, and a sweeper (``worker/webhooks.py``, every 5 s) enqueues whatever is due
in any case; the row, not the arq job, is the source of truth.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from arq.connections import ArqRedis

from service.settings import Settings

NOTIFY_CHANNEL = "webhook_outbox"
EVENT_BY_STATUS = {"COMPLETED": "job.completed", "FAILED": "job.failed"}

JOB_FOR_EVENT = """
SELECT j.uuid, j.type, j.status, j.study_id, j.row_count, j.byte_size, j.sha256, j.file_name, j.expires_at,
       j.completed_at, st.oid AS study_oid, si.oid AS site_oid
FROM jobs j JOIN studies st ON st.id = j.study_id LEFT JOIN sites si ON si.id = j.site_id
WHERE j.uuid = $1
"""


def event_payload(job: asyncpg.Record | dict[str, Any], event_type: str, at: datetime) -> dict[str, Any]:
    """The event without its URLs (added at delivery from the configured public URL). No personal data:
    only the job's metadata, never a participant's name or contact."""
    return {
        "type": event_type,
        "timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "jobUuid": str(job["uuid"]),
            "jobType": job["type"],
            "status": job["status"],
            "studyOid": job["study_oid"],
            "siteOid": job["site_oid"],
            "rowCount": job["row_count"],
            "byteSize": job["byte_size"],
            "sha256": job["sha256"],
            "fileName": job["file_name"],
            "expiresAt": job["expires_at"].astimezone(UTC).isoformat().replace("+00:00", "Z")
            if job["expires_at"]
            else None,
        },
    }


async def record_job_finished(conn: asyncpg.Connection, job_uuid: UUID) -> list[int]:
    """Call inside the transaction that sets a job's final status (COMPLETED or FAILED).

    Returns the ids of the messages written (none for other statuses or when nobody subscribed).
    """
    job = await conn.fetchrow(JOB_FOR_EVENT, job_uuid)
    if job is None or job["status"] not in EVENT_BY_STATUS:
        return []
    event_type = EVENT_BY_STATUS[job["status"]]
    at = job["completed_at"] or await conn.fetchval("SELECT now()")
    payload = event_payload(job, event_type, at)
    rows = await conn.fetch(
        """INSERT INTO webhook_messages (msg_id, endpoint_id, event_type, job_uuid, payload)
           SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, $1, $2, $3
           FROM webhook_endpoints e
           WHERE e.enabled AND $1 = ANY (e.event_types) AND (e.study_id IS NULL OR e.study_id = $4)
           RETURNING id""",
        event_type, job_uuid, payload, job["study_id"],
    )  # fmt: skip
    ids = [r["id"] for r in rows]
    if ids:
        # Delivered to listeners only if and when this transaction commits: the "right after commit"
        # nudge (worker/webhooks.py OutboxListener). Too many ids for one payload: an empty one says "sweep".
        text = ",".join(map(str, ids))
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, text if len(text) < 7000 else "")
    return ids


# The arq function that makes one delivery attempt; the worker registers it under this name.
DELIVER_FUNCTION = "deliver_webhook"


def delivery_job_id(message_id: int, attempts: int) -> str:
    """arq job id of one attempt: enqueueing the same attempt twice is a no-op."""
    return f"webhook-delivery:{message_id}:{attempts}"


async def enqueue_delivery(redis: ArqRedis, settings: Settings, message_id: int, attempts: int) -> bool:
    """Queue the next attempt of a message; False when that very attempt is queued already."""
    job = await redis.enqueue_job(
        DELIVER_FUNCTION,
        message_id,
        _job_id=delivery_job_id(message_id, attempts),
        _queue_name=settings.default_queue,
    )
    return job is not None
