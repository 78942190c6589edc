"""The webhook outbox: events written in the same statement as a job's final status.

``JOB_EVENT_CTES`` (in the statement of ``jobs.finish_job``) inserts one ``webhook_messages`` row
per enabled endpoint subscribed to the event (and to the job's study, if scoped). The rows commit
or roll back with the job's status, so an event is never lost and never sent for a status that
did not happen. Delivery is the worker's: a ``NOTIFY`` sent with the rows (so heard only after
commit) lets a listening worker enqueue them at once, and a sweeper (``worker/webhooks.py``, every
5 s) enqueues whatever is due in any case; the row, not the arq job, is the source of truth.
"""

from __future__ import annotations

from arq.connections import ArqRedis

from service.settings import Settings

NOTIFY_CHANNEL = "webhook_outbox"
EVENT_BY_STATUS = {"COMPLETED": "job.completed", "FAILED": "job.failed"}


def _iso_utc(ts: str) -> str:
    """SQL: ``ts`` as Python's ``isoformat()`` writes it in UTC, with ``Z`` (microseconds only when
    there are any), the form every event timestamp has always had."""
    return (
        f"(to_char({ts} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        f" || CASE WHEN date_trunc('second', {ts}) = {ts} THEN '' ELSE to_char({ts} AT TIME ZONE 'UTC', '.US') END"
        " || 'Z')"
    )


# The outbox rows of a job whose final status the same statement just wrote: these CTEs follow a
# CTE ``done`` that returns the changed ``jobs`` row (core/jobs.py ``finish_job``), and the statement
# must read ``notified``. One statement for status and events: one round trip. The payload is the
# event without its URLs (added at delivery from the public URL, else the submit's base URL) and without personal
# data: the job's metadata only, never a participant's name or contact.
JOB_EVENT_CTES = f"""
event AS (
    SELECT d.uuid, d.study_id, e.event_type, jsonb_build_object(
        'type', e.event_type,
        'timestamp', {_iso_utc("d.completed_at")},
        'data', jsonb_build_object(
            'jobUuid', d.uuid::text, 'jobType', d.type, 'status', d.status,
            'studyOid', st.oid, 'siteOid', si.oid,
            'rowCount', d.row_count, 'byteSize', d.byte_size, 'sha256', d.sha256, 'fileName', d.file_name,
            'expiresAt', CASE WHEN d.expires_at IS NOT NULL THEN {_iso_utc("d.expires_at")} END))
        -- Where the job was submitted (the job API's base URL), for absolute URLs at delivery.
        || CASE WHEN d.params ? 'baseUrl' THEN jsonb_build_object('baseUrl', d.params->'baseUrl') ELSE '{{}}' END
        AS payload
    FROM done d
    JOIN (VALUES {", ".join(f"('{status}', '{event}')" for status, event in EVENT_BY_STATUS.items())})
        AS e (status, event_type) ON e.status = d.status
    JOIN studies st ON st.id = d.study_id LEFT JOIN sites si ON si.id = d.site_id
), messages AS (
    INSERT INTO webhook_messages (msg_id, endpoint_id, event_type, job_uuid, payload)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, ev.event_type, ev.uuid, ev.payload
    FROM event ev JOIN webhook_endpoints w
        ON w.enabled AND ev.event_type = ANY (w.event_types) AND (w.study_id IS NULL OR w.study_id = ev.study_id)
    RETURNING id
), notified AS (
    -- Heard by listeners only if and when the statement's transaction commits: the "right after
    -- commit" nudge (worker/webhooks.py OutboxListener). Too many ids for one payload: an empty
    -- one says "sweep".
    SELECT pg_notify('{NOTIFY_CHANNEL}', CASE WHEN length(ids) < 7000 THEN ids ELSE '' END)
    FROM (SELECT string_agg(id::text, ',') AS ids FROM messages) m
    WHERE ids IS NOT NULL
)"""


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
