"""Retry-safe submits: the ``Idempotency-Key`` header on add/update participant, extract submit and
bulk upload (both variants). A retry answers the first answer again without doing the work twice;
the same key with another request is 422; a retry while the first still runs is 409."""

from __future__ import annotations

import asyncio

import pytest

from tests.bulk_files import SITE_URL, csv_bytes
from tests.world import SITE_A, STUDY, expect

ADD = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
EXTRACT = f"{ADD}/extractPartcipantsInfo"
PERSON = {"subjectKey": "IK-1", "firstName": "Jo", "lastName": "Doe, Jr.", "emailAddress": "jo@example.org"}


def _with_key(world, user: str, key: str) -> dict[str, str]:
    return {**world.auth(user), "Idempotency-Key": key}


async def _kept(world) -> None:
    """A streamed answer (the bulk summary) is kept once its last byte is written, a moment after
    the client has it; a retry before that is 409 requestInProgress."""
    for _ in range(100):
        if not await world.pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE status IS NULL"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the first answer was never kept")


async def _count(world, table: str) -> int:
    return await world.pool.fetchval(f"SELECT count(*) FROM {table}")


async def test_add_participant_retried_answers_the_first_answer_once(client, world):
    await world.standard()
    headers = _with_key(world, "crc_a", "ctms-retry-1")
    first = await client.post(ADD, json=PERSON, headers=headers)
    body = await expect(first, 200)
    audits = await _count(world, "audit_log")
    again = await client.post(ADD, json=PERSON, headers=headers)
    assert await expect(again, 200) == body
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert await _count(world, "participants") == 1
    assert await _count(world, "audit_log") == audits  # the work was not done again
    # Without the key, a request is simply done (an update here).
    await expect(
        await client.post(ADD, json={**PERSON, "firstName": "Jane"}, headers=world.auth("crc_a")), 200
    )
    assert await _count(world, "audit_log") > audits


async def test_same_key_with_another_request_is_422_and_does_nothing(client, world):
    await world.standard()
    headers = _with_key(world, "crc_a", "k-2")
    await expect(await client.post(ADD, json=PERSON, headers=headers), 200)
    got = await expect(await client.post(ADD, json={**PERSON, "firstName": "Jane"}, headers=headers), 422)
    assert got["message"] == "errorCode.idempotencyKeyReused"
    assert "Jane" not in str(got) and "Jo" not in str(got)
    assert await world.pool.fetchval("SELECT first_name FROM participants") == "Jo"
    # Another path with the key is another request too.
    got = await expect(await client.post(EXTRACT, headers=headers), 422)
    assert got["message"] == "errorCode.idempotencyKeyReused"


async def test_keys_belong_to_their_user(client, world):
    await world.standard()
    await expect(await client.post(ADD, json=PERSON, headers=_with_key(world, "crc_a", "shared")), 200)
    other = {**PERSON, "subjectKey": "IK-2"}
    resp = await client.post(ADD, json=other, headers=_with_key(world, "inv_a", "shared"))
    await expect(resp, 200)
    assert "Idempotent-Replayed" not in resp.headers
    assert await _count(world, "participants") == 2


async def test_a_4xx_is_kept_but_a_quota_429_is_not(make_client, world):
    await world.standard()
    client = await make_client(max_active_jobs_per_user=1)
    bad = await expect(
        await client.post(
            ADD, json={**PERSON, "emailAddress": "nope"}, headers=_with_key(world, "crc_a", "bad")
        ),
        400,
    )
    again = await client.post(
        ADD, json={**PERSON, "emailAddress": "nope"}, headers=_with_key(world, "crc_a", "bad")
    )
    assert await expect(again, 400) == bad and again.headers["Idempotent-Replayed"] == "true"
    await expect(await client.post(EXTRACT, headers=_with_key(world, "crc_a", "x1")), 200)
    await expect(await client.post(EXTRACT, headers=_with_key(world, "crc_a", "x2")), 429)
    await world.pool.execute("UPDATE jobs SET status = 'COMPLETED'")  # the quota frees up
    resp = await client.post(EXTRACT, headers=_with_key(world, "crc_a", "x2"))
    await expect(resp, 200)
    assert "Idempotent-Replayed" not in resp.headers  # the 429 was not kept: this retry ran


async def test_extract_submit_retried_gives_the_same_job(client, world):
    await world.standard()
    headers = {**_with_key(world, "crc_a", "extract-1"), "Accept": "application/json"}
    first = await expect(await client.post(EXTRACT, headers=headers), 200)
    again = await client.post(EXTRACT, headers=headers)
    assert await expect(again, 200) == first
    assert (
        again.headers["Location"].endswith(first["jobUuid"]) and again.headers["Job-Uuid"] == first["jobUuid"]
    )
    assert await _count(world, "jobs") == 1


