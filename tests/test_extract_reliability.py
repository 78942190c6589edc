"""Extract reliability: re-runs, a worker killed mid-stream, Redis losing its queue, failures that
must end FAILED, and 503s (not 500s) while Postgres or Redis is unreachable.

The kill test starts and SIGKILLs real worker processes (``python -m service.cli worker``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

import asyncpg
import pytest
from arq.connections import create_pool as create_arq_pool

from service.core.redis import redis_settings
from service.settings import Settings
from service.worker.context import shutdown, startup
from service.worker.maintenance import sweep_jobs
from tests.s3 import s3_server, s3_settings  # noqa: F401
from tests.test_extract import JOBS, SUBMIT, download, parse_csv, run_jobs, seed_site, submit
from tests.world import SITE_A, STUDY, expect

ROOT = Path(__file__).resolve().parent.parent


async def _flush_redis(settings: Settings) -> None:
    redis = await create_arq_pool(redis_settings(settings))
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


async def _sweep(settings: Settings, **overrides: Any) -> int:
    ctx: dict[str, Any] = {"settings": settings.model_copy(update=overrides)}
    await startup(ctx)
    ctx["redis"] = await create_arq_pool(redis_settings(settings))
    try:
        return await sweep_jobs(ctx)
    finally:
        await ctx["redis"].aclose()
        await shutdown(ctx)


async def _job(pool: asyncpg.Pool, job_uuid: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1", UUID(job_uuid))
    assert row is not None
    return row


# ---- Redis loses the queue ----


async def test_redis_flushed_with_jobs_queued_every_job_finishes(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 40)
    queued = [await submit(client, world) for _ in range(3)]
    # One job was running when Redis went away: IN_PROGRESS with an old heartbeat.
    running = await submit(client, world)
    await pool.execute(
        "UPDATE jobs SET status = 'IN_PROGRESS', attempts = 1, heartbeat_at = now() - interval '1 hour' WHERE uuid = $1",
        UUID(running),
    )
    # And one was running recently: the sweeper must leave it alone.
    fresh = await submit(client, world)
    await pool.execute(
        "UPDATE jobs SET status = 'IN_PROGRESS', attempts = 1, heartbeat_at = now() WHERE uuid = $1",
        UUID(fresh),
    )
    await _flush_redis(settings)
    await run_jobs(settings)  # nothing to do: Redis forgot everything
    assert {r["status"] for r in await pool.fetch("SELECT status FROM jobs")} == {"IN_QUEUE", "IN_PROGRESS"}

    # Queued jobs younger than job_requeue_after_seconds are left to their own message; the stale one goes.
    assert await _sweep(settings) == 1
    assert await _sweep(settings, job_requeue_after_seconds=0.001, job_stale_seconds=60) == 3
    # Sweeping again while arq holds them adds nothing (same UUID, same arq job).
    assert await _sweep(settings, job_requeue_after_seconds=0.001, job_stale_seconds=60) == 0
    await run_jobs(settings)
    for job_uuid in [*queued, running]:
        job = await _job(pool, job_uuid)
        assert (job["status"], job["row_count"]) == ("COMPLETED", 40), job_uuid
    assert (await _job(pool, running))["attempts"] == 2
    assert (await _job(pool, fresh))["status"] == "IN_PROGRESS"
    body = await (await download(client, world, running)).read()
    assert len(parse_csv(body)) == 41


async def test_a_job_out_of_attempts_fails_instead_of_looping(client, world, pool, settings):
    await world.standard()
    job_uuid = await submit(client, world)
    await pool.execute(
        "UPDATE jobs SET status = 'IN_PROGRESS', attempts = $2, heartbeat_at = now() - interval '1 hour' WHERE uuid = $1",
        UUID(job_uuid),
        settings.job_max_attempts,
    )
    await _flush_redis(settings)
    assert await _sweep(settings, job_stale_seconds=1) == 0
    job = await _job(pool, job_uuid)
    assert job["status"] == "FAILED" and job["error"] == f"gave up after {settings.job_max_attempts} attempts"
    # The same when the message itself comes back once more.
    other = await submit(client, world)
    await pool.execute(
        "UPDATE jobs SET attempts = $2 WHERE uuid = $1", UUID(other), settings.job_max_attempts
    )
    await run_jobs(settings)
    assert (await _job(pool, other))["status"] == "FAILED"


# ---- failures end FAILED, never COMPLETED ----


async def test_storage_down_through_every_attempt_ends_failed_with_the_reason(
    make_client, world, pool, s3_settings
):
    # An outage hands the job back for another attempt (worker/retries.py); the last one fails it.
    down = s3_settings.model_copy(
        update={"s3_endpoint": "http://127.0.0.1:9", "storage_timeout_seconds": 1.0,
                "job_max_attempts": 2, "job_retry_delay_seconds": 0.2}
    )  # fmt: skip
    client = await make_client(
        storage_backend="s3",
        s3_endpoint=down.s3_endpoint,
        s3_bucket=down.s3_bucket,
        s3_allow_http=True,
        s3_access_key_id="x",
        s3_secret_access_key="y",
    )
    await world.standard()
    await seed_site(pool, SITE_A, 10)
    job_uuid = await submit(client, world)
    await run_jobs(down)
    job = await _job(pool, job_uuid)
    assert job["status"] == "FAILED" and job["attempts"] == 2, job
    assert job["error"] == "storage: StorageUnavailable (OSError)", job["error"]  # connection refused
    assert job["sha256"] is None and job["completed_at"] is not None
    body = await expect(await download(client, world, job_uuid), 409)
    assert body == {"message": "errorCode.jobFailed", "params": {"jobUuid": job_uuid, "status": "FAILED"}}
    status = await expect(await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert status["status"] == "FAILED" and status["error"] == job["error"]
    # A late duplicate run cannot turn it into COMPLETED.
    await run_jobs(s3_settings)
    assert (await _job(pool, job_uuid))["status"] == "FAILED"


async def test_query_error_ends_failed_with_the_reason(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 10)
    job_uuid = await submit(client, world)
    await pool.execute("ALTER TABLE participants RENAME COLUMN phone_ct TO phone_ct_gone")
    try:
        await run_jobs(settings)
    finally:
        await pool.execute("ALTER TABLE participants RENAME COLUMN phone_ct_gone TO phone_ct")
    job = await _job(pool, job_uuid)
    assert job["status"] == "FAILED"
    assert job["error"] == "database: UndefinedColumnError (SQLSTATE 42703)"
    assert not (settings.storage_dir / job["object_key"]).exists()


async def test_cancel_mid_stream_stops_between_chunks(client, world, pool, settings):
    from service.worker.extract import extract_participants_job

    await world.standard()
    await seed_site(pool, SITE_A, 200_000)
    job_uuid = await submit(client, world)
    s = settings.model_copy(update={"job_heartbeat_seconds": 0.01})
    ctx: dict[str, Any] = {"settings": s}
    await startup(ctx)
    try:
        task = asyncio.create_task(extract_participants_job(ctx, job_uuid))
        deadline = time.monotonic() + 30
        while (await _job(pool, job_uuid))["rows_done"] == 0:
            assert not task.done() and time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await pool.execute("UPDATE jobs SET cancel_requested = true WHERE uuid = $1", UUID(job_uuid))
        assert await asyncio.wait_for(task, 30) == "CANCELLED"
    finally:
        await shutdown(ctx)
    job = await _job(pool, job_uuid)
    assert job["status"] == "CANCELLED" and 0 < job["rows_done"] < 200_000
    assert not (settings.storage_dir / job["object_key"]).exists()


# ---- a worker killed mid-stream ----


def _worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTICIPANTS_")}
    defaults = {
        "PARTICIPANTS_DATABASE_URL": str(settings.database_url),
        "PARTICIPANTS_REDIS_URL": str(settings.redis_url),
        "PARTICIPANTS_STORAGE_PATH": str(settings.storage_dir),
        "PARTICIPANTS_JWT_SECRET": settings.jwt_secret or "",
        "PARTICIPANTS_KEK": settings.kek or "",
        "PARTICIPANTS_LOG_JSON": "false",
        "PARTICIPANTS_LOG_LEVEL": "WARNING",
        "PARTICIPANTS_WORKER_POLL_DELAY": "0.05",
        "PARTICIPANTS_JOB_HEARTBEAT_SECONDS": "0.02",
    }
    env.update({**defaults, **extra})  # the caller's values win
    return env


def _start_worker(
    settings: Settings, log_path: Path, queue: str = "extract", **extra: str
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--queue", queue],
            cwd=ROOT,
            env=_worker_env(settings, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@pytest.mark.slow
async def test_worker_killed_mid_stream_is_retried_and_completes(client, world, pool, settings, tmp_path):
    await world.standard()
    n = 400_000
    await seed_site(pool, SITE_A, n)
    job_uuid = await submit(client, world)
    timeout = "12"  # arq's in-progress key outlives a job by timeout + 10 s: recovery well under a minute
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            _start_worker(settings, tmp_path / "w1.log", PARTICIPANTS_EXTRACT_JOB_TIMEOUT_SECONDS=timeout)
        )
        deadline = time.monotonic() + 60
        while True:
            job = await _job(pool, job_uuid)
            if job["status"] == "IN_PROGRESS" and job["rows_done"] > 0:
                break
            assert job["status"] in ("IN_QUEUE", "IN_PROGRESS"), job
            assert time.monotonic() < deadline, (tmp_path / "w1.log").read_text()
            await asyncio.sleep(0.005)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=10)
        killed_at = time.monotonic()
        job = await _job(pool, job_uuid)
        assert job["status"] == "IN_PROGRESS" and job["rows_done"] < n, "the job finished before the kill"
        # The partial upload is not an object, and the API will not serve anything.
        assert not (settings.storage_dir / job["object_key"]).exists()
        partials = list((settings.storage_dir / "extracts").glob("*#*"))
        body = await expect(await download(client, world, job_uuid), 200)  # OC4's polling answer
        assert body["message"] == "errorCode.jobInProgress"

        procs.append(
            _start_worker(settings, tmp_path / "w2.log", PARTICIPANTS_EXTRACT_JOB_TIMEOUT_SECONDS=timeout)
        )
        while (job := await _job(pool, job_uuid))["status"] != "COMPLETED":
            assert job["status"] in ("IN_QUEUE", "IN_PROGRESS"), (job["status"], job["error"])
            assert time.monotonic() - killed_at < 60, (tmp_path / "w2.log").read_text()
            await asyncio.sleep(0.1)
        recovery = time.monotonic() - killed_at
    finally:
        for proc in procs:
            _stop(proc)
    assert recovery < 60
    assert job["attempts"] == 2 and job["row_count"] == n
    # What the killed upload had staged (if it got that far) is gone with the retry.
    assert not list((settings.storage_dir / "extracts").glob("*#*")), partials
    resp = await download(client, world, job_uuid)
    body = await resp.read()
    assert resp.status == 200 and len(body) == job["byte_size"]
    rows = parse_csv(body)
    assert len(rows) == n + 1 and rows[1][0] == "P0000001" and rows[-1][0] == f"P{n:07d}"


@pytest.mark.slow
async def test_the_sweeper_cron_in_a_real_worker_recovers_a_flushed_queue(
    client, world, pool, settings, tmp_path
):
    await world.standard()
    await seed_site(pool, SITE_A, 30)
    jobs = [await submit(client, world) for _ in range(3)]
    await _flush_redis(settings)
    proc = _start_worker(settings, tmp_path / "all.log", "all", PARTICIPANTS_JOB_REQUEUE_AFTER_SECONDS="0.5")
    try:
        deadline = time.monotonic() + 45
        while {(await _job(pool, j))["status"] for j in jobs} != {"COMPLETED"}:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "all.log").read_text()
            await asyncio.sleep(0.1)
    finally:
        _stop(proc)
    for j in jobs:
        assert (await _job(pool, j))["row_count"] == 30


# ---- 503 while Postgres or Redis is unreachable, and recovery ----


class TcpProxy:
    """A TCP forwarder we can cut and restore, standing in for a dependency going away.

    Its listening socket is bound once (port 0, read back) and kept until ``close``: cut, it resets
    every connection at once, so no other process can take its port while the dependency is away.
    """

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target  # (host, port), or a unix socket's path (the embedded Postgres)
        self.port = 0
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.up = False

    async def start(self) -> None:
        """Forward (again)."""
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
        self.up = True

    async def stop(self) -> None:
        """Cut: every open connection aborted, and new ones reset."""
        self.up = False
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        await self.stop()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            if isinstance(self.target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.difference_update((writer, up_writer))


def _upstream(url: str, default_port: int) -> tuple[str, int] | str:
    """Where ``url`` connects: (host, port), or the unix socket a ``?host=/dir`` DSN names."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if socket_dir.startswith("/"):
        return f"{socket_dir}/.s.PGSQL.{parts.port or default_port}"
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _via(url: str, port: int) -> str:
    """``url`` through the proxy on 127.0.0.1:``port`` (over TCP, whatever the original was)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host, query=query))


async def _until(predicate: Any, seconds: float = 15.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = await predicate()
        if result is not None:
            return result
        assert time.monotonic() < deadline, "did not recover"
        await asyncio.sleep(0.2)


async def test_503_while_postgres_or_redis_is_down_and_recovery(make_client, world, pool, settings):
    await world.standard()
    pg_proxy = TcpProxy(_upstream(settings.database_url, 5432))
    redis_proxy = TcpProxy(_upstream(settings.redis_url, 6379))
    await pg_proxy.start()
    await redis_proxy.start()
    client = await make_client(
        database_url=_via(settings.database_url, pg_proxy.port),
        redis_url=_via(settings.redis_url, redis_proxy.port),
        db_timeout_seconds=2.0,
    )
    h = world.auth("crc_a")
    try:
        await expect(await client.get(JOBS, headers=h), 200)

        await pg_proxy.stop()
        for method, url in (("GET", JOBS), ("GET", SUBMIT), ("GET", f"{JOBS}/{UUID(int=1)}/downloadFile")):
            resp = await client.request(method, url, headers=h)
            body = await expect(resp, 503)
            assert body["message"] == "errorCode.serviceUnavailable" and resp.headers["Retry-After"]
        await pg_proxy.start()

        async def jobs_ok() -> Any:
            resp = await client.get(JOBS, headers=h)
            return True if resp.status == 200 else None

        await _until(jobs_ok)

        await redis_proxy.stop()
        resp = await client.get(SUBMIT, headers=h)
        body = await expect(resp, 503)
        assert body["message"] == "errorCode.serviceUnavailable"
        assert await pool.fetchval("SELECT count(*) FROM jobs") == 0  # the unqueued job was withdrawn
        await expect(await client.get(JOBS, headers=h), 200)  # Redis is not needed to read
        await redis_proxy.start()

        async def submit_ok() -> Any:
            resp = await client.get(SUBMIT, headers=h)
            return (await resp.text()) if resp.status == 200 else None

        text = await _until(submit_ok)
        assert text.startswith("job uuid: ")
        await run_jobs(settings)
        job_uuid = text.removeprefix("job uuid: ")
        assert (await _job(pool, job_uuid))["status"] == "COMPLETED"
        assert STUDY in (await _job(pool, job_uuid))["file_name"]
    finally:
        for proxy in (pg_proxy, redis_proxy):
            await proxy.close()
