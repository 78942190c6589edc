"""Postgres fails over under load: a primary and a synchronous streaming standby (clusters this test
owns), the API and a worker on a two-host DSN with ``target_session_attrs=read-write``, 32 clients
adding participants and a stream of extract submits; the primary is killed (``pg_ctl stop -m
immediate``) and the standby promoted. Then the old primary comes back read-only, listed first.

Asserted: every acknowledged add is on the new primary; no answer >= 500 but 503 (each with
``Retry-After``); adds succeed again within 10 s of the promotion; every acknowledged extract ends
``COMPLETED``; the webhook outbox listener listens again; nothing is written to the old primary.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from service.core.db import create_pool, migrate_dsn
from service.core.protection.loading import load_keyring
from service.web.resources import LINKS
from tests.engines import PgPair, pg_available
from tests.failover_load import PARTICIPANTS, Tally, report, submit_extract, until_workers_up, wait_for_jobs
from tests.test_extract import seed_site
from tests.test_extract_reliability import _start_worker, _stop
from tests.world import SITE_A, World

pytestmark = pytest.mark.slow

CLIENTS = 32
BEFORE_KILL_SECONDS = 2.5
AFTER_PROMOTION_SECONDS = 5.0
OLD_PRIMARY_BACK_SECONDS = 3.0
WRITES_BACK_WITHIN_SECONDS = 10.0
RERUN_WITHIN_SECONDS = 10.0
# An extract (decrypting in the worker) runs long enough (about a second) to be cut mid-way.
SITE_ROWS = 40_000


@pytest.fixture
def pg_pair():
    if reason := pg_available():
        pytest.skip(reason)
    pair = PgPair()
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


async def _run(*cmd: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    assert await proc.wait() == 0, cmd


async def test_postgres_failover_under_load(pg_pair, make_client, settings, tmp_path, capsys):
    started = time.monotonic()
    admin = await asyncpg.connect(pg_pair.url("postgres", pg_pair.primary_port))
    await admin.execute("CREATE DATABASE participants")
    await admin.close()
    dsn = pg_pair.url("participants", pg_pair.primary_port, pg_pair.standby_port)
    await migrate_dsn(dsn)
    on_pair = settings.model_copy(update={"database_url": dsn})
    setup_pool = await create_pool(dsn, 1, 2, keyring=await load_keyring(on_pair))  # seeds encrypted rows
    world = World(setup_pool, settings)
    await world.standard()
    await seed_site(setup_pool, SITE_A, SITE_ROWS)
    await setup_pool.close()

    client = await make_client(database_url=dsn, db_timeout_seconds=2.0, db_acquire_timeout_seconds=1.0)
    log_path = tmp_path / "worker.log"
    worker = _start_worker(
        on_pair, log_path, queue="all",
        PARTICIPANTS_DB_TIMEOUT_SECONDS="2", PARTICIPANTS_JOB_RETRY_DELAY_SECONDS="0.5",
        PARTICIPANTS_JOB_HEARTBEAT_SECONDS="0.5", PARTICIPANTS_LOG_LEVEL="WARNING", PARTICIPANTS_LOG_JSON="true", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    redis = Redis.from_url(str(settings.redis_url))
    try:
        await until_workers_up(redis, settings, lambda: log_path.read_text()[-3000:])
    except BaseException:
        _stop(worker)  # a worker left running would take the next tests' jobs
        raise
    finally:
        await redis.aclose()
    headers = world.auth("crc_a")
    adds, extracts = Tally(), Tally()
    phase: dict[str, Any] = {"stop": False}

    async def one_client(n: int) -> None:
        i = 0
        while not phase["stop"]:
            key = f"FO-{n:02d}-{i:05d}"
            i += 1
            try:
                resp = await client.post(
                    PARTICIPANTS, json={"subjectKey": key, "firstName": "Ann"}, headers=headers
                )
                await resp.read()
            except (TimeoutError, OSError):
                adds.record(599, None)
                continue
            adds.record(resp.status, resp.headers.get("Retry-After"))
            if resp.status == 200:
                adds.acknowledged.append(key)
            elif resp.status == 503:
                await asyncio.sleep(0.05)

    async def submitter() -> None:
        while not phase["stop"]:
            await submit_extract(client, headers, extracts)
            # An extract that decrypts costs the worker some 0.4 s of CPU here: a submit every 0.4 s
            # keeps one running at most times without a backlog the re-runs would queue behind.
            await asyncio.sleep(0.4)

    async def fail_over() -> tuple[float, float, float]:
        await asyncio.sleep(BEFORE_KILL_SECONDS)
        killed = time.monotonic()
        phase["killed_at"] = time.time()
        await _run(*pg_pair.pg_ctl_command(pg_pair.primary_dir, "stop", "-m", "immediate"))
        await _run(*pg_pair.pg_ctl_command(pg_pair.standby_dir, "promote"))
        promoted = time.monotonic()
        await asyncio.sleep(AFTER_PROMOTION_SECONDS)
        # The old primary back, read-only, and first in the DSN: nothing may be written there.
        await asyncio.to_thread(pg_pair.restart_old_primary_as_standby)
        back = time.monotonic()
        await asyncio.sleep(OLD_PRIMARY_BACK_SECONDS)
        phase["stop"] = True
        return killed, promoted, back

    try:
        load = [asyncio.create_task(one_client(n)) for n in range(CLIENTS)]
        load.append(asyncio.create_task(submitter()))
        killed, promoted, back = await fail_over()
        await asyncio.gather(*load)
        load_seconds = time.monotonic() - started

        new_primary = await asyncpg.create_pool(pg_pair.url("participants", pg_pair.standby_port), min_size=1)
        jobs = await wait_for_jobs(
            new_primary, extracts.acknowledged, 60, lambda: log_path.read_text()[-3000:]
        )
        rerun_done = await new_primary.fetchval(
            "SELECT max(extract(epoch FROM completed_at)) FROM jobs WHERE attempts > 1"
        )
        saved = {
            r["subject_key"]
            for r in await new_primary.fetch(
                "SELECT subject_key FROM participants WHERE subject_key LIKE 'FO-%'"
            )
        }
        await new_primary.close()
        old = await asyncpg.connect(pg_pair.url("participants", pg_pair.primary_port))
        old_read_only = await old.fetchval("SELECT pg_is_in_recovery()")
        await old.close()
        worker_log = log_path.read_text()
        # An API whose DSN names only the old primary (now read-only): a write is a 503, never a
        # 500, and /readyz says why.
        stale = await make_client(database_url=pg_pair.url("participants", pg_pair.primary_port))
        refused = await stale.post(
            PARTICIPANTS, json={"subjectKey": "FO-RO-1", "firstName": "Ann"}, headers=headers
        )
        refused_body = await refused.json()
        stale_ready = await (await stale.get("/readyz")).json()
        postgres_link = client.server.app[LINKS].postgres
    finally:
        _stop(worker)

    adds_after_back = sum(1 for t in adds.ok_times if t > back)
    missing = set(adds.acknowledged) - saved
    first_ok = adds.first_ok_after(promoted)
    reruns = [j for j in jobs if j["attempts"] > 1]
    rerun_after = None if rerun_done is None else round(float(rerun_done) - phase["killed_at"], 2)
    report(capsys, "Postgres failover (primary killed, standby promoted):", {
        "adds acknowledged": len(adds.acknowledged),
        "acknowledged adds on the new primary": len(set(adds.acknowledged) & saved),
        "adds saved though not acknowledged (503 after the commit)": len(saved - set(adds.acknowledged)),
        "add answers by status": dict(sorted(adds.statuses.items())),
        "kill to promotion (s)": round(promoted - killed, 3),
        "first add 200 after the promotion (s)": None if first_ok is None else round(first_ok, 3),
        "adds acknowledged after the old primary came back read-only": adds_after_back,
        "extracts acknowledged": len(extracts.acknowledged),
        "extract answers by status": dict(sorted(extracts.statuses.items())),
        "extract statuses": {s: sum(1 for j in jobs if j["status"] == s) for s in {j["status"] for j in jobs}},
        "extracts run more than once (cut by the failover)": len(reruns),
        "those re-runs all completed within (s of the kill)": rerun_after,
        "API: Postgres connections opened, failovers seen": (postgres_link.connections, postgres_link.failovers),
        "write through a DSN naming only the read-only old primary": refused.status,
        "worker restarts": worker_log.count("worker stopped by itself"),
        "test run time (s)": round(time.monotonic() - started, 1),
        "load time (s)": round(load_seconds, 1),
    })  # fmt: skip

    assert not missing, f"{len(missing)} acknowledged adds are not on the new primary"
    assert not adds.bad() and not extracts.bad(), (adds.statuses, extracts.statuses)
    assert adds.missing_retry_after == 0 and extracts.missing_retry_after == 0
    assert first_ok is not None and first_ok < WRITES_BACK_WITHIN_SECONDS
    assert adds_after_back > 0  # writes went on, to the new primary, with the old one listed first
    assert old_read_only
    assert extracts.acknowledged and all(j["status"] == "COMPLETED" for j in jobs), [
        (j["status"], j["error"]) for j in jobs if j["status"] != "COMPLETED"
    ]
    assert rerun_after is None or rerun_after < RERUN_WITHIN_SECONDS  # not when the sweeper notices
    assert postgres_link.failovers >= 1 and postgres_link.server == f"127.0.0.1:{pg_pair.standby_port}"
    assert refused.status == 503 and refused.headers["Retry-After"], refused_body
    assert stale_ready["params"]["checks"]["postgres"].startswith("read-only (a standby)"), stale_ready
    assert "outbox listener listening again" in worker_log
    # The workers' arq loops outlived it: a restart would have cancelled the jobs they were running.
    assert "worker stopped by itself" not in worker_log, worker_log[-4000:]
