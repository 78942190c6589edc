"""What a job is: its types and statuses, the arq names each type runs under, and the values a job
is made with (``NewJob``) and finished with (``JobFile``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from service.core.errors import ApiError

EXTRACT_PARTICIPANTS = "EXTRACT_PARTICIPANTS"
BULK_ADD_PARTICIPANTS = "BULK_ADD_PARTICIPANTS"

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
EXPIRED = "EXPIRED"
DELETED = "DELETED"
JOB_STATUSES = (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, EXPIRED, DELETED)
UNFINISHED = (IN_QUEUE, IN_PROGRESS)
FINAL_WITH_EVENT = (COMPLETED, FAILED)  # the statuses webhooks announce

# The arq function names: the worker registers its functions under these names
# (``func(fn, name=...)``) and everything else enqueues by them, never importing worker code.
EXTRACT_FUNCTION = "extract_participants_job"
BULK_FUNCTION = "bulk_add_participants_job"
# Job type -> (arq function name, the Settings field naming its queue): how a submit, an admin
# retry and the sweeper enqueue a job of that type. Each job type adds its line here.
JOB_FUNCTIONS: dict[str, tuple[str, str]] = {
    EXTRACT_PARTICIPANTS: (EXTRACT_FUNCTION, "extract_queue"),
    BULK_ADD_PARTICIPANTS: (BULK_FUNCTION, "default_queue"),
}
JOB_TYPES = tuple(JOB_FUNCTIONS)
# What an admin may run again once FAILED. A bulk job's upload is deleted when the job ends (it holds
# personal data), so a failed bulk upload is uploaded again by its owner, not retried.
RETRYABLE_TYPES = frozenset({EXTRACT_PARTICIPANTS})
RETRY_AFTER_SECONDS = "2"  # a job in progress is asked about again this soon


def parse_job_uuid(raw: str) -> UUID:
    """A job UUID from a path; anything malformed is ``invalidUuid`` (404), as if unknown."""
    try:
        if len(raw) > 64:
            raise ValueError
        return UUID(raw)
    except ValueError:
        raise ApiError("invalidUuid", {"jobUuid": raw[:64]}) from None


@dataclass(frozen=True)
class SubmitAudit:
    """The audit row of a submit: who (by name; the owner is the user id), which act, what."""

    username: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewJob:
    """A job to create (``lifecycle.create_job``). ``max_active``: the owner's quota of unfinished
    jobs (every submit passes the configured one); ``audit``: the submit's audit row, written by
    the same statement."""

    job_type: str
    study_id: int
    site_id: int | None
    owner_id: int
    file_name: str | None = None
    object_key: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    job_uuid: UUID = field(default_factory=uuid.uuid4)
    max_active: int | None = None
    audit: SubmitAudit | None = None


@dataclass(frozen=True)
class JobFile:
    """What a finished job made: its file (when it wrote one) and its counts, for ``complete_job``."""

    byte_size: int | None = None
    sha256: str | None = None
    row_count: int | None = None
    object_key: str | None = None  # None: the key the job was created with
    result: dict[str, Any] | None = None  # a small summary kept on the row (a bulk job's)
    rows_expected: int | None = None
