"""CSV files in the forms hospitals export them: Excel's semicolons (most of Europe), tabs, UTF-16
"Unicode text", byte-order marks; and refusals that say where the trouble is and how to fix it."""

from __future__ import annotations

import codecs

import pytest

from service.core.bulk.parser import BulkCsvParser, _delimiter_of
from service.core.errors import ApiError
from tests.bulk_files import SITE_URL, file_failure, not_utf8, summary, upload
from tests.people import everyone
from tests.test_bulk import body_of, keys_in_study
from tests.test_webhooks_support import run_default_worker
from tests.world import expect

ROWS = ["ParticipantID;FirstName;LastName", "M-1;Jürgen;Müller", "M-2;Олена;ОНІО"]


def encoded(text: str, encoding: str) -> bytes:
    return text.encode(encoding)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("semicolon", encoded("\n".join(ROWS) + "\n", "utf-8")),
        ("semicolon_bom_crlf", codecs.BOM_UTF8 + encoded("\r\n".join(ROWS) + "\r\n", "utf-8")),
        ("tab", encoded("\n".join(r.replace(";", "\t") for r in ROWS) + "\n", "utf-8")),
        ("utf16_le_bom_tab", encoded("\r\n".join(r.replace(";", "\t") for r in ROWS) + "\r\n", "utf-16")),
        ("utf16_be_bom", codecs.BOM_UTF16_BE + encoded("\n".join(ROWS) + "\n", "utf-16-be")),
        ("comma_quoted_semicolons", b'ParticipantID,Notes\nM-1,"a;b;c"\nM-2,"x;y"\n'),
    ],
)
@pytest.mark.parametrize("raw", [False, True])
async def test_hospital_exports_are_read(client, world, name, data, raw):
    await world.standard()
    body = await body_of(await upload(client, world.token("crc_a"), data, raw=raw), 200)
    assert body == summary(["M-1", "M-2"], [], "Crc_A", body["createdAt"])
    assert sorted(k for k, _, _ in await keys_in_study(world)) == ["M-1", "M-2"]
    if name != "comma_quoted_semicolons":
        assert [r["last_name"] for r in await everyone(world.pool)] == ["Müller", "ОНІО"]


def test_the_header_row_decides_the_delimiter():
    assert _delimiter_of("ParticipantID;FirstName;LastName\n") == ";"
    assert _delimiter_of("ParticipantID\tFirstName\n") == "\t"
    assert _delimiter_of("ParticipantID\n") == ","
    assert _delimiter_of('"Name; as given",ParticipantID\n') == ","  # quoted semicolons do not count
    assert _delimiter_of("a;b,c\n") == ","  # a tie: the comma


@pytest.mark.parametrize(
    ("encoding", "data", "row", "column"),
    [
        ("windows-1252", "ParticipantID;LastName\nM-1;Smith\nM-2;Müller\n", 3, 2),
        ("iso-8859-5", "ParticipantID,LastName\nM-1,ОНІО\n", 2, 2),
        ("utf-16-le", "ParticipantID\tLastName\nM-1\tX\n", 1, 1),  # no BOM: not guessed
    ],
)
async def test_other_encodings_are_refused_with_where_and_how(client, world, encoding, data, row, column):
    await world.standard()
    body = await body_of(await upload(client, world.token("crc_a"), data.encode(encoding)), 400)
    assert body == file_failure("notSupportedFileFormat", "Crc_A", body["createdAt"], not_utf8(row, column))
    assert "UTF-8" in body["params"]["howToFix"]
    assert await keys_in_study(world) == []


async def test_an_encoding_refusal_found_by_the_job_says_where(client, world, settings):
    await world.standard()
    data = (
        "ParticipantID;LastName\n" + "".join(f"K-{i:06d};Doe\n" for i in range(20_000)) + "K-x;Müller\n"
    ).encode("windows-1252")
    text = await expect(
        await upload(client, world.token("crc_a"), data, url=SITE_URL + "?async=true", raw=True), 200
    )
    job_uuid = text.split()[-1]
    await run_default_worker(settings)
    status = await expect(
        await client.get(f"/pages/auth/api/jobs/{job_uuid}", headers=world.auth("crc_a")), 200
    )
    assert status["status"] == "FAILED"
    assert status["result"]["params"] == not_utf8(20_002, 2)


def test_every_file_refusal_names_its_row_and_column():
    def refusal(data: bytes) -> dict[str, object]:
        parser = BulkCsvParser(site_level=True, max_bytes=10**9)
        with pytest.raises(ApiError) as caught:
            parser.feed(data)
            parser.close()
        return caught.value.params

    assert refusal(b'ParticipantID;Notes\nA-1;"open\n') == {
        "reason": "malformedCsv",
        "rowNumber": 2,
        "column": 2,
    }
    assert refusal(b'ParticipantID;Notes\nA-1;ok\nA-2;"x"y\n') == {
        "reason": "malformedCsv",
        "rowNumber": 3,
        "column": 2,
    }
    assert refusal(b"ParticipantID;Notes;participant_id\n") == {
        "header": "participant_id",
        "rowNumber": 1,
        "column": 3,
    }
    assert refusal(b"\n\nName;Notes\n")["rowNumber"] == 3
    assert refusal(b"ParticipantID\tNotes\nA-1\tab\xffc\n") == not_utf8(2, 2)


async def test_an_id_repeated_in_the_file_has_its_own_code(client, world):
    await world.standard()
    token = world.token("crc_a")
    await expect(await upload(client, token, b"ParticipantID\nOLD-1\n"), 200)
    data = b"ParticipantID;FirstName\nD-1;Ann\nOLD-1;Bob\nd-1;Cy\nD-2;Di\nD-1;Ed\n"
    body = await body_of(await upload(client, token, data), 200)
    assert body == summary(
        ["D-1", "D-2"],
        [
            ("OLD-1", ["participantIDNotUnique"], 3),
            ("d-1", ["participantIDDuplicatedInFile"], 4),
            ("D-1", ["participantIDDuplicatedInFile"], 6),
        ],
        "Crc_A",
        body["createdAt"],
    )
