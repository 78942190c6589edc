"""Redis fails over through Sentinel under load: a master, a replica and three sentinels this test
owns (Debian's ``redis-server``, also run as ``--sentinel``); the API and two workers configured
with the sentinels. Extracts are queued, a submit goes in every 0.5 s, and the master is killed.

Asserted: the sentinels' new master is found; every acknowledged extract ends ``COMPLETED`` on its
first attempt; no answer >= 500 but 503 (with ``Retry-After``); submits are accepted again within
15 s of the master's death; the workers never restarted (their running jobs were not cancelled).
And a Redis that stops answering (its process stopped) turns a submit into a 503 within the
client's timeouts, never a request that hangs.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from redis.asyncio import Redis

from tests.engines import RedisSentinels, redis_server_binary
from tests.failover_load import Tally, report, submit_extract, until_workers_up, wait_for_jobs
from tests.test_extract import SUBMIT, seed_site
from tests.test_extract_reliability import _start_worker, _stop
from tests.world import SITE_A

pytestmark = pytest.mark.slow

QUEUED = 20
TRICKLE_SECONDS = 0.5
AFTER_KILL_SECONDS = 15.0
ACCEPTED_AGAIN_WITHIN_SECONDS = 15.0


@pytest.fixture
def sentinels():
    if redis_server_binary() is None:
        pytest.skip("no redis-server on this machine (apt-get install redis-server)")
    servers = RedisSentinels()
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


async def _master(servers: RedisSentinels) -> int | None:
    """The master's port as the first sentinel that answers names it."""
    for port in servers.sentinel_ports:
        sentinel = Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            addr = await sentinel.execute_command("SENTINEL", "get-master-addr-by-name", servers.MASTER)
            return int(addr[1])
        except (OSError, ConnectionError, TimeoutError, Exception):  # noqa: BLE001 - try the next one
            continue
        finally:
            await sentinel.aclose()
    return None


