"""What a job's owner may do with it: see it, list their jobs, delete its file, download it. Only
the creator sees a job, and only while holding the right that made it; anyone else gets
``invalidUuid`` (404), exactly as if it did not exist. Called by the API and the console alike."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from service.core import audit
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.jobs import lifecycle, store
from service.core.jobs.model import (
    CANCELLED,
    DELETED,
    EXPIRED,
    FAILED,
    RETRY_AFTER_SECONDS,
    UNFINISHED,
)
from service.core.jobs.views import JobList, JobView, OC4JobList, job_view, oc4_job
from service.core.storage import Storage


@dataclass(frozen=True)
class JobPlace:
    """Where a job list looks: a study (and site), or everywhere (both None)."""

    study_id: int | None = None
    site_id: int | None = None


async def job_place(conn: asyncpg.Connection, study_oid: str | None, site_oid: str | None) -> JobPlace:
    """The study and site a list under a study (and site) path names; ``studyNotExist`` /
    ``siteNotExist`` when they name nothing."""
    return JobPlace(*await store.study_and_site_ids(conn, study_oid, site_oid))


async def list_jobs(
    conn: asyncpg.Connection, actor: Actor, place: JobPlace, page: int, size: int, base_url: str
) -> JobList:
    """The owner's jobs, newest first, at ``place``. Jobs made by a right the owner no longer holds
    are left out, as status and download refuse them."""
    rows = await store.list_owned(conn, actor.user_id, place.study_id, place.site_id, page, size)
    return JobList(jobs=[job_view(r, base_url) for r in rows], page=page, pageSize=size)


async def list_jobs_oc4(
    conn: asyncpg.Connection, actor: Actor, place: JobPlace, page: int, size: int
) -> OC4JobList:
    """OC4's job list at a study or site: the same jobs as ``list_jobs`` but those whose file was
    deleted (OC4 lists non-deleted jobs), in OC4's shape. Only the caller's own jobs: others'
    jobs are never revealed."""
    rows = await store.list_owned(conn, actor.user_id, place.study_id, place.site_id, page, size)
    return OC4JobList([oc4_job(r) for r in rows if r["status"] != DELETED])


async def owned_job(conn: asyncpg.Connection, actor: Actor, raw_uuid: str) -> asyncpg.Record:
    """The job the path names, if ``actor`` owns it and still holds its right (else ``invalidUuid``)."""
    return await store.get_owned_job(conn, raw_uuid, actor.user_id)


async def get_job(conn: asyncpg.Connection, actor: Actor, raw_uuid: str, base_url: str) -> JobView:
    return job_view(await owned_job(conn, actor, raw_uuid), base_url)


async def delete_job(
    conn: asyncpg.Connection, storage: Storage, actor: Actor, job: asyncpg.Record, base_url: str
) -> JobView:
    """The owner deletes the file of ``job`` (from ``owned_job``); the row stays, ``DELETED``."""
    await lifecycle.delete_file(conn, storage, actor, job)
    return job_view(await owned_job(conn, actor, str(job["uuid"])), base_url)


def check_downloadable(job: asyncpg.Record) -> None:
    """Raise why the job's file cannot be downloaded now, if it cannot."""
    params = {"jobUuid": str(job["uuid"])}
    status = job["status"]
    if status in UNFINISHED:
        raise ApiError("jobInProgress", params, headers={"Retry-After": RETRY_AFTER_SECONDS})
    if status in (FAILED, CANCELLED):
        raise ApiError("jobFailed", {**params, "status": status})
    if status in (EXPIRED, DELETED):
        raise ApiError("fileExpired", params)
    expires_at = job["expires_at"]
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise ApiError("fileExpired", params)
    if not job["object_key"] or job["byte_size"] is None:
        raise ApiError("notFound", params)  # a job type that produced no file


async def record_download(
    conn: asyncpg.Connection, actor: Actor, job: asyncpg.Record, *, ranged: bool, redirect: bool
) -> None:
    await audit.record_on_job(
        conn, actor, "job.download", job, details={"range": ranged, "redirect": redirect}
    )
