"""One heartbeat for every job a worker runs: a ticker with its own connection records each running
attempt's progress and heartbeat, all in one statement, every ``job_heartbeat_seconds``.

Why a ticker and not each job between its chunks: a job's heartbeat then came from its work, so a
job busy inside one long statement (a bulk upload's insert, a slow first row) fell silent and looked
dead, and every job held a second connection only to beat. The ticker beats as long as the worker's
event loop runs, whatever its jobs are waiting on: a silent job means a dead (or stuck) worker, so
the stale threshold can be a few seconds for every job type, and each job holds one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from uuid import UUID

import asyncpg

from service.core.db import create_pool
from service.core.jobs.attempts import Beat, beat_jobs
from service.settings import Settings

log = logging.getLogger("participants.worker.heartbeats")


class Heartbeats:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._beats: dict[tuple[UUID, int], Beat] = {}
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assert self.settings.database_url
        # A pool of one: a connection of its own, so a beat never waits behind the jobs' pool, and
        # asyncpg opens a fresh one after a failure.
        self._pool = await create_pool(self.settings.database_url, 1, 1, self.settings.db_timeout_seconds)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            await self._pool.close()

    @contextlib.contextmanager
    def track(self, job_uuid: UUID, attempt: int) -> Iterator[Beat]:
        """Beat for this attempt while the block runs; the job sets ``rows_done`` (and
        ``rows_expected``) on the beat and stops when ``stop`` turns true."""
        beat = Beat(job_uuid, attempt)
        self._beats[(job_uuid, attempt)] = beat
        try:
            yield beat
        finally:
            del self._beats[(job_uuid, attempt)]

    async def _run(self) -> None:
        assert self._pool is not None
        while True:
            await asyncio.sleep(self.settings.job_heartbeat_seconds)
            beats = list(self._beats.values())
            if not beats:
                continue
            try:
                async with self._pool.acquire() as conn:
                    await beat_jobs(conn, beats)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                # Missed beats only make the jobs look dead if this lasts: then they run again
                # elsewhere, and the attempt number fences these.
                log.warning("heartbeat not recorded", extra={"error": type(exc).__name__, "jobs": len(beats)})
