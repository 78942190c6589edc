"""What a bulk upload answers and leaves behind: the seed's summary shape (also for file-level
failures) and the names and object keys of an asynchronous upload's files. Shared by the synchronous handler and the bulk job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from service.core.files import file_stamp


class BulkFailed(BaseModel):
    subjectKey: str | None
    message: list[str]
    rowNumber: int | None = None  # the row in the file, the header being 1 (OC4's import reports' name)


class BulkAdded(BaseModel):
    subjectKey: str
    status: str


class BulkResult(BaseModel):
    """The seed's answer to an upload, also for file-level failures (with their error status).
    A successful upload's answer is streamed in this shape (``summary_head`` then the two lists)."""

    uploadCount: int
    failureCount: int
    message: str
    createdBy: str
    createdAt: str
    failedParticipants: list[BulkFailed]
    participants: list[BulkAdded]
    params: dict[str, Any] | None = None  # a file-level failure's details, when it has any


def oc4_timestamp(moment: datetime) -> str:
    """OC4's ``d-M-yyyy HH:mm:ss`` (UTC)."""
    return f"{moment.day}-{moment.month}-{moment.year} {moment:%H:%M:%S}"


def summary_head(
    upload_count: int, failure_count: int, message: str, created_by: str, created_at: str
) -> dict[str, Any]:
    return {
        "uploadCount": upload_count,
        "failureCount": failure_count,
        "message": message,
        "createdBy": created_by,
        "createdAt": created_at,
    }


# File-level failures whose params tell the client what to fix in the file; other failures keep the
# seed's shape exactly (their params only repeat the request's study and site).
# They name where the trouble is (rowNumber, column) and, for an encoding, how to fix it.
PARAMS_SHOWN = frozenset(
    {"missingParticipantIDHeader", "notSupportedFileFormat", "duplicateColumnHeader", "rowTooLarge"}
)


def shown_params(code: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The params a file-level failure's body carries (None: the seed's shape exactly)."""
    return params if code in PARAMS_SHOWN and params else None


def failure_body(
    code: str, created_by: str, created_at: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A file-level failure in the seed's shape; ``params`` (e.g. the header the file lacks) only
    when the failure has some."""
    body = {
        **summary_head(0, 0, f"errorCode.{code}", created_by, created_at),
        "failedParticipants": [],
        "participants": [],
    }
    return {**body, "params": params} if params else body


def failed_entries(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "subjectKey": r["subject_key"],
            "message": [f"errorCode.{e}" for e in r["errors"]],
            "rowNumber": r["row_no"],
        }
        for r in rows
    ]


def added_entries(rows: list[Any]) -> list[dict[str, Any]]:
    return [{"subjectKey": r["subject_key"], "status": "Available"} for r in rows]


def upload_object_key(job_uuid: UUID) -> str:
    return f"bulk/{job_uuid}/upload.csv"


def result_object_key(job_uuid: UUID, attempt: int) -> str:
    """One object per attempt: a superseded attempt never overwrites the file of the one that won."""
    return f"bulk/{job_uuid}/result-{attempt}.csv"


def result_file_name(study_oid: str, site_oid: str | None, at: datetime) -> str:
    """Named like the extract file: ``{studyOID}[-{siteOID}]_Bulk Participant Upload_{yyyy-MM-dd-HHmmssSSS}Z.csv``."""
    where = f"{study_oid}-{site_oid}" if site_oid else study_oid
    return f"{where}_Bulk Participant Upload_{file_stamp(at)}Z.csv"
