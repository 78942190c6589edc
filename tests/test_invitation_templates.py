"""A study's invitation templates through the admin API: defaults, setting and resetting, each
refusal's errorCode, and the stated grammar (the OpenAPI patterns) agreeing with the checks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.errors import ApiError
from service.core.invitations.model import BODY_PATTERN, PLACEHOLDERS, SUBJECT_PATTERN
from service.core.invitations.templates import DEFAULTS, Template, check_text, render
from tests.world import STUDY, expect

URL = f"/admin/api/studies/{STUDY}/invitation-templates"


async def test_defaults_then_a_study_template_then_the_default_again(client, world, pool):
    await world.standard()
    admin = world.auth("admin")
    body = await expect(await client.get(URL, headers=admin), 200)
    assert body["placeholders"] == list(PLACEHOLDERS)
    assert [(t["channel"], t["custom"], t["body"]) for t in body["templates"]] == [
        ("email", False, DEFAULTS["email"].body),
        ("sms", False, DEFAULTS["sms"].body),
    ]

    email = {"subject": "{studyName}: welcome", "body": "Hi {firstName}, {{here}}: {accessLink}"}
    set_ = await expect(await client.put(URL + "/email", json=email, headers=admin), 200)
    assert (set_["channel"], set_["custom"], set_["updatedBy"], set_["subject"]) == (
        "email", True, "admin", email["subject"],
    )  # fmt: skip
    await expect(
        await client.put(URL + "/sms", json={"body": "Code: {accessCode} at {portalUrl}"}, headers=admin), 200
    )
    body = await expect(await client.get(URL, headers=admin), 200)
    assert [(t["channel"], t["custom"]) for t in body["templates"]] == [("email", True), ("sms", True)]

    await expect(await client.delete(URL + "/email", headers=admin), 204)
    body = await expect(await client.get(URL, headers=admin), 200)
    assert [(t["channel"], t["custom"]) for t in body["templates"]] == [("email", False), ("sms", True)]
    actions = await pool.fetch(
        "SELECT action, details FROM audit_log WHERE action LIKE 'admin.invitationTemplate.%' ORDER BY id"
    )
    assert [(a["action"], a["details"]["channel"]) for a in actions] == [
        ("admin.invitationTemplate.set", "email"),
        ("admin.invitationTemplate.set", "sms"),
        ("admin.invitationTemplate.reset", "email"),
    ]


@pytest.mark.parametrize(
    "channel, body, code, params",
    [
        (
            "sms",
            {"body": "{accessLink} {lastName}"},
            "unknownTemplatePlaceholder",
            {"placeholder": "lastName"},
        ),
        (
            "sms",
            {"body": "{accessLink} {firstName.__class__}"},
            "unknownTemplatePlaceholder",
            {"placeholder": "firstName.__class__"},
        ),
        (
            "sms",
            {"body": "{accessLink:>99}"},
            "unknownTemplatePlaceholder",
            {"placeholder": "accessLink:>99"},
        ),
        ("sms", {"body": "{} {accessLink}"}, "unknownTemplatePlaceholder", {"placeholder": ""}),
        ("sms", {"body": "Hello {firstName}"}, "invalidTemplate", {"field": "body"}),
        ("sms", {"body": "{accessLink} }"}, "invalidTemplate", {"field": "body"}),
        (
            "email",
            {"subject": "Hi {firstName", "body": "{accessLink}"},
            "invalidTemplate",
            {"field": "subject"},
        ),
        (
            "email",
            {"subject": "Hi\r\nBcc: x@example.org", "body": "{accessLink}"},
            "invalidTemplate",
            {"field": "subject"},
        ),
        (
            "email",
            {"subject": "{nope}", "body": "{accessLink}"},
            "unknownTemplatePlaceholder",
            {"placeholder": "nope"},
        ),
        ("sms", {"subject": "x", "body": "{accessLink}"}, "invalidRequestBody", {"fields": ["subject"]}),
        ("sms", {"body": "{accessLink}" + "x" * 1200}, "invalidRequestBody", {"fields": ["body"]}),
        ("email", {"body": "{accessLink}"}, "invalidRequestBody", {"fields": ["subject"]}),
    ],
)
async def test_bad_templates_are_refused(client, world, pool, channel, body, code, params):
    await world.standard()
    resp = await client.put(f"{URL}/{channel}", json=body, headers=world.auth("admin"))
    answer = await expect(resp, 400)
    assert answer["message"] == f"errorCode.{code}"
    assert params.items() <= answer["params"].items()
    assert await pool.fetchval("SELECT count(*) FROM invitation_templates") == 0


@pytest.mark.parametrize(
    "method, path, user, status",
    [
        ("GET", URL, "dm", 403),
        ("PUT", URL + "/sms", "crc_a", 403),
        ("DELETE", URL + "/sms", "dm", 403),
        ("GET", "/admin/api/studies/S_NOPE/invitation-templates", "admin", 404),
        ("PUT", "/admin/api/studies/S_NOPE/invitation-templates/sms", "admin", 404),
        ("DELETE", "/admin/api/studies/S_NOPE/invitation-templates/email", "admin", 404),
        ("GET", "/admin/api/studies/S_NOPE/invitations", "admin", 404),
        ("GET", f"/admin/api/studies/{STUDY}/invitations", "dm", 403),
        ("PUT", URL + "/fax", "admin", 404),
    ],
)
async def test_who_may_and_what_is_not_there(client, world, method, path, user, status):
    await world.standard()
    body = {"body": "{accessLink}"} if method == "PUT" else None
    await expect(await client.request(method, path, json=body, headers=world.auth(user)), status)


async def test_invitations_list_filters(client, world):
    await world.standard()
    admin = world.auth("admin")
    url = f"/admin/api/studies/{STUDY}/invitations"
    body = await expect(await client.get(url, headers=admin), 200)
    assert body == {"studyOid": STUDY, "invitations": [], "page": 1, "pageSize": 50}
    await expect(await client.get(url + "?status=LOST", headers=admin), 400)
    await expect(await client.get(url + "?pageSize=501", headers=admin), 400)


def test_rendering_substitutes_known_names_only():
    template = Template("{studyName} for {firstName}", "{{firstName}} is {firstName}: {accessLink}")
    values = {
        "firstName": "Jo\r\nBcc: x",
        "studyName": "Juno",
        "accessLink": "L",
        "accessCode": "C",
        "portalUrl": "P",
    }
    subject, body = render(template, values)
    assert subject == "Juno for Jo  Bcc: x"  # one header line, whatever the name holds
    assert body == "{firstName} is Jo\r\nBcc: x: L"


# Pieces that make up templates both valid and not: the grammar's edges.
PIECES = st.sampled_from(
    ["a", " ", "\n", "{", "}", "{{", "}}", "\x00", "\x07", "{nope}", "{firstName!r}", "{accessLink:}"]
    + [f"{{{p}}}" for p in PLACEHOLDERS]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=8).map("".join))
def test_the_stated_patterns_accept_what_the_checks_accept(text):
    for field, pattern, needs in (("body", BODY_PATTERN, True), ("subject", SUBJECT_PATTERN, False)):
        try:
            check_text(text, field, needs_way_in=needs)
            accepted = True
        except ApiError as exc:
            assert exc.status == 400
            accepted = False
        assert accepted == bool(re.fullmatch(pattern, text)), (field, text)
