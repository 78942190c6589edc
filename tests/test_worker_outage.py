"""A worker outlives its dependencies: Redis unreachable for a few seconds while a real worker
process runs, jobs submitted meanwhile, and every job completes without restarting anything."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.test_extract import seed_site, submit
from tests.test_extract_reliability import TcpProxy, _start_worker, _stop, _upstream, _via
from tests.world import SITE_A

pytestmark = pytest.mark.slow


async def _statuses(pool, uuids: list[str]) -> list[str]:
    rows = await pool.fetch("SELECT status FROM jobs WHERE uuid = ANY($1::uuid[])", uuids)
    return sorted(r["status"] for r in rows)


async def test_worker_carries_on_after_redis_was_unreachable(client, world, pool, settings, tmp_path):
    await world.standard()
    await seed_site(pool, SITE_A, 5)
    proxy = TcpProxy(_upstream(settings.redis_url, 6379))
    await proxy.start()
    worker = _start_worker(
        settings.model_copy(update={"redis_url": _via(settings.redis_url, proxy.port)}),
        tmp_path / "worker.log",
        queue="all",
        PARTICIPANTS_JOB_REQUEUE_AFTER_SECONDS="2",
    )
    try:
        first = await submit(client, world)
        deadline = time.monotonic() + 30
        while await _statuses(pool, [first]) != ["COMPLETED"]:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            await asyncio.sleep(0.2)

        await proxy.stop()  # Redis is gone for the worker; the API still reaches it
        jobs = [await submit(client, world) for _ in range(4)]
        await asyncio.sleep(3)
        await proxy.start()

        deadline = time.monotonic() + 45
        while await _statuses(pool, jobs) != ["COMPLETED"] * 4:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            await asyncio.sleep(0.2)
        assert worker.poll() is None  # the same process did it
    finally:
        _stop(worker)
        if proxy.server is not None and proxy.server.is_serving():
            await proxy.stop()
