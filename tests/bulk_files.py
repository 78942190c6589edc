"""Helpers for the bulk upload tests: URLs, request forms, and a corpus of awkward files."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from service.core.bulk.parser import SAVE_AS_UTF8
from tests.world import SITE_A, STUDY

STUDY_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/participants/bulk"
SITE_URL = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/bulk"
CREATED_AT_RE = re.compile(r"[1-9][0-9]?-[1-9][0-9]?-[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def csv_bytes(*lines: str, newline: str = "\n") -> bytes:
    return (newline.join(lines) + newline).encode()


def form(
    data: bytes, filename: str = "participantList.csv", content_type: str = "text/xml", name: str = "file"
) -> FormData:
    """The seed's request: a multipart part ``file`` (the seed's documented part type is text/xml)."""
    f = FormData()
    f.add_field(name, data, filename=filename, content_type=content_type)
    return f


async def upload(
    client: TestClient,
    token: str,
    data: bytes,
    url: str = SITE_URL,
    raw: bool = False,
    **form_kwargs: Any,
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {token}"}
    if raw:
        headers["Content-Type"] = "text/csv"
        return await client.post(url, data=data, headers=headers)
    return await client.post(url, data=form(data, **form_kwargs), headers=headers)


def summary(
    added: list[str], failed: list[tuple[str, list[str], int]], created_by: str, created_at: str
) -> dict[str, Any]:
    """The seed's success shape for these outcomes (in file order); a failure is (ID, codes, its row
    in the file, the header being 1)."""
    return {
        "uploadCount": len(added),
        "failureCount": len(failed),
        "message": "SUCCESS",
        "createdBy": created_by,
        "createdAt": created_at,
        "failedParticipants": [
            {"subjectKey": key, "message": [f"errorCode.{c}" for c in codes], "rowNumber": row}
            for key, codes, row in failed
        ],
        "participants": [{"subjectKey": key, "status": "Available"} for key in added],
    }


def file_failure(
    code: str, created_by: str, created_at: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = {
        "uploadCount": 0,
        "failureCount": 0,
        "message": f"errorCode.{code}",
        "createdBy": created_by,
        "createdAt": created_at,
        "failedParticipants": [],
        "participants": [],
    }
    if params:  # what to fix, and where (rowNumber, column)
        body["params"] = params
    return body


NOT_UTF8 = {"reason": "notUtf8", "howToFix": SAVE_AS_UTF8}


def not_utf8(row: int, column: int) -> dict[str, Any]:
    return {**NOT_UTF8, "rowNumber": row, "column": column}


def malformed(row: int, column: int) -> dict[str, Any]:
    return {"reason": "malformedCsv", "rowNumber": row, "column": column}


# The params of the AWKWARD_FILES refused for what they hold: where the trouble is.
AWKWARD_PARAMS: dict[str, dict[str, Any]] = {
    "binary_png": not_utf8(1, 1),
    "binary_zip": not_utf8(1, 1),
    "latin1": not_utf8(2, 2),
    "no_participant_id_column": {"header": "ParticipantID", "rowNumber": 1, "delimiter": ","},
    "duplicate_header_columns": {"header": "participantid", "rowNumber": 1, "column": 2},
    "unterminated_quote": malformed(2, 1),
    "text_after_closing_quote": malformed(2, 1),
    "bare_cr_line_ends": malformed(1, 1),
}


# name -> (bytes, expected status, expected message or the keys added)
AWKWARD_FILES: dict[str, tuple[bytes, int, str | list[str]]] = {
    "bom": (b"\xef\xbb\xbfParticipantID\nA-1\n", 200, ["A-1"]),
    "crlf": (b"ParticipantID\r\nA-1\r\nA-2\r\n", 200, ["A-1", "A-2"]),
    "bom_crlf_no_final_newline": (b"\xef\xbb\xbfParticipantID\r\nA-1\r\nA-2", 200, ["A-1", "A-2"]),
    "quotes_with_commas": (
        b'Notes,ParticipantID\n"a, b, ""c""","A-1"\n"x","A ""2"""\n',
        200,
        ["A-1", 'A "2"'],
    ),
    "only_header": (b"ParticipantID\n", 400, "errorCode.blankFile"),
    "only_header_and_blank_lines": (b"ParticipantID\n\n \n,\n", 400, "errorCode.blankFile"),
    "empty": (b"", 400, "errorCode.blankFile"),
    "whitespace_only": (b"  \r\n\r\n", 400, "errorCode.blankFile"),
    "binary_png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", 400, "errorCode.notSupportedFileFormat"),
    "binary_zip": (b"PK\x03\x04\x14\x00\x08\x08\x08\x00\xa3\x8b", 400, "errorCode.notSupportedFileFormat"),
    "latin1": (
        "ParticipantID,FirstName\nA-1,Zoë\n".encode("latin-1"),
        400,
        "errorCode.notSupportedFileFormat",
    ),
    "no_participant_id_column": (
        b"Subject,FirstName\nA-1,Ann\n",
        400,
        "errorCode.missingParticipantIDHeader",
    ),
    "duplicate_header_columns": (
        b"ParticipantID,participantid\nA-1,A-2\n",
        400,
        "errorCode.duplicateColumnHeader",
    ),
    "duplicate_extra_columns": (b"Note,ParticipantID,Note\nx,A-1,y\n", 200, ["A-1"]),
    "ten_thousand_columns": (
        (",".join(f"c{i}" for i in range(9_999)) + ",ParticipantID\n" + "," * 9_999 + "A-1\n").encode(),
        200,
        ["A-1"],
    ),
    "columns_in_any_order_and_case": (b"lastname,PARTICIPANTID,firstName\nDoe,A-1,Jane\n", 200, ["A-1"]),
    "spaces_trimmed": (b"ParticipantID\n   A-1   \n", 200, ["A-1"]),
    # RFC 4180: a quote left open to the end of the file is not CSV (no guessing where it ended).
    "unterminated_quote": (b'ParticipantID\n"A-1\n', 400, "errorCode.notSupportedFileFormat"),
    "text_after_closing_quote": (b'ParticipantID\n"A-1"x\n', 400, "errorCode.notSupportedFileFormat"),
    "bare_cr_line_ends": (b"ParticipantID\rA-1\rA-2\r", 400, "errorCode.notSupportedFileFormat"),
    "utf8_multibyte_split_across_chunks": (("ParticipantID\n" + "É" * 10 + "\n").encode(), 200, ["É" * 10]),
}
