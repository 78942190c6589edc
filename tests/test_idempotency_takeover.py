"""An Idempotency-Key claimed by a request whose process died (``participants serve`` killed mid-
request) is taken over by a retry once the claim's lease is over: 409 requestInProgress before,
then the retry runs (once), and its answer is the one replayed after."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from tests.serving import bound_port, start_serve
from tests.test_idempotency import ADD, PERSON, _count, _with_key
from tests.world import expect

pytestmark = pytest.mark.slow
LEASE = 2.0


async def test_a_crashed_requests_claim_is_taken_over_after_the_lease(make_client, world, settings, tmp_path):
    await world.standard()
    headers = _with_key(world, "crc_a", "crash")
    log_path = tmp_path / "serve.log"
    proc = start_serve(settings, log_path)
    try:
        port = bound_port(proc, log_path)
        async with world.pool.acquire() as lock, aiohttp.ClientSession() as http:
            tx = lock.transaction()
            await tx.start()
            # The request claims its key, then waits on the table it must write to.
            await lock.execute("LOCK TABLE participants IN EXCLUSIVE MODE")
            first = asyncio.create_task(
                http.post(f"http://127.0.0.1:{port}{ADD}", json=PERSON, headers=headers)
            )
            for _ in range(200):
                if await world.pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE status IS NULL"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the request never claimed its key: " + log_path.read_text()[-2000:])
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            with pytest.raises(aiohttp.ClientError):
                await first
            # Its connections die with it, as when a machine goes down (Postgres would otherwise
            # notice only when the waiting statement goes on).
            await world.pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            await tx.rollback()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert await _count(world, "participants") == 0

    client = await make_client(idempotency_lease_seconds=LEASE)
    busy = await client.post(ADD, json=PERSON, headers=headers)
    assert (await expect(busy, 409))["message"] == "errorCode.requestInProgress"  # within the lease
    await asyncio.sleep(LEASE + 0.2)
    taken_over = await client.post(ADD, json=PERSON, headers=headers)
    body = await expect(taken_over, 200)
    assert "Idempotent-Replayed" not in taken_over.headers  # it ran
    assert body["subjectKey"] == PERSON["subjectKey"]
    again = await client.post(ADD, json=PERSON, headers=headers)
    assert await expect(again, 200) == body and again.headers["Idempotent-Replayed"] == "true"
    assert await _count(world, "participants") == 1
