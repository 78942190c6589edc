"""Fifty clients sending bulk files at a trickle do not starve anyone: an upload holds a temp file
while its body arrives, not one of the pool's 20 connections (which would make every other request
wait, then answer 503 when the acquire timeout ends)."""

from __future__ import annotations

import asyncio

from tests.world import SITE_A, STUDY, expect

TRICKLERS = 50
BULK = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/bulk"
LIST = f"/pages/auth/api/clinicaldata/studies/{STUDY}/participants"


async def _trickle(
    host: str, port: int, token: str, n: int, started: asyncio.Event, go: asyncio.Event
) -> bytes:
    """A raw HTTP upload whose body comes a few bytes at a time, finishing only after ``go``."""
    body = f"ParticipantID\nT-{n:03d}-1\nT-{n:03d}-2\n".encode()
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST {BULK.replace('(', '%28').replace(')', '%29')} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode() + body[:5])
    await writer.drain()
    started.set()
    for i in range(5, len(body) - 1):
        if i == len(body) - 2:
            await go.wait()  # the last bytes wait until the others have been served
        writer.write(body[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0.02)
    writer.write(body[-1:])
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_fifty_tricklers_leave_the_pool_to_everyone_else(make_client, world):
    await world.standard()
    client = await make_client(db_pool_max=20, db_acquire_timeout_seconds=1.0)
    host, port = client.server.host, client.server.port
    token = world.token("crc_a")
    go = asyncio.Event()
    starts = [asyncio.Event() for _ in range(TRICKLERS)]
    uploads = [asyncio.create_task(_trickle(host, port, token, n, starts[n], go)) for n in range(TRICKLERS)]
    await asyncio.gather(*(s.wait() for s in starts))
    await asyncio.sleep(1.5)  # every trickler is inside the handler, its body half sent

    # Meanwhile: reads and writes that need Postgres are served (a starved pool answers 503).
    others = await asyncio.gather(
        *(client.get(LIST, headers=world.auth("dm")) for _ in range(20)),
        *(client.post(f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants",
                      json={"subjectKey": f"O-{i}"}, headers=world.auth("crc_a")) for i in range(10)),
    )  # fmt: skip
    assert [r.status for r in others] == [200] * 30
    assert not any(u.done() for u in uploads)  # the tricklers were still sending all along

    go.set()
    answers = await asyncio.gather(*uploads)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [
        a[:40] for a in answers if not a.startswith(b"HTTP/1.1 200")
    ]
    added = await world.pool.fetchval("SELECT count(*) FROM participants WHERE subject_key LIKE 'T-%'")
    assert added == 2 * TRICKLERS
    await expect(await client.get("/healthz"), 200)
