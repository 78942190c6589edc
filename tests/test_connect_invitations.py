"""Invitations asked for through OC4's connect call, as an integration asks: from the API to a real
SMTP server and a Twilio-compatible SMS API, each refused once and then delivered once; visible
through the API's invitation list; the participant INVITED; a retried request (same
Idempotency-Key) invites once."""

from __future__ import annotations

from tests.invitation_servers import sms_server, smtp_server  # noqa: F401  (fixtures)
from tests.people import code_of, everyone
from tests.test_invitations import PERSON, PORTAL, add_participant, deliver, mail_settings, make_due  # noqa: F401
from tests.world import STUDY, expect

API = f"/pages/auth/api/clinicaldata/studies/{STUDY}/participants"


async def test_connect_invites_by_email_and_sms_once_after_a_refusal(
    make_client, world, pool, mail_settings, smtp_server, sms_server
):
    client = await make_client(**mail_settings.model_dump(include={
        "participate_url", "smtp_host", "smtp_port", "smtp_security", "mail_from", "sms_base_url",
        "sms_account_sid", "sms_auth_token", "sms_from"}))  # fmt: skip
    await world.standard()
    p = await add_participant(client, world)
    smtp_server.refuse_data.append("451 4.3.0 Try again later")
    sms_server.fail_with.append(500)

    body = {"inviteParticipant": True, "inviteViaSms": True}
    headers = {**world.auth("crc_a"), "Idempotency-Key": "ctms-retry-1"}
    first = await expect(await client.post(f"{API}/OHIO-7/connect", json=body, headers=headers), 200)
    again = await expect(await client.post(f"{API}/OHIO-7/connect", json=body, headers=headers), 200)
    assert first == again and first["status"] == "CREATED"
    listed = await expect(await client.get(f"{API}/OHIO-7/invitations", headers=world.auth("monitor")), 200)
    assert sorted(i["channel"] for i in listed["invitations"]) == ["email", "sms"]
    assert {i["status"] for i in listed["invitations"]} == {"QUEUED"}

    await deliver(mail_settings, pool)  # both refused once
    assert smtp_server.received == [] and sms_server.received == []
    listed = await expect(await client.get(f"{API}/OHIO-7/invitations", headers=world.auth("crc_a")), 200)
    assert {i["status"] for i in listed["invitations"]} == {"QUEUED"}
    assert all(i["attempts"] == 1 and i["lastError"] for i in listed["invitations"])

    await make_due(pool)
    await deliver(mail_settings, pool)
    await make_due(pool)
    await deliver(mail_settings, pool)  # nothing left to send
    assert len(smtp_server.received) == 1 and len(sms_server.received) == 1
    link = f"{PORTAL}/?accessCode={p['access_code']}"
    assert link in smtp_server.received[0].get_content() and link in sms_server.received[0]["Body"]
    listed = await expect(await client.get(f"{API}/OHIO-7/invitations", headers=world.auth("crc_a")), 200)
    assert {(i["status"], i["attempts"]) for i in listed["invitations"]} == {("SENT", 2)}
    account = await expect(await client.get(f"{API}/OHIO-7", headers=world.auth("crc_a")), 200)
    assert account["status"] == "INVITED"
    for i in listed["invitations"]:
        assert PERSON["emailAddress"] not in str(i) and p["access_code"] not in str(i)


async def test_connect_refuses_an_invitation_that_cannot_go_and_changes_nothing(
    make_client, world, pool, mail_settings
):
    client = await make_client(**mail_settings.model_dump(include={"participate_url", "smtp_host", "smtp_port",
                                                                   "smtp_security", "mail_from"}))  # fmt: skip
    await world.standard()
    await add_participant(client, world, phoneNumber=None)
    before = await code_of(pool)
    body = {"firstName": "Changed", "resetAccessCode": True, "inviteViaSms": True}
    refused = await expect(
        await client.post(f"{API}/OHIO-7/connect", json=body, headers=world.auth("crc_a")), 409
    )
    assert refused["message"] == "errorCode.smsNotConfigured"
    row = (await everyone(pool))[0]
    assert (row["first_name"], row["access_code"]) == ("Ottilie", before)  # the whole call rolled back
    assert await pool.fetchval("SELECT count(*) FROM invitations") == 0
