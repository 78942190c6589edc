"""Identifiers the service makes up: system-generated participant IDs from a study's template, and
Participate access codes."""

from __future__ import annotations

import re
import secrets
import string

import asyncpg

from service.core.errors import ApiError
from service.core.roles import Scope
from service.core.validation import participant_id_errors

# OC4's unambiguous alphabet for Participate access codes.
ACCESS_CODE_ALPHABET = "2346789aAbBcCdDeEfFgGhHijJkKLmMnNpPqQrRstTuUvVwWxXyYzZ"
ACCESS_CODE_LENGTH = 9
TEMPLATE_FIELDS = {"site", "study", "seq"}


def new_access_code() -> str:
    return "".join(secrets.choice(ACCESS_CODE_ALPHABET) for _ in range(ACCESS_CODE_LENGTH))


# The largest multiple of the alphabet's size a byte can hold: bytes at or above it are drawn again,
# so every character is equally likely.
_UNBIASED_BYTES = 256 - 256 % len(ACCESS_CODE_ALPHABET)


def new_access_codes(count: int) -> list[str]:
    """``count`` access codes at once (a bulk registration): the same codes as ``new_access_code``
    draws, from one call to the system's generator per batch instead of nine per code."""
    chars: list[str] = []
    needed = count * ACCESS_CODE_LENGTH
    while len(chars) < needed:
        # A quarter more bytes than needed covers the rejected ones (about 16% of them).
        for byte in secrets.token_bytes((needed - len(chars)) * 5 // 4 + 16):
            if byte < _UNBIASED_BYTES:
                chars.append(ACCESS_CODE_ALPHABET[byte % len(ACCESS_CODE_ALPHABET)])
    joined = "".join(chars[:needed])
    return [joined[i : i + ACCESS_CODE_LENGTH] for i in range(0, needed, ACCESS_CODE_LENGTH)]


SEQ_SPEC_RE = re.compile(r"(0[1-8])?")  # {seq} or {seq:0N}: zero-padded to a width of at most 8


def template_errors(template: str) -> list[str]:
    """Problems with a study's ID template (checked when an admin sets it).

    Fields are ``{site}``, ``{study}`` and ``{seq}``; only ``{seq}`` takes a format spec, zero padding
    to a width of at most 8 (``{seq:04}``). Anything else could render IDs no rule accepts, or
    strings of any size.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return ["invalid template"]
    fields = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or conversion is not None:
            return ["template fields are {site}, {study}, {seq}"]
        if spec and (name != "seq" or not SEQ_SPEC_RE.fullmatch(spec)):
            return ["only {seq} takes a format: zero padding to a width up to 8, e.g. {seq:04}"]
        fields.append(name)
    if "seq" not in fields:
        return ["template needs {seq}"]
    if participant_id_errors(template.format(site="S", study="S", seq=1)):
        return ["template renders an invalid participant ID"]
    return []


async def next_generated_id(conn: asyncpg.Connection, scope: Scope) -> str:
    """The next free ID from the study's template. The counter lives on the study row, so
    concurrent requests serialize on it; an ID already taken (typed by hand before the study
    switched to system-generated) is skipped."""
    study = scope.study
    assert study is not None
    for _ in range(1000):
        seq = await conn.fetchval(
            "UPDATE studies SET id_seq = id_seq + 1 WHERE id = $1 RETURNING id_seq", study["id"]
        )
        key: str = study["id_template"].format(
            site=scope.site_oid or study["oid"], study=study["oid"], seq=seq
        )
        if participant_id_errors(key):
            raise ApiError("participantIDGenerationFailed", scope.params)
        taken = await conn.fetchval(
            "SELECT 1 FROM participants WHERE study_id = $1 AND lower(subject_key) = lower($2)",
            study["id"],
            key,
        )
        if not taken:
            return key
    raise ApiError("participantIDGenerationFailed", scope.params)
