"""The asynchronous bulk upload's submit, the use-case the API (``async=y``) and the console's upload
form both call: the received file is checked at its head, stored, and becomes a job."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

import asyncpg

from service.core.bulk.parser import BulkCsvParser
from service.core.bulk.spool import Spool
from service.core.bulk.summary import result_file_name, upload_object_key
from service.core.connections import Connections
from service.core.errors import ApiError
from service.core.jobs import lifecycle, queue, store
from service.core.jobs.model import BULK_ADD_PARTICIPANTS, IN_QUEUE, NewJob, SubmitAudit
from service.core.jobs.views import JobSubmitted, job_submitted
from service.core.roles import Scope
from service.core.storage import StorageError

# Only this much is parsed before the job is made, to refuse a file without a header (or not a CSV
# at all) at once; the job parses the whole file.
SNIFF_BYTES = 64 * 1024


async def submit_bulk_job(
    conns: Connections,
    conn: asyncpg.Connection,
    scope: Scope,
    file: Spool,
    created_at: str,
    base_url: str,
    *,
    register: bool = False,
) -> JobSubmitted:
    """Store the upload, then create and enqueue the job. ``scope`` passed ``check_bulk_allowed``."""
    settings, storage = conns.settings, conns.storage
    assert scope.study is not None and scope.user_id is not None
    job_uuid = uuid.uuid4()
    key = upload_object_key(job_uuid)
    sniffer = BulkCsvParser(scope.site is not None, settings.bulk_max_bytes)
    sniffer.feed(file.head(SNIFF_BYTES))  # file-level errors of the first bytes, at once
    if file.size <= SNIFF_BYTES:
        sniffer.close()  # the whole file went through: a blank one is refused now
    if await store.quota_reached(conn, scope.user_id, settings.max_active_jobs_per_user):
        raise lifecycle.quota_error(settings.max_active_jobs_per_user)  # before storing a file for nothing
    try:
        async with storage.open_upload(key, content_type="text/csv") as upload:
            async for chunk in file.chunks():
                await upload.write(chunk)
    except StorageError:
        raise ApiError("serviceUnavailable", scope.params, headers={"Retry-After": "5"}) from None
    new_job = NewJob(
        job_type=BULK_ADD_PARTICIPANTS,
        study_id=scope.study["id"],
        site_id=scope.site["id"] if scope.site else None,
        owner_id=scope.user_id,
        file_name=result_file_name(scope.study_oid, scope.site_oid, dt.datetime.now(dt.UTC)),
        # baseUrl: the job API's base, for the absolute URLs of its webhook event.
        params={
            "uploadKey": key,
            "uploadBytes": file.size,
            "createdAt": created_at,
            "baseUrl": base_url,
            "register": register,
        },
        job_uuid=job_uuid,
        max_active=settings.max_active_jobs_per_user,
        audit=SubmitAudit(scope.username, "bulk.submit", {"bytes": file.size}),
    )
    try:
        # One statement, its own transaction: the job, its audit row and the quota check.
        await lifecycle.create_job(conn, new_job)
    except Exception:
        # No job was committed, so nobody will ever read the upload: drop it (best effort).
        with contextlib.suppress(Exception):
            await storage.delete(key)
        raise
    await queue.enqueue_or_withdraw(
        conn, conns.redis, settings, BULK_ADD_PARTICIPANTS, job_uuid, scope.user_id, storage, key
    )
    return job_submitted(job_uuid, IN_QUEUE, base_url)
