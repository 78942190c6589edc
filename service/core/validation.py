"""The field rules for a participant, shared by the single add and the bulk upload.

Pure functions: text in, error codes out (without the ``errorCode.`` prefix), in the order the
fields are checked. Limits are OC4's.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email
from pydantic import WithJsonSchema

PARTICIPANT_ID_MAX = 30
NAME_MAX = 35
IDENTIFIER_MAX = 35
EMAIL_MAX = 255
PHONE_MAX = 17
PHONE_RE = re.compile(r"\+[0-9]{1,3} [0-9]{1,14}")
# C0 and C1 controls, DEL and the byte-order mark (tab excepted): Postgres cannot even store NUL,
# and none of them belongs in a name or an ID.
CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ufeff]")

CONTACT_FIELDS = ("firstName", "lastName", "emailAddress", "phoneNumber", "identifier")


def participant_id_errors(subject_key: str) -> list[str]:
    errors = []
    if "<" in subject_key or ">" in subject_key:
        errors.append("participantIDContainsUnsupportedHTMLCharacter")
    elif CONTROL_RE.search(subject_key):
        errors.append("participantIDContainsUnsupportedCharacter")
    if len(subject_key) > PARTICIPANT_ID_MAX:
        errors.append("participantIDLongerThan30Characters")
    return errors


# The plainest addresses (ASCII dot-atom local part, hostname labels without "--", a letters-only
# top-level domain): a strict subset of what email_validator accepts, checked in a few microseconds
# instead of its ~150. Everything else goes to email_validator, so the accepted set is exactly
# its own (tests/test_email_fast_path.py checks the subset on generated addresses).
_PLAIN_EMAIL_RE = re.compile(
    r"(?=.{1,64}@)[A-Za-z0-9_+]+(?:[.-][A-Za-z0-9_+]+)*"
    r"@(?=.{4,253}$)(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.){1,8}([A-Za-z]{2,63})",
    re.ASCII,
)
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _plain_email(email: str) -> bool:
    m = _PLAIN_EMAIL_RE.fullmatch(email)
    if m is None or m.group(1).lower() in _SPECIAL_USE_TLDS:
        return False
    return all(len(label) <= 63 for label in email.rpartition("@")[2].split("."))  # DNS label limit


def email_errors(email: str) -> list[str]:
    if len(email) > EMAIL_MAX:
        return ["emailAddressTooLong"]
    if _plain_email(email):
        return []
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return ["invalidEmailAddress"]
    return []


def phone_errors(phone: str) -> list[str]:
    if len(phone) > PHONE_MAX:
        return ["phoneNumberTooLong"]
    if not PHONE_RE.fullmatch(phone):
        return ["invalidPhoneNumber"]
    return []


def contact_errors(
    first_name: str | None,
    last_name: str | None,
    email: str | None,
    phone: str | None,
    identifier: str | None,
) -> list[str]:
    """Errors of the contact fields that are given (None: not given; "" clears and is valid)."""
    errors: list[str] = []
    if first_name:
        if len(first_name) > NAME_MAX:
            errors.append("firstNameTooLong")
        elif CONTROL_RE.search(first_name):
            errors.append("firstNameContainsUnsupportedCharacter")
    if last_name:
        if len(last_name) > NAME_MAX:
            errors.append("lastNameTooLong")
        elif CONTROL_RE.search(last_name):
            errors.append("lastNameContainsUnsupportedCharacter")
    if email:
        errors += email_errors(email)
    if phone:
        errors += phone_errors(phone)
    if identifier:
        if len(identifier) > IDENTIFIER_MAX:
            errors.append("identifierTooLong")
        elif CONTROL_RE.search(identifier):
            errors.append("identifierContainsUnsupportedCharacter")
    return errors


def whole_number(value: object) -> object:
    """A before-validator for strict integer fields of a JSON body: JSON Schema's ``integer`` is any
    number without a fraction, 189.0 included (some JSON writers send whole numbers so), so such a
    float is the integer it names. Strings and bools stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer_schema(minimum: int, maximum: int) -> WithJsonSchema:
    """The schema of a bounded integer field with ``whole_number`` in front: stated explicitly,
    since around a before-validator pydantic writes the bounds as its own ``ge``/``le``."""
    return WithJsonSchema({"type": "integer", "minimum": minimum, "maximum": maximum})
