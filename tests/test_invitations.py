"""Invitations from the outbox to a real SMTP server (aiosmtpd, in-process) and a Twilio-compatible
SMS API (a local aiohttp server): sent once, with the link; a refused first attempt retried, then
delivered once; a sent row never sent again; the INVITED transition; no personal data in the outbox
or the logs; failures visible in ``list_invitations``."""

from __future__ import annotations

import asyncio
import logging

import pytest
from arq import create_pool

from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.invitations import list_invitations, queue_invitation
from service.core.invitations.delivery import attempt_invitation
from service.core.redis import redis_settings
from service.worker.invitations import sweep_invitations
from tests.invitation_servers import SMS_FROM, SMS_SID, SMS_TOKEN, sms_server, smtp_server  # noqa: F401
from tests.people import change_personal, person
from tests.test_webhooks_support import run_default_worker
from tests.world import SITE_A, STUDY, expect

SITE_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
PORTAL = "https://portal.example.org"
PERSON = {
    "subjectKey": "OHIO-7",
    "firstName": "Ottilie",
    "lastName": "Quaresma",
    "emailAddress": "ottilie.q@example.org",
    "phoneNumber": "+1 5550104477",
}
CRC = Actor(user_id=None, username="crc_a")


@pytest.fixture
def mail_settings(settings, smtp_server, sms_server):
    return settings.model_copy(
        update={
            "participate_url": PORTAL,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_server.port,
            "smtp_security": "none",
            "mail_from": "Juno study <no-reply@juno.example.org>",
            "sms_base_url": sms_server.url,
            "sms_account_sid": SMS_SID,
            "sms_auth_token": SMS_TOKEN,
            "sms_from": SMS_FROM,
        }
    )


async def add_participant(client, world, register="y", **fields):
    body = {k: v for k, v in {**PERSON, **fields}.items() if v is not None}  # None: left out
    await expect(
        await client.post(f"{SITE_URL}?register={register}", json=body, headers=world.auth("crc_a")), 200
    )
    return await person(world.pool, body["subjectKey"])


async def queue(pool, settings, participant_id, channel="email"):
    async with pool.acquire() as conn, conn.transaction():
        return await queue_invitation(
            conn, participant_id=participant_id, channel=channel, actor=CRC, settings=settings
        )


async def deliver(settings, pool) -> int:
    """What the worker does: the sweeper queues the due rows, a real arq worker attempts them."""
    redis = await create_pool(redis_settings(settings))
    try:
        queued = await sweep_invitations({"settings": settings, "db": pool, "redis": redis})
    finally:
        await redis.aclose()
    await run_default_worker(settings)
    return queued


async def make_due(pool) -> None:
    await pool.execute("UPDATE invitations SET next_attempt_at = now()")


async def invitations(pool, participant_id):
    async with pool.acquire() as conn:
        return (await list_invitations(conn, participant_id)).invitations


async def test_email_invitation_arrives_once_with_the_link(client, world, pool, mail_settings, smtp_server):
    await world.standard()
    p = await add_participant(client, world)
    view = await queue(pool, mail_settings, p["id"])
    assert (view.channel, view.status, view.attempts, view.createdBy) == ("email", "QUEUED", 0, "crc_a")

    assert await deliver(mail_settings, pool) == 1
    [message] = smtp_server.received
    assert smtp_server.envelopes == [[PERSON["emailAddress"]]]
    assert message["To"] == PERSON["emailAddress"]
    assert message["Subject"] == "Your invitation to Juno"
    assert message["Message-ID"].endswith("@juno.example.org>")
    text = message.get_content()
    link = f"{PORTAL}/?accessCode={p['access_code']}"
    assert "Hello Ottilie," in text and link in text
    assert text.count(p["access_code"]) == 1  # the default template gives the code only inside the link

    [sent] = await invitations(pool, p["id"])
    assert (sent.status, sent.attempts, sent.lastError, sent.nextAttemptAt) == ("SENT", 1, None, None)
    assert sent.sentAt is not None and [a.outcome for a in sent.attemptLog] == ["accepted"]
    assert (
        await pool.fetchval("SELECT participate_status FROM participants WHERE id = $1", p["id"]) == "INVITED"
    )
    assert await pool.fetchval("SELECT accepted_id FROM invitations") == message["Message-ID"]

    # Accepted once, never again: not by the sweeper, not by an attempt forced on the row.
    await make_due(pool)
    assert await deliver(mail_settings, pool) == 0
    assert await attempt_invitation(pool, mail_settings, sent.id) == "not_due"
    assert len(smtp_server.received) == 1
    assert (await invitations(pool, p["id"]))[0].attempts == 1


