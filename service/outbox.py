"""The webhook outbox: events written in the same transaction as a job's final status.

(The event rows and their delivery are being built in this session; until then this records nothing.)
"""

from __future__ import annotations

from uuid import UUID

import asyncpg


async def record_job_finished(conn: asyncpg.Connection, job_uuid: UUID) -> None:
    """Call inside the transaction that sets a job's final status (COMPLETED or FAILED)."""
