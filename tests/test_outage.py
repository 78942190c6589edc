"""Postgres connections cut under load: every answer is 200 or 503 (never another 5xx), and every
acknowledged write is in the database afterwards. The connections die mid-statement, which is when
asyncpg raises its least obvious errors (protocol state, connection closed, pool closing)."""

from __future__ import annotations

import asyncio
import collections
import time

from tests.test_extract_reliability import TcpProxy, _upstream, _via
from tests.world import SITE_A, STUDY

PARTICIPANTS = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
CLIENTS = 24
LOAD_SECONDS = 6.0


async def test_connections_cut_under_load_answer_only_200_or_503(make_client, world, pool, settings):
    await world.standard()
    proxy = TcpProxy(_upstream(settings.database_url, 5432))
    await proxy.start()
    client = await make_client(
        database_url=_via(settings.database_url, proxy.port),
        db_timeout_seconds=2.0,
        db_acquire_timeout_seconds=1.0,
    )
    headers = world.auth("crc_a")
    statuses: collections.Counter[int] = collections.Counter()
    acknowledged: list[str] = []
    stop_at = time.monotonic() + LOAD_SECONDS

    async def one_client(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            key = f"OUT-{n:02d}-{i:05d}"
            i += 1
            resp = await client.post(
                PARTICIPANTS,
                json={"subjectKey": key, "firstName": "Ann", "lastName": "O'Neil, Jr"},
                headers=headers,
            )
            statuses[resp.status] += 1
            await resp.read()
            if resp.status == 200:
                acknowledged.append(key)
            elif resp.status == 503:
                assert resp.headers.get("Retry-After")
                await asyncio.sleep(0.05)

    async def cut_again_and_again() -> None:
        while time.monotonic() < stop_at - 1.0:
            await asyncio.sleep(0.4)
            await proxy.stop()  # every connection aborted, in whatever state it was
            await asyncio.sleep(0.2)
            await proxy.start()

    try:
        await asyncio.gather(cut_again_and_again(), *(one_client(n) for n in range(CLIENTS)))
    finally:
        await proxy.close()
    print(f"\noutage: answers by status {dict(sorted(statuses.items()))}")  # for the closing note's figures
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 0 and statuses[503] > 0, statuses  # the cut happened, and work got done
    stored = {
        r["subject_key"]
        for r in await pool.fetch("SELECT subject_key FROM participants WHERE subject_key LIKE 'OUT-%'")
    }
    assert set(acknowledged) <= stored