@pytest.mark.parametrize("refusal", ["451 4.3.0 Try again later", "554 5.7.1 Message rejected"])
async def test_refused_email_is_retried_then_delivered_once(
    client, world, pool, mail_settings, smtp_server, refusal
):
    await world.standard()
    p = await add_participant(client, world)
    await queue(pool, mail_settings, p["id"])
    smtp_server.refuse_data.append(refusal)

    await deliver(mail_settings, pool)
    [queued] = await invitations(pool, p["id"])
    code = int(refusal[:3])
    assert (queued.status, queued.attempts, queued.lastError) == ("QUEUED", 1, f"smtp refused ({code})")
    wait = (queued.nextAttemptAt - queued.attemptLog[0].at).total_seconds()
    assert 30 * 0.75 - 1 <= wait <= 30 * 1.25 + 1  # the backoff's first step, with its jitter
    assert smtp_server.received == []
    assert await pool.fetchval("SELECT participate_status FROM participants") == "CREATED"
    assert await deliver(mail_settings, pool) == 0  # not due yet

    await make_due(pool)
    await deliver(mail_settings, pool)
    await make_due(pool)
    await deliver(mail_settings, pool)
    assert len(smtp_server.received) == 1
    [sent] = await invitations(pool, p["id"])
    assert (sent.status, sent.attempts, sent.lastError) == ("SENT", 2, None)
    assert [(a.attempt, a.outcome, a.statusCode) for a in sent.attemptLog] == [
        (1, "retry", code),
        (2, "accepted", None),
    ]
    assert await pool.fetchval("SELECT participate_status FROM participants") == "INVITED"


async def test_sms_after_a_500_is_delivered_once(client, world, pool, mail_settings, sms_server):
    await world.standard()
    p = await add_participant(client, world)
    await queue(pool, mail_settings, p["id"], "sms")
    sms_server.fail_with.append(500)

    await deliver(mail_settings, pool)
    [queued] = await invitations(pool, p["id"])
    assert (queued.status, queued.lastError) == ("QUEUED", "http error (500)")
    await make_due(pool)
    await deliver(mail_settings, pool)
    await make_due(pool)
    await deliver(mail_settings, pool)

    [sms] = sms_server.received
    assert sms["To"] == "+15550104477" and sms["From"] == SMS_FROM
    assert sms["Body"].startswith("Hello Ottilie, thank you for taking part in Juno.")
    assert sms["Body"].endswith(f"{PORTAL}/?accessCode={p['access_code']}")
    keys = {r["Idempotency-Key"] for r in sms_server.requests}
    assert len(sms_server.requests) == 2 and len(keys) == 1  # the same key for every attempt
    [sent] = await invitations(pool, p["id"])
    assert (sent.status, sent.attempts) == ("SENT", 2)
    assert await pool.fetchval("SELECT accepted_id FROM invitations") == sms["sid"]
    assert await pool.fetchval("SELECT participate_status FROM participants") == "INVITED"


async def test_the_current_code_is_sent(client, world, pool, mail_settings, smtp_server):
    """Rendered at send time: a code reset after queueing sends the new code; a template asking
    for ``{accessCode}`` gets the code on its own."""
    await world.standard()
    admin = world.auth("admin")
    template = {"subject": "Code for {studyName}", "body": "Dear {firstName}, your code is {accessCode}."}
    await expect(
        await client.put(
            f"/admin/api/studies/{STUDY}/invitation-templates/email", json=template, headers=admin
        ),
        200,
    )
    p = await add_participant(client, world)
    await queue(pool, mail_settings, p["id"])
    await change_personal(pool, p["id"], "access_code", "NEWCODE42")
    await deliver(mail_settings, pool)
    [message] = smtp_server.received
    assert message["Subject"] == "Code for Juno"
    assert message.get_content().strip() == "Dear Ottilie, your code is NEWCODE42."