@pytest.mark.parametrize("run_async", [False, True])
async def test_bulk_upload_retried_adds_once(client, world, run_async):
    await world.standard()
    url = SITE_URL + ("?async=y" if run_async else "")
    headers = {**_with_key(world, "crc_a", f"bulk-{run_async}"), "Content-Type": "text/csv"}
    data = csv_bytes("ParticipantID", "B-1", "B-2", "B-2")
    first = await client.post(url, data=data, headers=headers)
    first_body = await first.read()
    assert first.status == 200
    await _kept(world)
    again = await client.post(url, data=data, headers=headers)
    assert again.status == 200 and await again.read() == first_body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await _count(world, "participants") == (0 if run_async else 2)  # no worker runs here
    assert await _count(world, "jobs") == (1 if run_async else 0)
    other = await client.post(url, data=csv_bytes("ParticipantID", "B-3"), headers=headers)
    assert other.status == 422
    assert (await other.json())["message"] == "errorCode.idempotencyKeyReused"


async def test_a_large_bulk_summary_is_replayed_from_storage(client, world):
    await world.standard()
    ids = [f"L-{i:06d}" for i in range(40_000)]  # a summary well over the 1 MiB kept inline
    headers = {**_with_key(world, "crc_a", "big"), "Content-Type": "text/csv"}
    data = csv_bytes("ParticipantID", *ids)
    first = await client.post(SITE_URL, data=data, headers=headers)
    first_body = await first.read()
    assert first.status == 200 and len(first_body) > 1024 * 1024
    await _kept(world)
    assert await world.pool.fetchval("SELECT body_key FROM idempotency_keys") is not None
    again = await client.post(SITE_URL, data=data, headers=headers)
    assert again.status == 200 and await again.read() == first_body
    assert await _count(world, "participants") == len(ids)


async def test_a_retry_while_the_first_runs_is_409(client, world):
    await world.standard()
    headers = {**_with_key(world, "crc_a", "slow"), "Content-Type": "text/csv"}
    release = asyncio.Event()

    async def slow_body():
        yield b"ParticipantID\nS-1\n"
        await release.wait()
        yield b"S-2\n"

    # The first upload's file is fully received before the key is claimed: hold it after that
    # point by locking the participants table the upload must write to.
    async with world.pool.acquire() as lock:
        tx = lock.transaction()
        await tx.start()
        await lock.execute("LOCK TABLE participants IN EXCLUSIVE MODE")
        release.set()
        first = asyncio.create_task(client.post(SITE_URL, data=slow_body(), headers=headers))
        for _ in range(100):
            if await world.pool.fetchval("SELECT count(*) FROM idempotency_keys"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the first request never claimed its key")
        second = await client.post(SITE_URL, data=b"ParticipantID\nS-1\nS-2\n", headers=headers)
        assert second.status == 409
        assert (await second.json())["message"] == "errorCode.requestInProgress"
        assert second.headers["Retry-After"]
        await tx.rollback()
    assert (await first).status == 200
    assert await _count(world, "participants") == 2


async def test_an_expired_key_runs_again(client, world):
    await world.standard()
    headers = _with_key(world, "crc_a", "old")
    await expect(await client.post(EXTRACT, headers=headers), 200)
    await world.pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    resp = await client.post(EXTRACT, headers=headers)
    await expect(resp, 200)
    assert "Idempotent-Replayed" not in resp.headers
    assert await _count(world, "jobs") == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
async def test_a_malformed_key_is_400(client, world, key):
    await world.standard()
    got = await expect(await client.post(ADD, json=PERSON, headers=_with_key(world, "crc_a", key)), 400)
    assert got["message"] == "errorCode.invalidIdempotencyKey"
    assert await _count(world, "participants") == 0


async def test_a_revoked_user_gets_no_replay(client, world):
    await world.standard()
    headers = _with_key(world, "crc_a", "revoked")
    await expect(await client.post(ADD, json=PERSON, headers=headers), 200)
    await world.pool.execute(
        "DELETE FROM role_assignments WHERE user_id = (SELECT id FROM users WHERE username = 'crc_a')"
    )
    resp = await client.post(ADD, json=PERSON, headers=headers)
    assert resp.status == 403 and "Idempotent-Replayed" not in resp.headers


async def test_a_client_that_hangs_up_mid_summary_gets_all_of_it_on_retry(client, world, settings):
    """The CTMS that timed out is the one that retries: the kept summary is complete, not the part
    that was written before it left. Served as ``participants serve`` serves (aiohttp's test server
    cancels a handler whose client left; the service's runner does not)."""
    import socket
    import struct

    from aiohttp import web

    from service.web.app import create_app
    from service.web.server import ApiRunner

    await world.standard()
    runner = ApiRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        ids = [f"H-{i:06d}" for i in range(100_000)]  # a summary larger than the socket buffers
        data = csv_bytes("ParticipantID", *ids)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        path = SITE_URL.replace("(", "%28").replace(")", "%29")
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {world.token('crc_a')}\r\n"
            f"Idempotency-Key: gone\r\nContent-Type: text/csv\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        assert (await reader.read(1000)).startswith(b"HTTP/1.1 200")
        writer.close()  # leaves with most of the summary unread
        await _kept(world)
    finally:
        await runner.cleanup()
    resp = await client.post(
        SITE_URL, data=data, headers={**_with_key(world, "crc_a", "gone"), "Content-Type": "text/csv"}
    )
    body = await expect(resp, 200)
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert len(body["participants"]) == len(ids) and body["failureCount"] == 0
