"""An exhausted connection pool answers 503 with Retry-After within the acquire timeout: a request
never hangs because others hold every connection (slow clients, a stuck query)."""

from __future__ import annotations

import asyncio
import time

from service.web.resources import DB
from tests.world import SITE_A, STUDY, expect

PARTICIPANTS = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"


async def test_exhausted_pool_is_a_fast_503(make_client, world):
    client = await make_client(db_pool_min=1, db_pool_max=2, db_acquire_timeout_seconds=0.5)
    await world.standard()
    pool = client.server.app[DB]
    held = [await pool.acquire(), await pool.acquire()]  # every connection the pool may open
    try:
        started = time.monotonic()
        resp = await asyncio.wait_for(client.get(PARTICIPANTS, headers=world.auth("crc_a")), 10)
        body = await expect(resp, 503)
        assert body["message"] == "errorCode.serviceUnavailable"
        assert resp.headers["Retry-After"]
        assert time.monotonic() - started < 5  # the timeout, not a hang (generous for a loaded machine)
    finally:
        for conn in held:
            await pool.release(conn)
    assert (await client.get(PARTICIPANTS, headers=world.auth("crc_a"))).status == 200