async def test_invited_only_from_created(client, world, pool, mail_settings, smtp_server):
    await world.standard()
    p = await add_participant(client, world)
    await pool.execute("UPDATE participants SET participate_status = 'ACTIVE' WHERE id = $1", p["id"])
    await queue(pool, mail_settings, p["id"])
    await deliver(mail_settings, pool)
    assert len(smtp_server.received) == 1
    assert await pool.fetchval("SELECT participate_status FROM participants") == "ACTIVE"


async def test_a_refused_recipient_fails_at_once_and_shows(client, world, pool, mail_settings, smtp_server):
    await world.standard()
    p = await add_participant(client, world)
    await queue(pool, mail_settings, p["id"])
    smtp_server.refuse_rcpt.append("550 5.1.1 <ottilie.q@example.org>: no such user")
    await deliver(mail_settings, pool)
    [failed] = await invitations(pool, p["id"])
    assert (failed.status, failed.lastError, failed.nextAttemptAt) == (
        "FAILED",
        "recipient refused (550)",
        None,
    )
    await make_due(pool)
    assert await deliver(mail_settings, pool) == 0  # a failed row is never attempted again
    assert await pool.fetchval("SELECT participate_status FROM participants") == "CREATED"

    admin = world.auth("admin")
    body = await expect(
        await client.get(f"/admin/api/studies/{STUDY}/invitations?status=FAILED", headers=admin), 200
    )
    [row] = body["invitations"]
    assert (row["subjectKey"], row["siteOid"], row["lastError"]) == (
        "OHIO-7",
        SITE_A,
        "recipient refused (550)",
    )
    assert "ottilie" not in str(body).lower()
    sent = await expect(
        await client.get(f"/admin/api/studies/{STUDY}/invitations?status=SENT", headers=admin), 200
    )
    assert sent["invitations"] == []


async def test_gives_up_when_the_window_is_over(client, world, pool, mail_settings, unused_tcp_port):
    await world.standard()
    p = await add_participant(client, world)
    closed = mail_settings.model_copy(update={"smtp_port": unused_tcp_port})  # nothing listens there
    await queue(pool, closed, p["id"])
    await pool.execute("UPDATE invitations SET retry_until = now() + interval '1 second'")
    await deliver(closed, pool)
    [queued] = await invitations(pool, p["id"])
    assert queued.status == "QUEUED" and queued.lastError.startswith("connection error")
    await pool.execute("UPDATE invitations SET retry_until = now(), next_attempt_at = now()")
    await deliver(closed, pool)
    [failed] = await invitations(pool, p["id"])
    assert failed.status == "FAILED" and failed.lastError.startswith(
        "gave up after 2 attempts: connection error"
    )


async def test_a_participant_changed_since_queueing_fails_without_sending(
    client,
    world,
    pool,
    mail_settings,
    smtp_server,
):
    await world.standard()
    p = await add_participant(client, world)
    await queue(pool, mail_settings, p["id"])
    await change_personal(pool, p["id"], "email", None)
    await deliver(mail_settings, pool)
    [failed] = await invitations(pool, p["id"])
    assert (failed.status, failed.lastError) == ("FAILED", "participantHasNoEmail")
    assert smtp_server.received == []


@pytest.mark.parametrize(
    "fields, channel, overrides, code",
    [
        ({"emailAddress": None}, "email", {}, "participantHasNoEmail"),
        ({"phoneNumber": None}, "sms", {}, "participantHasNoPhone"),
        ({}, "email", {"smtp_host": None}, "emailNotConfigured"),
        ({}, "sms", {"sms_auth_token": None}, "smsNotConfigured"),
        ({}, "email", {"participate_url": None}, "participateUrlNotConfigured"),
    ],
)
async def test_queueing_refused(client, world, pool, mail_settings, fields, channel, overrides, code):
    await world.standard()
    p = await add_participant(client, world, **fields)
    with pytest.raises(ApiError) as refused:
        await queue(pool, mail_settings.model_copy(update=overrides), p["id"], channel)
    assert (refused.value.code, refused.value.status) == (code, 409)
    assert await pool.fetchval("SELECT count(*) FROM invitations") == 0
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'participant.invite'") == 0


