"""Shared pieces of the webhook tests (no tests here): a scripted receiver, finished jobs, a burst worker."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer

from service.core.jobs import lifecycle, model
from service.settings import Settings
from tests.world import SITE_A, STUDY

ALLOW_LOCAL = {"webhook_allowed_networks": ["127.0.0.1/32"]}


@dataclass
class Receiver:
    """A real HTTP server that answers from a script: an int is a status, ("sleep", s) a slow answer,
    (status, headers) a status with headers. After the script it answers 204."""

    script: list[Any] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers.items()), body))
        step = self.script.pop(0) if self.script else 204
        if isinstance(step, tuple) and step[0] == "sleep":
            await asyncio.sleep(step[1])
            return web.Response(status=200, text="late")
        if isinstance(step, tuple):
            return web.Response(status=step[0], headers=step[1], text=f"answer {step[0]}")
        return web.Response(status=step, text=f"answer {step}")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return str(self.server.make_url("/hook"))

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


async def finished_job(
    pool: asyncpg.Pool,
    status: str = "COMPLETED",
    study: str = STUDY,
    site: str | None = SITE_A,
    owner: str = "crc_a",
) -> uuid.UUID:
    """A job row taken to ``status`` through the job store (the outbox is written on the way)."""
    async with pool.acquire() as conn:
        study_id = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", study)
        site_id = await conn.fetchval("SELECT id FROM sites WHERE oid = $1", site) if site else None
        owner_id = await conn.fetchval("SELECT id FROM users WHERE username = $1", owner)
        row = await lifecycle.create_job(conn, model.NewJob(job_type="EXTRACT_PARTICIPANTS", study_id=study_id, site_id=site_id, owner_id=owner_id,
            file_name=f"{study}-{site}_Participant Access Code_2026-01-01-000000000Z.csv"))  # fmt: skip
        await conn.execute(
            "UPDATE jobs SET status = 'IN_PROGRESS', attempts = 1 WHERE uuid = $1", row["uuid"]
        )
        if status == "COMPLETED":
            import datetime as dt

            made = model.JobFile(
                row_count=3, byte_size=120, sha256="ab" * 32, object_key=f"extracts/{row['uuid']}.csv"
            )
            await lifecycle.complete_job(conn, row["uuid"], 1, made, dt.timedelta(hours=24))
        elif status == "FAILED":
            await lifecycle.fail_job(conn, row["uuid"], "storage: unavailable")
        else:
            await lifecycle.cancel_attempt(conn, row["uuid"], None)
    return row["uuid"]


async def run_default_worker(settings: Settings) -> None:
    """A burst worker on the default queue: runs what is queued now, then stops and closes."""
    from service.worker.main import build_worker

    worker = build_worker(settings, settings.default_queue, burst=True, poll_delay=0.01, cron_jobs=[])
    try:
        await worker.main()
    finally:
        with warnings.catch_warnings():  # arq calls redis' deprecated close()
            warnings.simplefilter("ignore", DeprecationWarning)
            await worker.close()


async def sweep(settings: Settings, pool: asyncpg.Pool) -> int:
    """The sweeper cron's body, as a worker would run it."""
    from arq import create_pool

    from service.core.redis import redis_settings
    from service.worker.webhooks import sweep_webhook_outbox

    redis = await create_pool(redis_settings(settings))
    try:
        return await sweep_webhook_outbox({"settings": settings, "db": pool, "redis": redis})
    finally:
        await redis.aclose()


async def make_due(pool: asyncpg.Pool) -> None:
    """Skip the backoff wait: every pending message is due now."""
    await pool.execute("UPDATE webhook_messages SET next_attempt_at = now() WHERE status = 'pending'")
