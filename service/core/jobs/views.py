"""Jobs on the wire: what an owner sees (``JobView``), what an operator sees (``AdminJob``), and the
answer to a submit (``JobSubmitted``). Built from ``store`` rows; no personal data is ever stored on
a job row, so all of it may be shown."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel, Field, RootModel

from service.core.audit import AuditEntry
from service.core.urls import job_urls
from service.core.webhooks.models import DeliveryOut


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


class JobProgress(BaseModel):
    """Rows done of expected; while the job runs, also what it is doing and how fast (each field only
    when known: the wire leaves the others out)."""

    rowsDone: int
    rowsExpected: int | None
    rowsExpectedEstimated: bool | None = Field(
        default=None, description="true when rowsExpected is an estimate (a bulk upload's, from its size)"
    )
    phase: str | None = Field(
        default=None, description="counting, writing (extract); reading, committing (bulk upload)"
    )
    rowsPerSecond: float | None = Field(
        default=None, description="rows done per second since the attempt started"
    )
    secondsLeft: float | None = Field(default=None, description="an estimate at the current rate")


def job_progress(row: asyncpg.Record) -> JobProgress:
    done, expected = row["rows_done"], row["rows_expected"]
    known: dict[str, Any] = {}
    if row["rows_estimated"]:
        known["rowsExpectedEstimated"] = True
    if row["status"] == "IN_PROGRESS":
        if row["phase"]:
            known["phase"] = row["phase"]
        started, beat = row["started_at"], row["heartbeat_at"]
        elapsed = (beat - started).total_seconds() if started and beat else 0.0
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            known["rowsPerSecond"] = round(rate, 1)
            if expected and expected > done and row["phase"] != "committing":
                known["secondsLeft"] = round((expected - done) / rate, 1)
    return JobProgress(rowsDone=done, rowsExpected=expected, **known)


class JobView(BaseModel):
    """A job as its owner sees it (``job_view`` fills it)."""

    jobUuid: UUID
    type: str
    status: str
    studyOid: str
    siteOid: str | None
    createdAt: str | None
    startedAt: str | None
    completedAt: str | None
    attempts: int
    progress: JobProgress
    rowCount: int | None
    byteSize: int | None
    sha256: str | None
    fileName: str | None
    expiresAt: str | None
    error: str | None
    statusUrl: str
    downloadUrl: str
    result: dict[str, Any] | None = None


class JobList(BaseModel):
    jobs: list[JobView]
    page: int
    pageSize: int


class JobSubmitted(BaseModel):
    """The JSON answer to a submitted job (a client that asks for JSON rather than OC4's text)."""

    jobUuid: UUID
    status: str
    statusUrl: str
    downloadUrl: str


def job_view(row: asyncpg.Record, base_url: str) -> JobView:
    status_url, download_url = job_urls(base_url, row["uuid"])
    # ``result`` only when the job keeps one: the wire leaves it out (not null) otherwise.
    kept = {"result": row["result"]} if row["result"] is not None else {}
    return JobView(
        jobUuid=row["uuid"],
        type=row["type"],
        status=row["status"],
        studyOid=row["study_oid"],
        siteOid=row["site_oid"],
        createdAt=_iso(row["created_at"]),
        startedAt=_iso(row["started_at"]),
        completedAt=_iso(row["completed_at"]),
        attempts=row["attempts"],
        progress=job_progress(row),
        rowCount=row["row_count"],
        byteSize=row["byte_size"],
        sha256=row["sha256"],
        fileName=row["file_name"],
        expiresAt=_iso(row["expires_at"]),
        error=row["error"],
        statusUrl=status_url,
        downloadUrl=download_url,
        **kept,
    )


# Our job types by OC4's names (JobType): OC4 calls the participant extract ACCESS_CODE.
OC4_JOB_TYPES = {"EXTRACT_PARTICIPANTS": "ACCESS_CODE", "BULK_ADD_PARTICIPANTS": "BULK_ADD_PARTICIPANTS"}


def _oc4_time(value: dt.datetime | None) -> str | None:
    """OC4's ``JobDetailDTO`` date pattern: ``yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`` in UTC."""
    if value is None:
        return None
    at = value.astimezone(dt.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class OC4Job(BaseModel):
    """A job as OC4's ``JobController`` lists it (``JobDetailDTO``)."""

    uuid: UUID
    status: str
    type: str
    createdByUsername: str
    siteOid: str | None
    studyOid: str
    dateCreated: str | None
    dateUpdated: str | None
    dateCompleted: str | None
    sourceFileName: str | None


class OC4JobList(RootModel[list[OC4Job]]):
    """OC4 answers its job lists as a bare JSON array."""


def oc4_job(row: asyncpg.Record) -> OC4Job:
    updated = row["completed_at"] or row["started_at"] or row["created_at"]
    return OC4Job(
        uuid=row["uuid"],
        status=row["status"],
        type=OC4_JOB_TYPES.get(row["type"], row["type"]),
        createdByUsername=row["owner_username"],
        siteOid=row["site_oid"],
        studyOid=row["study_oid"],
        dateCreated=_oc4_time(row["created_at"]),
        dateUpdated=_oc4_time(updated),
        dateCompleted=_oc4_time(row["completed_at"]),
        sourceFileName=row["file_name"],
    )


def job_submitted(job_uuid: UUID, status: str, base_url: str) -> JobSubmitted:
    status_url, download_url = job_urls(base_url, job_uuid)
    return JobSubmitted(jobUuid=job_uuid, status=status, statusUrl=status_url, downloadUrl=download_url)


class AdminJob(BaseModel):
    jobUuid: UUID
    type: str
    status: str
    studyOid: str
    siteOid: str | None
    owner: str
    createdAt: dt.datetime
    startedAt: dt.datetime | None
    completedAt: dt.datetime | None
    heartbeatAt: dt.datetime | None
    attempts: int
    rowsDone: int
    rowsExpected: int | None
    rowCount: int | None
    byteSize: int | None
    sha256: str | None
    fileName: str | None
    expiresAt: dt.datetime | None
    error: str | None
    cancelRequested: bool
    statusUrl: str
    progress: JobProgress


class AdminJobList(BaseModel):
    jobs: list[AdminJob]
    page: int
    pageSize: int
    total: int


class AdminJobDetail(AdminJob):
    params: dict[str, Any]
    resultSummary: dict[str, Any] | None = Field(description="counts only; never participants' data")
    webhookDeliveries: list[DeliveryOut]
    audit: list[AuditEntry]


class PurgeResult(BaseModel):
    expired: int
    jobUuids: list[UUID]


def admin_job(row: asyncpg.Record, base_url: str) -> AdminJob:
    return AdminJob(
        jobUuid=row["uuid"],
        type=row["type"],
        status=row["status"],
        studyOid=row["study_oid"],
        siteOid=row["site_oid"],
        owner=row["owner_username"],
        createdAt=row["created_at"],
        startedAt=row["started_at"],
        completedAt=row["completed_at"],
        heartbeatAt=row["heartbeat_at"],
        attempts=row["attempts"],
        rowsDone=row["rows_done"],
        rowsExpected=row["rows_expected"],
        rowCount=row["row_count"],
        byteSize=row["byte_size"],
        sha256=row["sha256"],
        fileName=row["file_name"],
        expiresAt=row["expires_at"],
        error=row["error"],
        cancelRequested=row["cancel_requested"],
        statusUrl=job_urls(base_url, row["uuid"])[0],
        progress=job_progress(row),
    )


def result_summary(result: Any) -> dict[str, Any] | None:
    """Only the numbers of a job's result (a bulk summary names participant IDs)."""
    if not isinstance(result, dict):
        return None
    return {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