async def test_redis_master_killed_sentinels_promote_and_the_service_follows(
    sentinels, make_client, world, pool, settings, tmp_path, capsys
):
    started = time.monotonic()
    await world.standard()
    await seed_site(pool, SITE_A, 30_000)  # an extract of a few tenths of a second
    via_sentinels = {
        "redis_url": "redis://127.0.0.1:1/0",  # its host is not used: the sentinels name the master
        "redis_sentinels": sentinels.sentinels.split(","),
        "redis_sentinel_master": sentinels.MASTER,
        "redis_timeout_seconds": 1.0,
    }
    client = await make_client(**via_sentinels)
    worker_settings = settings.model_copy(update=via_sentinels)
    env = {
        "PARTICIPANTS_REDIS_SENTINELS": sentinels.sentinels,
        "PARTICIPANTS_REDIS_SENTINEL_MASTER": sentinels.MASTER,
        "PARTICIPANTS_REDIS_TIMEOUT_SECONDS": "1",
        "PARTICIPANTS_EXTRACT_MAX_JOBS": "2",  # the queue drains over a few seconds, across the kill
        "PARTICIPANTS_JOB_HEARTBEAT_SECONDS": "0.5",
        "PARTICIPANTS_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    logs = [tmp_path / "extract.log", tmp_path / "default.log"]
    workers = [
        _start_worker(worker_settings, logs[0], queue="extract", **env),
        _start_worker(worker_settings, logs[1], queue="default", **env),
    ]
    headers = world.auth("crc_a")
    tally = Tally()
    try:
        queued = [await submit_extract(client, headers, tally) for _ in range(QUEUED)]
        assert all(queued), tally.statuses
        master = Redis(host="127.0.0.1", port=sentinels.master_port)
        await until_workers_up(master, settings, lambda: "\n".join(p.read_text()[-2000:] for p in logs))
        await master.aclose()
        in_queue_at_kill = await pool.fetchval("SELECT count(*) FROM jobs WHERE status <> 'COMPLETED'")
        stop_at = time.monotonic() + AFTER_KILL_SECONDS

        async def trickle() -> None:
            while time.monotonic() < stop_at:
                await submit_extract(client, headers, tally)
                await asyncio.sleep(TRICKLE_SECONDS)

        async def kill_and_watch() -> tuple[float, float | None, int | None]:
            sentinels.kill(sentinels.master_port)
            killed = time.monotonic()
            while time.monotonic() < stop_at:
                port = await _master(sentinels)
                if port is not None and port != sentinels.master_port:
                    return killed, time.monotonic() - killed, port
                await asyncio.sleep(0.1)
            return killed, None, None

        (killed, promoted_after, new_master), _ = await asyncio.gather(kill_and_watch(), trickle())
        jobs = await wait_for_jobs(
            pool, tally.acknowledged, 60, lambda: "\n".join(p.read_text()[-2000:] for p in logs)
        )
        worker_logs = "".join(p.read_text() for p in logs)
        ready = await client.get("/readyz")
        ready_status = ready.status
    finally:
        for proc in workers:
            _stop(proc)

    from service.web.resources import LINKS

    redis_link = client.server.app[LINKS].redis
    accepted_again = tally.first_ok_after(killed)
    after_kill = [t for t in tally.ok_times if t >= killed]
    report(capsys, "Redis failover through Sentinel (master killed):", {
        "new master found by the sentinels after (s)": None if promoted_after is None else round(promoted_after, 2),
        "submits acknowledged (20 queued + trickle)": len(tally.acknowledged),
        "of the 20, unfinished when the master was killed": in_queue_at_kill,
        "submits acknowledged after the kill": len(after_kill),
        "submit answers by status": dict(sorted(tally.statuses.items())),
        "first submit accepted after the kill (s)": None if accepted_again is None else round(accepted_again, 2),
        "job statuses": {s: sum(1 for j in jobs if j["status"] == s) for s in {j["status"] for j in jobs}},
        "jobs with more than one attempt": sum(1 for j in jobs if j["attempts"] != 1),
        "API: Redis connections opened, failovers seen": (redis_link.connections, redis_link.failovers),
        "worker restarts": worker_logs.count("worker stopped by itself"),
        "test run time (s)": round(time.monotonic() - started, 1),
    })  # fmt: skip

    assert new_master == sentinels.replica_port
    assert not tally.bad() and tally.missing_retry_after == 0, tally.statuses
    assert accepted_again is not None and accepted_again < ACCEPTED_AGAIN_WITHIN_SECONDS
    assert all(j["status"] == "COMPLETED" for j in jobs), [(j["status"], j["error"]) for j in jobs]
    assert all(j["attempts"] == 1 for j in jobs), [j["attempts"] for j in jobs]
    assert redis_link.failovers >= 1 and redis_link.server == f"127.0.0.1:{sentinels.replica_port}"
    assert "worker stopped by itself" not in worker_logs, worker_logs[-3000:]
    assert ready_status == 200


async def test_a_redis_that_stops_answering_is_a_503_within_the_timeout(
    sentinels, make_client, world, settings, capsys
):
    await world.standard()
    client = await make_client(
        redis_url=f"redis://127.0.0.1:{sentinels.master_port}/0",
        redis_timeout_seconds=1.0,
        redis_connect_timeout_seconds=1.0,
    )
    headers = world.auth("crc_a")
    assert (await client.get(SUBMIT, headers=headers)).status == 200
    master = sentinels.procs[sentinels.master_port]
    master.send_signal(signal.SIGSTOP)  # alive, connected, silent: as a master in DEBUG SLEEP
    try:
        began = time.monotonic()
        resp = await asyncio.wait_for(client.get(SUBMIT, headers=headers), 10)
        waited = time.monotonic() - began
        body = await resp.json()
    finally:
        master.send_signal(signal.SIGCONT)
    report(
        capsys,
        "Redis silent (process stopped):",
        {"submit answered": resp.status, "after (s)": round(waited, 2)},
    )
    assert resp.status == 503 and resp.headers["Retry-After"], body
    assert waited < 3.0  # the read timeout (1 s) and the connect timeout, never the silence itself
