"""How a job's attempt stops short: a cancel or a superseded attempt (``StopRequested``, raised from
a progress callback), and the reason a failure leaves on the job row (``failure_reason``)."""

from __future__ import annotations

import asyncpg

from service.core.protection.keyring import UnknownDataKey, Unreadable
from service.core.storage import StorageError

# A personal field that cannot be read back: a ciphertext moved from another row or field, edited,
# or under a data key the database no longer holds. Says which kind of failure, never which row.
UNREADABLE_DATA = "errorCode.unreadableData"


class StopRequested(Exception):
    """Cancel requested (or this attempt superseded): abort the COPY and the upload."""


def failure_reason(exc: BaseException) -> str:
    """Why a job failed, for the job row: the kind of failure, never data (a Postgres message can
    quote values, so only its SQLSTATE and class are kept)."""
    if isinstance(exc, Unreadable | UnknownDataKey):
        return UNREADABLE_DATA
    if isinstance(exc, StorageError):
        # The kind only: the detail (endpoint, bucket) goes to the worker log, not to the job's owner.
        return f"storage: {type(exc).__name__} ({str(exc).split(':', 1)[0]})"
    if isinstance(exc, asyncpg.PostgresError):
        return f"database: {type(exc).__name__} (SQLSTATE {exc.sqlstate})"
    return f"{type(exc).__name__}"
