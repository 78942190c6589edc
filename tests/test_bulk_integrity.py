"""Bulk upload is all or nothing: racing uploads, failures after the COPY, connections killed."""

from __future__ import annotations

import asyncio
import random

from service.core.bulk import staging as bulk_store
from tests.bulk_files import SITE_URL, csv_bytes, upload
from tests.world import SITE_B, STUDY, expect


async def counts(world):
    return (
        await world.pool.fetchval("SELECT count(*) FROM participants"),
        await world.pool.fetchval("SELECT count(*) FROM audit_log"),
    )


async def test_racing_uploads_add_each_id_exactly_once(client, world):
    await world.standard()
    shared = [f"RACE-{i:04d}" for i in range(300)]
    files = []
    for n in range(6):
        keys = shared[:] + [f"OWN-{n}-{i}" for i in range(50)]
        random.Random(n).shuffle(keys)  # different orders: no deadlock either way
        files.append(csv_bytes("ParticipantID", *keys))
    users = ["crc_a", "inv_a", "dm_a", "dm", "crc_a", "inv_a"]
    responses = await asyncio.gather(
        *(upload(client, world.token(u), f) for u, f in zip(users, files, strict=True))
    )
    bodies = [await expect(r, 200) for r in responses]
    added: list[str] = [p["subjectKey"] for b in bodies for p in b["participants"]]
    assert sorted(added) == sorted(set(added)), "an ID was reported added twice"
    assert set(added) == set(shared) | {f"OWN-{n}-{i}" for n in range(6) for i in range(50)}
    for b in bodies:
        assert b["uploadCount"] + b["failureCount"] == 350
        assert all(f["message"] == ["errorCode.participantIDNotUnique"] for f in b["failedParticipants"])
        assert {f["subjectKey"] for f in b["failedParticipants"]} <= set(shared)
    keys = await world.pool.fetch("SELECT lower(subject_key) AS k FROM participants")
    assert len(keys) == len(added) == len({r["k"] for r in keys})
    creates = await world.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'participant.create'")
    assert creates == len(added)


async def test_racing_uploads_with_a_single_add_never_overshoot_the_cap(client, world):
    await world.standard(expectedTotalEnrollment=150, enforceEnrollmentCap=True)
    files = [csv_bytes("ParticipantID", *(f"CAP-{n}-{i}" for i in range(60))) for n in range(4)]
    single = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_B}/participants"
    tasks = [upload(client, world.token("crc_a"), f) for f in files]
    tasks.append(client.post(single, json={"subjectKey": "SOLO"}, headers=world.auth("crc_b")))
    responses = await asyncio.gather(*tasks)
    bodies = [await expect(r, 200) for r in responses[:-1]]
    solo_added = responses[-1].status == 200
    added = sum(b["uploadCount"] for b in bodies) + int(solo_added)
    assert added == 150
    assert await world.pool.fetchval("SELECT count(*) FROM participants") == 150
    for b in bodies:
        assert all(
            f["message"] == ["errorCode.participantsEnrollmentCapReached"] for f in b["failedParticipants"]
        )


async def test_failure_after_the_copy_leaves_nothing(client, world, monkeypatch):
    await world.standard()
    token = world.token("crc_a")
    await expect(await upload(client, token, csv_bytes("ParticipantID", "KEEP-1")), 200)
    before = await counts(world)

    async def crash(conn):
        assert await conn.fetchval("SELECT count(*) FROM participants") == 3  # inserted, not committed
        raise RuntimeError("injected failure before commit")

    monkeypatch.setattr(bulk_store, "before_commit", crash)
    resp = await upload(client, token, csv_bytes("ParticipantID", "GONE-1", "GONE-2"))
    body = await expect(resp, 500)
    assert body == {"message": "errorCode.internalError", "params": {}}
    assert await counts(world) == before
    monkeypatch.undo()
    body = await expect(await upload(client, token, csv_bytes("ParticipantID", "GONE-1", "GONE-2")), 200)
    assert body["uploadCount"] == 2


async def test_database_connection_killed_before_commit_leaves_nothing(client, world, monkeypatch):
    await world.standard()
    token = world.token("crc_a")

    async def kill_own_backend(conn):
        pid = conn.get_server_pid()
        await world.pool.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.3)  # let the client side see the socket close

    monkeypatch.setattr(bulk_store, "before_commit", kill_own_backend)
    resp = await upload(client, token, csv_bytes("ParticipantID", *(f"K-{i}" for i in range(1000))))
    body = await expect(resp, 503)
    assert body["message"] == "errorCode.serviceUnavailable"
    assert await counts(world) == (0, 0)
    monkeypatch.undo()
    body = await expect(await upload(client, token, csv_bytes("ParticipantID", "K-1")), 200)
    assert body["uploadCount"] == 1


async def test_client_connection_killed_mid_upload_leaves_nothing(client, world):
    await world.standard()
    rows = csv_bytes("ParticipantID", *(f"HALF-{i:06d}" for i in range(60_000)))
    half = rows[: len(rows) // 2]
    request = (
        f"POST {SITE_URL} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {world.token('crc_a')}\r\n"
        f"Content-Type: text/csv\r\nContent-Length: {len(rows)}\r\n\r\n"
    ).encode()
    _reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request + half)
    await writer.drain()
    await asyncio.sleep(0.3)  # let the server parse and COPY what it got
    writer.transport.abort()
    for _ in range(50):
        await asyncio.sleep(0.1)
        busy = await world.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle'"
            " AND pid <> pg_backend_pid()"
        )
        if busy == 0:
            break
    else:
        raise AssertionError("the cut upload's statements were still running after 5 s")
    assert await counts(world) == (0, 0)
    body = await expect(
        await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "HALF-000001")), 200
    )
    assert body["uploadCount"] == 1


async def test_file_error_after_rows_were_copied_leaves_nothing(make_client, world):
    client = await make_client(bulk_max_bytes=400_000)
    await world.standard()
    token = world.token("crc_a")
    many = [f"K-{i:06d}" for i in range(30_000)]  # past the first COPY batch
    latin1 = csv_bytes("ParticipantID", *many) + "Zoë\n".encode("latin-1")
    body = await expect(await upload(client, token, latin1, raw=True), 400)
    assert body["message"] == "errorCode.notSupportedFileFormat"
    too_big = csv_bytes("ParticipantID", *many, *(f"M-{i:06d}" for i in range(30_000)))

    async def chunked():  # no Content-Length: the limit is found while streaming, after a COPY
        for i in range(0, len(too_big), 65536):
            yield too_big[i : i + 65536]

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}
    body = await expect(await client.post(SITE_URL, data=chunked(), headers=headers), 413)
    assert body["message"] == "errorCode.fileTooLarge"
    assert await counts(world) == (0, 0)
