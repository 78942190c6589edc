"""Webhooks end to end: the admin API, the outbox, real deliveries verified with the reference
``standardwebhooks`` package, failures, timeouts, 410, recovery, and worker restarts."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.core.jobs import lifecycle, model
from service.core.webhooks import models as wm
from tests.test_webhooks_support import (
    ALLOW_LOCAL,
    Receiver,
    finished_job,
    make_due,
    run_default_worker,
    sweep,
)
from tests.world import SITE_A, STUDY, expect

HOOKS = "/admin/api/webhooks"


@pytest.fixture
async def receiver():
    r = Receiver()
    yield r
    await r.close()


async def _register(client, world, url, **fields):
    body = {"url": url, "description": "CTMS", "eventTypes": ["job.completed", "job.failed"], **fields}
    return await expect(await client.post(HOOKS, json=body, headers=world.auth("admin")), 201)


# --- Admin API ---------------------------------------------------------------------------------


async def test_admin_registers_lists_patches_and_deletes_an_endpoint(client, world):
    await world.standard()
    created = await _register(client, world, "https://93.184.216.34/hook", studyOid=STUDY)
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert {k: v for k, v in created.items() if k not in ("id", "secret", "createdAt", "updatedAt")} == {
        "url": "https://93.184.216.34/hook", "description": "CTMS", "eventTypes": ["job.completed", "job.failed"],
        "studyOid": STUDY, "enabled": True, "disabledReason": None,
    }  # fmt: skip
    hook = f"{HOOKS}/{created['id']}"

    listed = await expect(await client.get(HOOKS, headers=world.auth("admin")), 200)
    assert [w["id"] for w in listed["webhooks"]] == [created["id"]]
    assert "secret" not in listed["webhooks"][0]  # shown once, at creation
    one = await expect(await client.get(hook, headers=world.auth("admin")), 200)
    assert "secret" not in one and one["url"] == "https://93.184.216.34/hook"

    patched = await expect(
        await client.patch(hook, json={"enabled": False, "eventTypes": ["job.failed"], "studyOid": None},
                           headers=world.auth("admin")), 200)  # fmt: skip
    assert (patched["enabled"], patched["eventTypes"], patched["studyOid"]) == (False, ["job.failed"], None)

    await expect(await client.delete(hook, headers=world.auth("admin")), 204)
    body = await expect(await client.get(hook, headers=world.auth("admin")), 404)
    assert body == {"message": "errorCode.webhookNotFound", "params": {"id": created["id"]}}


async def test_only_admins_manage_webhooks(client, world):
    await world.standard()
    assert (await expect(await client.get(HOOKS, headers=world.auth("dm")), 403))["message"] == (
        "errorCode.noSufficientPrivileges"
    )
    assert (await expect(await client.get(HOOKS), 401))["message"] == "errorCode.unauthenticated"


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1:9/hook", "address not allowed"),
        ("http://169.254.169.254/latest/meta-data", "address not allowed"),
        ("http://10.1.2.3/hook", "address not allowed"),
        ("http://[::1]/hook", "address not allowed"),
        ("http://localhost/hook", "address not allowed"),
        ("ftp://93.184.216.34/hook", "scheme must be http or https"),
        ("https://user:pw@93.184.216.34/hook", "credentials in URL"),
    ],
)
async def test_private_and_odd_urls_are_refused_at_registration(client, world, url, reason):
    """A URL the schema admits whose address the policy refuses is 409 (the deployment's policy and
    DNS decide, not the request); one the schema refuses is 400."""
    await world.standard()
    resp = await client.post(HOOKS, json={"url": url}, headers=world.auth("admin"))
    policy = reason == "address not allowed"
    body = await expect(resp, 409 if policy else 400)
    assert body == {
        "message": "errorCode." + ("webhookAddressNotAllowed" if policy else "webhookUrlNotAllowed"),
        "params": {"fields": ["url"], "reason": reason},
    }


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, ["url"]),
        ({"url": "https://93.184.216.34/x", "eventTypes": ["job.exploded"]}, ["eventTypes.0"]),
        ({"url": "https://93.184.216.34/x", "eventTypes": []}, ["eventTypes"]),
        ({"url": "https://93.184.216.34/x", "enabled": "yes"}, ["enabled"]),
        ({"url": "https://93.184.216.34/x", "secret": "whsec_mine"}, ["secret"]),
        # Postgres refuses NUL
        ({"url": "https://93.184.216.34/x", "description": "a\u0000b"}, ["description"]),
        ({"url": "https://93.184.216.34/\u0000"}, ["url"]),
        ({"url": "https://93.184.216.34/a b"}, ["url"]),
        ({"url": "https://93.184.216.34/x", "studyOid": "S\u0000"}, ["studyOid"]),
    ],
)
async def test_bad_bodies_are_400(client, world, body, fields):
    await world.standard()
    resp = await client.post(HOOKS, json=body, headers=world.auth("admin"))
    assert await expect(resp, 400) == {
        "message": "errorCode.invalidRequestBody",
        "params": {"fields": fields},
    }


async def test_unknown_study_scope_and_ids_are_404(client, world):
    await world.standard()
    resp = await client.post(HOOKS, json={"url": "https://93.184.216.34/x", "studyOid": "S_NOPE"},
                             headers=world.auth("admin"))  # fmt: skip
    assert await expect(resp, 404) == {"message": "errorCode.studyNotExist", "params": {"studyOid": "S_NOPE"}}
    for path in (f"{HOOKS}/abc", f"{HOOKS}/99999999999999999999999", f"{HOOKS}/0/deliveries"):
        assert (await expect(await client.get(path, headers=world.auth("admin")), 404))["message"] == (
            "errorCode.webhookNotFound"
        )
    resp = await client.post(f"{HOOKS}/deliveries/42/redeliver", headers=world.auth("admin"))
    assert await expect(resp, 404) == {"message": "errorCode.webhookNotFound", "params": {"deliveryId": 42}}


# --- The outbox --------------------------------------------------------------------------------


async def test_outbox_rows_follow_the_transaction_and_the_subscriptions(client, world, pool):
    await world.standard()
    everything = await _register(client, world, "https://93.184.216.34/all")
    failures_only = await _register(client, world, "https://93.184.216.34/f", eventTypes=["job.failed"])
    await world.study("S_OTHER", name="Other")
    other_study = await _register(client, world, "https://93.184.216.34/o", studyOid="S_OTHER")
    disabled = await _register(client, world, "https://93.184.216.34/d", enabled=False)

    completed = await finished_job(pool, "COMPLETED")
    failed = await finished_job(pool, "FAILED")
    rows = await pool.fetch(
        "SELECT endpoint_id, event_type, job_uuid, payload FROM webhook_messages ORDER BY id"
    )
    got = {(r["endpoint_id"], r["event_type"], r["job_uuid"]) for r in rows}
    assert got == {
        (everything["id"], "job.completed", completed),
        (everything["id"], "job.failed", failed),
        (failures_only["id"], "job.failed", failed),
    }
    assert other_study["id"] not in {r["endpoint_id"] for r in rows}
    assert disabled["id"] not in {r["endpoint_id"] for r in rows}

    # Rolled back with the status change (a bulk job's insert transaction failing at its commit):
    # no event for a status that never happened.
    async with pool.acquire() as conn:
        unfinished = (await lifecycle.create_job(conn, model.NewJob(job_type="EXTRACT_PARTICIPANTS", owner_id=await conn.fetchval("SELECT id FROM users LIMIT 1"),
            study_id=await conn.fetchval("SELECT id FROM studies WHERE oid = $1", STUDY), site_id=None)))["uuid"]  # fmt: skip
        tr = conn.transaction()
        await tr.start()
        assert await lifecycle.fail_job(conn, unfinished, "x")
        assert (
            await conn.fetchval("SELECT count(*) FROM webhook_messages WHERE job_uuid = $1", unfinished) == 2
        )
        await tr.rollback()
    assert await pool.fetchval("SELECT count(*) FROM webhook_messages") == 3


# --- Delivery ----------------------------------------------------------------------------------


async def test_delivery_is_standard_webhooks_and_carries_no_personal_data(
    make_client, world, pool, settings, receiver
):
    client = await make_client(**ALLOW_LOCAL)
    await world.standard()
    url = await receiver.start()
    created = await _register(client, world, url)
    # Personal data exists in the study; none of it may travel.
    resp = await client.post(f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants",
                             json={"subjectKey": "WH-1", "firstName": "Zelda", "lastName": "Quixote",
                                   "emailAddress": "zelda@example.org", "phoneNumber": "+1 5550199"},
                             headers=world.auth("crc_a"))  # fmt: skip
    await expect(resp, 200)
    job_uuid = await finished_job(pool, "COMPLETED")
    s = settings.model_copy(
        update={**ALLOW_LOCAL, "public_url": "https://trial.example.org", "path_prefix": "/OpenClinica"}
    )

    assert await sweep(s, pool) == 1
    assert await sweep(s, pool) == 0  # already queued for this attempt: not twice
    await run_default_worker(s)

    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    event = Webhook(created["secret"]).verify(body, headers)  # the reference implementation agrees
    assert headers["webhook-id"].startswith("msg_")
    assert headers["Content-Type"] == "application/json"
    base = f"https://trial.example.org/OpenClinica/pages/auth/api/jobs/{job_uuid}"
    assert event["type"] == "job.completed"
    assert event["data"] == {
        "jobUuid": str(job_uuid), "jobType": "EXTRACT_PARTICIPANTS", "status": "COMPLETED", "studyOid": STUDY,
        "siteOid": SITE_A, "rowCount": 3, "byteSize": 120, "sha256": "ab" * 32,
        "fileName": f"{STUDY}-{SITE_A}_Participant Access Code_2026-01-01-000000000Z.csv",
        "expiresAt": event["data"]["expiresAt"], "statusUrl": base, "downloadUrl": base + "/downloadFile",
    }  # fmt: skip
    assert event["data"]["expiresAt"].endswith("Z") and event["timestamp"].endswith("Z")
    wm.JobEvent.model_validate(event)  # the body documented under the OpenAPI document's `webhooks`
    assert list(event) == ["type", "timestamp", "data"] and list(event["data"])[:3] == [
        "jobUuid",
        "jobType",
        "status",
    ]
    for personal in (b"Zelda", b"Quixote", b"zelda@example.org", b"5550199", b"WH-1"):
        assert personal not in body
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 44).verify(body, headers)

    deliveries = await expect(
        await client.get(f"{HOOKS}/{created['id']}/deliveries", headers=world.auth("admin")), 200
    )
    [d] = deliveries["deliveries"]
    assert (d["status"], d["attempts"], d["eventId"], d["eventType"], d["jobUuid"]) == (
        "delivered",
        1,
        headers["webhook-id"],
        "job.completed",
        str(job_uuid),
    )
    assert [(a["attempt"], a["outcome"], a["httpStatus"], a["responseExcerpt"]) for a in d["attemptLog"]] == [
        (1, "success", 204, "")
    ]


async def test_fails_times_out_recovers_and_a_restarted_worker_loses_nothing(
    make_client, world, pool, settings, receiver
):
    client = await make_client(**ALLOW_LOCAL)
    await world.standard()
    url = await receiver.start()
    receiver.script = [500, ("sleep", 2.0), (503, {"Retry-After": "7"}), 200]
    created = await _register(client, world, url)
    await finished_job(pool, "FAILED")
    s = settings.model_copy(update={**ALLOW_LOCAL, "webhook_timeout_seconds": 0.5})

    outcomes = []
    for _ in range(4):
        await make_due(pool)
        await sweep(s, pool)
        await run_default_worker(s)  # a fresh worker each time: nothing lives in the process
        outcomes.append(await pool.fetchval("SELECT outcome FROM webhook_attempts ORDER BY id DESC LIMIT 1"))
        if outcomes[-1] == "http_error" and len(outcomes) == 3:
            wait = await pool.fetchval(
                "SELECT extract(epoch FROM next_attempt_at - now()) FROM webhook_messages"
            )
            assert 5 < wait <= 7  # Retry-After honoured
    assert outcomes == ["http_error", "timeout", "http_error", "success"]

    ids = {h["webhook-id"] for h, _ in receiver.requests}
    assert len(receiver.requests) == 4 and len(ids) == 1  # one message, the same id on every attempt
    for h, b in receiver.requests:
        Webhook(created["secret"]).verify(b, h)

    d = await expect(
        await client.get(f"{HOOKS}/{created['id']}/deliveries", headers=world.auth("admin")), 200
    )
    [msg] = d["deliveries"]
    assert (msg["status"], msg["attempts"]) == ("delivered", 4)
    log = [(a["attempt"], a["outcome"], a["httpStatus"]) for a in msg["attemptLog"]]
    assert log == [(1, "http_error", 500), (2, "timeout", None), (3, "http_error", 503), (4, "success", 200)]
    assert msg["attemptLog"][0]["responseExcerpt"] == "answer 500"
    assert "0.5 s" in msg["attemptLog"][1]["error"]


async def test_a_worker_killed_mid_attempt_leaves_the_message_to_be_retried(world, pool, settings, receiver):
    await world.standard()
    url = await receiver.start()
    async with pool.acquire() as conn:
        from service.core.webhooks import store as ws

        created = await ws.create_endpoint(conn, wm.WebhookIn(url=url))
    await finished_job(pool, "COMPLETED")
    # An attempt claimed the message (the lease) and the worker died before logging anything.
    await pool.execute("UPDATE webhook_messages SET attempts = 1, next_attempt_at = now() + interval '60 s'")
    s = settings.model_copy(update=ALLOW_LOCAL)
    assert await sweep(s, pool) == 0  # the lease holds
    await pool.execute("UPDATE webhook_messages SET next_attempt_at = now() - interval '1 s'")  # lease over
    assert await sweep(s, pool) == 1
    await run_default_worker(s)
    assert len(receiver.requests) == 1
    Webhook(created.secret).verify(receiver.requests[0][1], receiver.requests[0][0])
    assert await pool.fetchval("SELECT status || ':' || attempts FROM webhook_messages") == "delivered:2"


async def test_410_disables_the_endpoint_and_redelivery_after_reenabling(
    make_client, world, pool, settings, receiver
):
    client = await make_client(**ALLOW_LOCAL)
    await world.standard()
    url = await receiver.start()
    receiver.script = [410]
    created = await _register(client, world, url)
    hook = f"{HOOKS}/{created['id']}"
    await finished_job(pool, "COMPLETED")
    await finished_job(pool, "FAILED")
    s = settings.model_copy(update=ALLOW_LOCAL)
    await pool.execute(
        "UPDATE webhook_messages SET next_attempt_at = now() + interval '1 hour' WHERE event_type = 'job.failed'"
    )
    await sweep(s, pool)
    await run_default_worker(s)

    endpoint = await expect(await client.get(hook, headers=world.auth("admin")), 200)
    assert (endpoint["enabled"], endpoint["disabledReason"]) == (False, "gone")
    await make_due(pool)
    await sweep(s, pool)
    await run_default_worker(s)
    assert len(receiver.requests) == 1  # the disabled endpoint gets nothing more
    statuses = dict(
        await pool.fetch("SELECT event_type, status || ':' || coalesce(last_error, '') FROM webhook_messages")
    )
    assert statuses == {
        "job.completed": "failed:410 Gone: endpoint disabled",
        "job.failed": "failed:endpoint disabled",
    }

    # The receiver is back; an admin re-enables the endpoint and redelivers.
    await expect(await client.patch(hook, json={"enabled": True}, headers=world.auth("admin")), 200)
    deliveries = (await expect(await client.get(hook + "/deliveries", headers=world.auth("admin")), 200))[
        "deliveries"
    ]
    for d in deliveries:
        body = await expect(
            await client.post(f"{HOOKS}/deliveries/{d['id']}/redeliver", headers=world.auth("admin")), 202
        )
        assert body["status"] == "pending" and body["eventId"] == d["eventId"]
    await run_default_worker(s)  # queued by the redeliver calls themselves, no sweep needed
    assert len(receiver.requests) == 3
    assert {h["webhook-id"] for h, _ in receiver.requests[1:]} == {d["eventId"] for d in deliveries}
    assert await pool.fetchval("SELECT array_agg(DISTINCT status) FROM webhook_messages") == ["delivered"]


async def test_secret_rotation_signs_with_both_secrets_during_the_overlap(
    make_client, world, pool, settings, receiver
):
    client = await make_client(**ALLOW_LOCAL)
    await world.standard()
    url = await receiver.start()
    created = await _register(client, world, url)
    hook = f"{HOOKS}/{created['id']}"
    rotated = await expect(await client.post(hook + "/rotate-secret", json={"overlapSeconds": 3600},
                                             headers=world.auth("admin")), 200)  # fmt: skip
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    assert rotated["previousSecretsExpireAt"] is not None
    s = settings.model_copy(update=ALLOW_LOCAL)
    await finished_job(pool, "COMPLETED")
    await sweep(s, pool)
    await run_default_worker(s)
    headers, body = receiver.requests[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(created["secret"]).verify(body, headers)  # receivers not yet updated still verify
    Webhook(rotated["secret"]).verify(body, headers)

    # Rotating again without overlap: only the newest secret signs.
    again = await expect(await client.post(hook + "/rotate-secret", json={"overlapSeconds": 0},
                                           headers=world.auth("admin")), 200)  # fmt: skip
    await finished_job(pool, "COMPLETED")
    await sweep(s, pool)
    await run_default_worker(s)
    headers, body = receiver.requests[-1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(again["secret"]).verify(body, headers)
    for old in (created["secret"], rotated["secret"]):
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(body, headers)
    bad = await client.post(hook + "/rotate-secret", json={"overlapSeconds": -1}, headers=world.auth("admin"))
    assert (await expect(bad, 400))["params"] == {"fields": ["overlapSeconds"]}


async def test_private_targets_are_refused_at_delivery_too(world, pool, settings, receiver):
    """Registered while allowed (or DNS changed since): the delivery-time guard still refuses."""
    await world.standard()
    url = await receiver.start()
    async with pool.acquire() as conn:
        from service.core.webhooks import store as ws

        await ws.create_endpoint(conn, wm.WebhookIn(url=url))
        await ws.create_endpoint(conn, wm.WebhookIn(url=url.replace("127.0.0.1", "localhost")))
    await finished_job(pool, "COMPLETED")
    await sweep(settings, pool)  # default test settings: private addresses not allowed
    await run_default_worker(settings)
    assert receiver.requests == []
    rows = await pool.fetch("SELECT outcome, error FROM webhook_attempts ORDER BY id")
    assert [tuple(r) for r in rows] == [("blocked", "address not allowed")] * 2
    assert orjson.dumps([dict(r) for r in rows])  # plain data, nothing else


async def test_new_messages_are_queued_the_moment_the_job_commits(world, pool, settings, receiver):
    """The NOTIFY written with the outbox rows reaches a listening worker on commit, never before."""
    import asyncio

    from arq import create_pool

    from service.core.jobs import lifecycle, model
    from service.core.redis import redis_settings
    from service.core.webhooks import store as ws
    from service.worker.webhooks import start_outbox_listener, stop_outbox_listener

    await world.standard()
    url = await receiver.start()
    async with pool.acquire() as conn:
        created = await ws.create_endpoint(conn, wm.WebhookIn(url=url))
    s = settings.model_copy(update=ALLOW_LOCAL)
    redis = await create_pool(redis_settings(s))
    ctx = {"settings": s, "db": pool, "redis": redis}
    await start_outbox_listener(ctx)
    try:
        async with pool.acquire() as conn:
            tr = conn.transaction()
            await tr.start()
            ids = await conn.fetchrow(
                "SELECT st.id AS study, si.id AS site, u.id AS owner FROM studies st, sites si, users u"
                " WHERE st.oid = $1 AND si.oid = $2 AND u.username = 'crc_a'", STUDY, SITE_A,
            )  # fmt: skip
            job = await lifecycle.create_job(conn, model.NewJob(job_type="EXTRACT_PARTICIPANTS", study_id=ids["study"],
                                             site_id=ids["site"], owner_id=ids["owner"]))  # fmt: skip
            assert await lifecycle.fail_job(conn, job["uuid"], "storage: unavailable")
            await asyncio.sleep(0.3)
            assert await redis.zcard(s.default_queue) == 0  # not committed: nothing heard
            await tr.commit()
        for _ in range(100):
            if await redis.zcard(s.default_queue):
                break
            await asyncio.sleep(0.02)
        assert await redis.zcard(s.default_queue) == 1
    finally:
        await stop_outbox_listener(ctx)
        await redis.aclose()
    await run_default_worker(s)  # no sweep: the listener queued it
    assert len(receiver.requests) == 1
    event = Webhook(created.secret).verify(receiver.requests[0][1], receiver.requests[0][0])
    assert (event["type"], event["data"]["jobUuid"]) == ("job.failed", str(job["uuid"]))


async def test_a_running_worker_delivers_as_soon_as_the_job_commits(
    make_client, world, pool, settings, receiver
):
    """The outbox listener alone (no sweeper cron in this worker) turns a commit into a delivery."""
    import asyncio
    import time
    import warnings

    from service.worker.main import build_worker

    await world.standard()
    client = await make_client(**ALLOW_LOCAL)
    await _register(client, world, await receiver.start())
    worker = build_worker(
        settings.model_copy(update=ALLOW_LOCAL), settings.default_queue, cron_jobs=[], poll_delay=0.01
    )
    running = asyncio.create_task(worker.async_run())
    try:
        deadline = time.monotonic() + 10
        while "outbox_listener" not in worker.ctx:
            assert time.monotonic() < deadline and not running.done()
            await asyncio.sleep(0.02)
        job_uuid = await finished_job(pool)
        while not receiver.requests:
            assert time.monotonic() < deadline, "no delivery"
            await asyncio.sleep(0.02)
        assert orjson.loads(receiver.requests[0][1])["data"]["jobUuid"] == str(job_uuid)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        with warnings.catch_warnings():  # arq calls redis' deprecated close()
            warnings.simplefilter("ignore", DeprecationWarning)
            # A delivery still finishing when the worker is stopped ends cancelled; arq's close()
            # gathers it and re-raises that (seen on a loaded machine): the test has its answer.
            with contextlib.suppress(asyncio.CancelledError):
                await worker.close()


async def test_the_event_payload_is_the_jobs_metadata_with_python_timestamps(client, world, pool):
    """The payload is built in SQL with the final status (one statement); its timestamps read as
    Python's isoformat in UTC with Z, as they always have, microseconds only when there are any."""
    import datetime as dt

    from service.core.webhooks.outbox import _iso_utc

    await world.standard()
    created = await _register(client, world, "https://93.184.216.34/all")
    job_uuid = await finished_job(pool, "COMPLETED")
    job = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1", job_uuid)
    payload = await pool.fetchval(
        "SELECT payload FROM webhook_messages WHERE endpoint_id = $1", created["id"]
    )

    def iso(at: dt.datetime) -> str:
        return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

    assert payload == {
        "type": "job.completed",
        "timestamp": iso(job["completed_at"]),
        "data": {
            "jobUuid": str(job_uuid), "jobType": "EXTRACT_PARTICIPANTS", "status": "COMPLETED",
            "studyOid": STUDY, "siteOid": SITE_A, "rowCount": job["row_count"], "byteSize": job["byte_size"],
            "sha256": job["sha256"], "fileName": job["file_name"], "expiresAt": iso(job["expires_at"]),
        },
    }  # fmt: skip
    zone = dt.timezone(dt.timedelta(hours=5, minutes=30))
    for at in (
        dt.datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=zone),
    ):
        assert await pool.fetchval(f"SELECT {_iso_utc('$1::timestamptz')}", at) == iso(at)