async def test_queueing_refused_for_the_unregistered_and_the_unknown(client, world, pool, mail_settings):
    await world.standard()
    p = await add_participant(client, world, register="n")
    with pytest.raises(ApiError) as refused:
        await queue(pool, mail_settings, p["id"])
    assert refused.value.code == "participantNotRegistered"
    with pytest.raises(ApiError) as refused:
        await queue(pool, mail_settings, p["id"] + 1000)
    assert (refused.value.code, refused.value.status) == ("participantNotFound", 404)


async def test_the_invitation_commits_with_the_callers_transaction(client, world, pool, mail_settings):
    await world.standard()
    p = await add_participant(client, world)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await queue_invitation(
                conn, participant_id=p["id"], channel="sms", actor=CRC, settings=mail_settings
            )
            raise RuntimeError("the contact update failed")
    assert await pool.fetchval("SELECT count(*) FROM invitations") == 0
    await queue(pool, mail_settings, p["id"], "sms")
    audit = await pool.fetchrow("SELECT * FROM audit_log WHERE action = 'participant.invite'")
    assert (audit["username"], audit["participant_id"], audit["details"]) == (
        "crc_a",
        p["id"],
        {"channel": "sms"},
    )


async def test_no_personal_data_in_the_outbox_or_the_logs(
    client,
    world,
    pool,
    mail_settings,
    smtp_server,
    sms_server,
    caplog,
):
    await world.standard()
    p = await add_participant(client, world)
    secrets_ = [PERSON["firstName"], PERSON["lastName"], PERSON["emailAddress"], "5550104477",
                p["access_code"]]  # fmt: skip
    caplog.set_level(logging.DEBUG)
    await queue(pool, mail_settings, p["id"], "email")
    await queue(pool, mail_settings, p["id"], "sms")
    smtp_server.refuse_rcpt.append("450 4.2.1 <ottilie.q@example.org>: mailbox busy")
    sms_server.fail_with.append(503)
    for _ in range(2):
        await make_due(pool)
        await deliver(mail_settings, pool)
    assert len(smtp_server.received) == len(sms_server.received) == 1

    stored = ""
    for table in ("invitations", "invitation_attempts", "audit_log"):
        stored += " ".join(str(dict(r)) for r in await pool.fetch(f"SELECT * FROM {table}"))
    failures = await pool.fetch("SELECT error, status_code FROM invitation_attempts WHERE outcome = 'retry'")
    assert sorted(map(tuple, failures)) == [("http error", 503), ("recipient deferred", 450)]
    # The test SMTP server's own log (aiosmtpd, "mail.log") quotes the envelope: it is not ours.
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(r.getMessage() == "invitation attempt" for r in ours)
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    for secret in secrets_:
        assert secret not in stored, secret
        assert secret not in logged, secret


async def test_two_attempts_at_once_send_once(client, world, pool, mail_settings, smtp_server):
    """The claim: of two workers attempting the same row at the same moment, one sends."""
    await world.standard()
    p = await add_participant(client, world)
    view = await queue(pool, mail_settings, p["id"])
    smtp_server.data_delay = 0.3
    outcomes = await asyncio.gather(*(attempt_invitation(pool, mail_settings, view.id) for _ in range(2)))
    assert sorted(outcomes) == ["accepted", "not_due"]
    assert len(smtp_server.received) == 1


async def test_a_server_that_does_not_answer_in_time_is_retried(
    client, world, pool, mail_settings, smtp_server
):
    await world.standard()
    p = await add_participant(client, world)
    view = await queue(pool, mail_settings, p["id"])
    smtp_server.data_delay = 1.5
    quick = mail_settings.model_copy(update={"smtp_timeout_seconds": 0.25, "sms_timeout_seconds": 0.25})
    assert await attempt_invitation(pool, quick, view.id) == "retry"
    [queued] = await invitations(pool, p["id"])
    assert (queued.status, queued.lastError) == ("QUEUED", "timeout")
