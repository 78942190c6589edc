"""The pure rules, without a server: field validation, the role table, ID templates, access codes."""

from __future__ import annotations

import re

import pytest

from service.core.errors import ApiError
from service.core.participant_ids import ACCESS_CODE_ALPHABET, new_access_code, template_errors
from service.core.roles import Action, Scope, authorize
from service.core.validation import contact_errors, participant_id_errors, phone_errors


@pytest.mark.parametrize(
    ("key", "errors"),
    [
        ("OHIO-5", []),
        ("X" * 30, []),
        ("X" * 31, ["participantIDLongerThan30Characters"]),
        ("a<b", ["participantIDContainsUnsupportedHTMLCharacter"]),
        (
            "<" + "X" * 30,
            ["participantIDContainsUnsupportedHTMLCharacter", "participantIDLongerThan30Characters"],
        ),
        ("a\tb", []),
        ("a\x00b", ["participantIDContainsUnsupportedCharacter"]),
        ("a\x85b", ["participantIDContainsUnsupportedCharacter"]),
        ("\ufeffA", ["participantIDContainsUnsupportedCharacter"]),
        ("Ωμέγα-1", []),
    ],
)
def test_participant_id(key, errors):
    assert participant_id_errors(key) == errors


@pytest.mark.parametrize(
    ("phone", "ok"),
    [
        ("+1 1234567890", True),
        ("+44 7700900123", True),
        ("+353 1", True),
        ("+1234 1", False),
        ("1 123", False),
        ("+1  123", False),
        ("+1 123-456", False),
        ("+1 12345678901234", True),
        ("+1 123456789012345", False),
        ("+1 123\n", False),
    ],
)
def test_phone(phone, ok):
    assert (phone_errors(phone) == []) is ok


def test_contact_errors_in_field_order():
    assert contact_errors("F" * 36, "L" * 36, "bad", "123", "I" * 36) == [
        "firstNameTooLong",
        "lastNameTooLong",
        "invalidEmailAddress",
        "invalidPhoneNumber",
        "identifierTooLong",
    ]
    assert contact_errors("", "", "", "", "") == []
    assert contact_errors(None, "O'Neil, Jr.", "a.b+c@example.org", "+1 5550100", None) == []


def test_template_rules():
    assert template_errors("{site}-{seq:04}") == []
    assert template_errors("{study}{seq}") == []
    assert template_errors("{site}") == ["template needs {seq}"]
    assert template_errors("{seq.__class__}") != []
    assert template_errors("{nope}{seq}") != []
    assert template_errors("{seq") != []
    assert template_errors("X-{seq:08}") == []
    assert template_errors("X-{seq:09}") != []  # a field renders no longer than it is written
    for bad in (
        "{seq:99999999999}",
        "{site:>99999999}{seq}",
        "{seq:0>40}",
        "<{seq}>",
        "{seq:c}",
        "{seq:{seq}}",
        "{seq!r}",
        "{seq:010}",
        "{seq:4}",
    ):
        assert template_errors(bad) != [], bad


def test_access_codes():
    codes = {new_access_code() for _ in range(1000)}
    assert len(codes) == 1000
    assert all(len(c) == 9 and set(c) <= set(ACCESS_CODE_ALPHABET) for c in codes)
    assert not set("01lIoO5S") & set(ACCESS_CODE_ALPHABET)  # the ambiguous characters are left out


def scope(study_roles=(), site_roles=None, site=True, user=True, study_status="available"):
    return Scope(
        user_id=1 if user else None,
        username="u",
        full_name="U",
        study={"id": 1, "status": study_status},
        site={"id": 10, "study_id": 1, "status": "available"} if site else None,
        study_oid="S",
        site_oid="S_A" if site else None,
        study_roles=frozenset(study_roles),
        site_roles={k: frozenset(v) for k, v in (site_roles or {}).items()},
    )


def code(fn):
    try:
        fn()
    except ApiError as e:
        return e.code
    return "ok"


def test_authorize_order_and_table():
    assert code(lambda: authorize(scope(user=False), Action.LIST)) == "noRoleSetUp"
    assert (
        code(lambda: authorize(scope(["ra"], study_status="frozen"), Action.WRITE_AT_SITE))
        == "studyNotAvailable"
    )
    assert code(lambda: authorize(scope(["ra"], study_status="frozen"), Action.LIST)) == "ok"
    assert code(lambda: authorize(scope(site_roles={11: ["ra"]}), Action.WRITE_AT_SITE)) == "noRoleSetUp"
    assert code(lambda: authorize(scope(site_roles={10: ["ra"]}), Action.EXTRACT)) == "ok"
    assert code(lambda: authorize(scope(site_roles={10: ["investigator"]}), Action.EXTRACT)) == "ok"
    assert (
        code(lambda: authorize(scope(site_roles={10: ["coordinator"]}), Action.EXTRACT))
        == "noSufficientPrivileges"
    )
    assert code(lambda: authorize(scope(["ra"]), Action.EXTRACT)) == "noSufficientPrivileges"
    assert (
        code(lambda: authorize(scope(site_roles={10: ["ra"]}, site=False), Action.WRITE_AT_STUDY))
        == "noSufficientPrivileges"
    )
    assert code(lambda: authorize(scope(["director"]), Action.WRITE_AT_SITE)) == "noSufficientPrivileges"
    assert (
        code(lambda: authorize(scope(site_roles={10: ["ra2"]}), Action.WRITE_AT_SITE))
        == "noSufficientPrivileges"
    )


def test_every_template_the_schema_admits_is_accepted():
    """The OpenAPI document states the template grammar the service enforces (no schema-valid
    template is refused), checked on generated strings."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from service.core.directory import TEMPLATE_MAX, TEMPLATE_PATTERN

    pattern = re.compile(TEMPLATE_PATTERN)

    @settings(max_examples=300, deadline=None)
    @given(st.from_regex(pattern, fullmatch=True).filter(lambda t: len(t) <= TEMPLATE_MAX))
    def accepted(template: str) -> None:
        assert template_errors(template) == [], template

    accepted()
