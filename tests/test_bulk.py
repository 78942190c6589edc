"""Bulk upload from CSV, synchronous: the seed's examples, every error code through HTTP, the corpus."""

from __future__ import annotations

import pytest

from service.core.validation import PARTICIPANT_ID_MAX
from tests.bulk_files import (
    AWKWARD_FILES,
    AWKWARD_PARAMS,
    CREATED_AT_RE,
    SITE_URL,
    STUDY_URL,
    csv_bytes,
    file_failure,
    summary,
    upload,
)
from tests.people import person
from tests.world import SITE_A, STUDY, expect


async def body_of(resp, status):
    body = await expect(resp, status)
    assert isinstance(body, dict), body
    assert CREATED_AT_RE.fullmatch(body["createdAt"]), body
    return body


async def keys_in_study(world, study_oid=STUDY):
    rows = await world.pool.fetch(
        "SELECT p.subject_key, s.oid AS site_oid, p.status FROM participants p"
        " JOIN studies st ON st.id = p.study_id LEFT JOIN sites s ON s.id = p.site_id"
        " WHERE st.oid = $1 ORDER BY p.id",
        study_oid,
    )
    return [(r["subject_key"], r["site_oid"], r["status"]) for r in rows]


# -- the seed's three examples -------------------------------------------------------------------


async def test_seed_example_two_ids_added_at_site(client, world):
    await world.standard()
    await world.user("renuka", [(SITE_A, "ra")], full_name="Bhatnagar Renuka")
    resp = await upload(client, world.token("renuka"), csv_bytes("ParticipantID", "JUNO-005", "JUNO-006"))
    body = await body_of(resp, 200)
    assert body == summary(["JUNO-005", "JUNO-006"], [], "Bhatnagar Renuka", body["createdAt"])
    assert await keys_in_study(world) == [
        ("JUNO-005", SITE_A, "available"),
        ("JUNO-006", SITE_A, "available"),
    ]
    oids = await world.pool.fetch("SELECT oid FROM participants ORDER BY id")
    assert [r["oid"] for r in oids] == ["SS_JUNO005", "SS_JUNO006"]


async def test_seed_example_one_not_unique(client, world):
    await world.standard()
    await world.user("dspec2", [(None, "investigator")], full_name="Specialist Data ")
    token = world.token("dspec2")
    await expect(await upload(client, token, csv_bytes("ParticipantID", "JUNO-006")), 200)
    resp = await upload(client, token, csv_bytes("ParticipantID", "JUNO-006", "JUNO-007"))
    body = await body_of(resp, 200)
    assert body == summary(
        ["JUNO-007"], [("JUNO-006", ["participantIDNotUnique"], 2)], "Specialist Data ", body["createdAt"]
    )


async def test_seed_example_not_a_csv_file(client, world):
    await world.standard()
    await world.user("renuka", [(SITE_A, "ra")], full_name="Bhatnagar Renuka")
    resp = await upload(
        client,
        world.token("renuka"),
        b"<participants/>",
        filename="participantList.xml",
        content_type="text/xml",
    )
    body = await body_of(resp, 400)
    assert body == file_failure("notSupportedFileFormat", "Bhatnagar Renuka", body["createdAt"])
    assert await keys_in_study(world) == []


# -- request forms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filename": "LIST.CSV", "content_type": "application/octet-stream"},
        {"filename": "list.Csv", "content_type": "text/xml"},
        {"filename": "upload", "content_type": "text/csv"},
        {"filename": "upload.txt", "content_type": "text/csv; charset=utf-8"},
    ],
)
async def test_multipart_part_accepted_by_name_or_type(client, world, kwargs):
    await world.standard()
    resp = await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "K-1"), **kwargs)
    body = await body_of(resp, 200)
    assert body == summary(["K-1"], [], "Crc_A", body["createdAt"])


async def test_raw_text_csv_body(client, world):
    await world.standard()
    resp = await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "K-1", "K-2"), raw=True)
    body = await body_of(resp, 200)
    assert body == summary(["K-1", "K-2"], [], "Crc_A", body["createdAt"])


async def test_other_parts_before_the_file_are_skipped(client, world):
    from aiohttp import FormData

    await world.standard()
    f = FormData()
    f.add_field("note", "hello")
    f.add_field("file", csv_bytes("ParticipantID", "K-1"), filename="a.csv", content_type="text/csv")
    resp = await client.post(SITE_URL, data=f, headers=world.auth("crc_a"))
    body = await body_of(resp, 200)
    assert body["participants"] == [{"subjectKey": "K-1", "status": "Available"}]


@pytest.mark.parametrize(
    "how",
    ["wrong_part_name", "txt_file", "json_body", "form_urlencoded", "no_content_type", "bad_multipart"],
)
async def test_not_supported_file_format(client, world, how):
    from aiohttp import FormData

    await world.standard()
    headers = world.auth("crc_a")
    data: object
    if how == "wrong_part_name":
        data = FormData()
        data.add_field("upload", csv_bytes("ParticipantID", "K-1"), filename="a.csv", content_type="text/csv")
    elif how == "txt_file":
        data = FormData()
        data.add_field("file", csv_bytes("ParticipantID", "K-1"), filename="a.txt", content_type="text/plain")
    elif how == "json_body":
        data = b'{"subjectKey": "K-1"}'
        headers["Content-Type"] = "application/json"
    elif how == "form_urlencoded":
        data = {"file": "ParticipantID\nK-1\n"}
    elif how == "no_content_type":
        data = b"ParticipantID\nK-1\n"
        headers["Content-Type"] = ""
    else:
        data = (
            b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a.csv\r\n\r\nParticipantID\r\nK-1"
        )
        headers["Content-Type"] = "multipart/form-data; boundary=abc"
    resp = await client.post(SITE_URL, data=data, headers=headers)
    body = await body_of(resp, 400)
    assert body == file_failure("notSupportedFileFormat", "Crc_A", body["createdAt"])
    assert await keys_in_study(world) == []


# -- file-level failures: who and where ----------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "url", "status", "code"),
    [
        ("crc_a", STUDY_URL.replace(STUDY, "S_NOPE"), 404, "studyNotExist"),
        ("crc_a", SITE_URL.replace(SITE_A, "S_NOPE"), 404, "siteNotExist"),
        ("monitor", SITE_URL, 403, "noSufficientPrivileges"),
        ("viewer_a", SITE_URL, 403, "noSufficientPrivileges"),
        ("ra2_a", SITE_URL, 403, "noSufficientPrivileges"),
        ("director", STUDY_URL, 403, "noSufficientPrivileges"),
        ("crc_a", STUDY_URL, 403, "noSufficientPrivileges"),  # a site role asking at study level
        ("crc_b", SITE_URL, 403, "noRoleSetUp"),
        ("stranger", SITE_URL, 403, "noRoleSetUp"),
    ],
)
async def test_file_level_access_failures(client, world, user, url, status, code):
    await world.standard()
    resp = await upload(client, world.token(user), csv_bytes("ParticipantID", "K-1"), url=url)
    body = await body_of(resp, status)
    assert body == file_failure(code, body["createdBy"], body["createdAt"])
    assert await keys_in_study(world) == []


@pytest.mark.parametrize(
    ("user", "url"),
    [
        ("dm", STUDY_URL),
        ("dspec", STUDY_URL),
        ("dep", STUDY_URL),
        ("dm", SITE_URL),
        ("inv_a", SITE_URL),
        ("dm_a", SITE_URL),
    ],
)
async def test_bulk_rights_are_those_of_add(client, world, user, url):
    await world.standard()
    body = await body_of(
        await upload(client, world.token(user), csv_bytes("ParticipantID", "K-1"), url=url), 200
    )
    assert body["uploadCount"] == 1, body


async def test_unauthenticated_is_401_in_the_bulk_shape(client, world):
    await world.standard()
    resp = await upload(client, "not-a-token", csv_bytes("ParticipantID", "K-1"))
    body = await body_of(resp, 401)
    assert body == file_failure("unauthenticated", "", body["createdAt"])
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_system_generated_study_refuses_bulk(client, world):
    await world.standard(participantIdMethod="system_generated")
    resp = await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "K-1"))
    body = await body_of(resp, 409)
    assert body == file_failure("bulkUploadNotSupportSystemGeneratedSetting", "Crc_A", body["createdAt"])


async def test_study_not_available(client, world):
    await world.standard(status="frozen")
    body = await body_of(await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "K-1")), 409)
    assert body["message"] == "errorCode.studyNotAvailable"


async def test_invalid_async_parameter(client, world):
    await world.standard()
    resp = await upload(
        client, world.token("crc_a"), csv_bytes("ParticipantID", "K-1"), url=SITE_URL + "?async=maybe"
    )
    body = await body_of(resp, 400)
    assert body["message"] == "errorCode.invalidParameter"


# -- file-level failures: the file ---------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True])
async def test_file_too_large(make_client, world, raw):
    client = await make_client(bulk_max_bytes=1000)
    await world.standard()
    data = csv_bytes("ParticipantID", *(f"K-{i:05d}" for i in range(200)))
    body = await body_of(await upload(client, world.token("crc_a"), data, raw=raw), 413)
    assert body == file_failure("fileTooLarge", "Crc_A", body["createdAt"])
    assert await keys_in_study(world) == []
    # Just under the limit is fine.
    small = csv_bytes("ParticipantID", *(f"K-{i:05d}" for i in range(100)))
    assert len(small) <= 1000
    body = await body_of(await upload(client, world.token("crc_a"), small, raw=raw), 200)
    assert body["uploadCount"] == 100


async def test_file_too_large_without_content_length(make_client, world):
    """A chunked body declares no length: the limit is enforced while it streams."""
    client = await make_client(bulk_max_bytes=1000)
    await world.standard()

    async def chunks():
        yield b"ParticipantID\n"
        for i in range(300):
            yield f"K-{i:05d}\n".encode()

    headers = {**world.auth("crc_a"), "Content-Type": "text/csv"}
    body = await body_of(await client.post(SITE_URL, data=chunks(), headers=headers), 413)
    assert body["message"] == "errorCode.fileTooLarge"
    assert await keys_in_study(world) == []


@pytest.mark.parametrize("name", sorted(AWKWARD_FILES))
@pytest.mark.parametrize("raw", [False, True])
async def test_awkward_files(client, world, name, raw):
    data, status, expected = AWKWARD_FILES[name]
    await world.standard()
    body = await body_of(await upload(client, world.token("crc_a"), data, raw=raw), status)
    if isinstance(expected, str):
        code = expected.removeprefix("errorCode.")
        assert body == file_failure(code, "Crc_A", body["createdAt"], AWKWARD_PARAMS.get(name))
        assert await keys_in_study(world) == []
    else:
        assert body == summary(expected, [], "Crc_A", body["createdAt"])
        assert sorted(k for k, _, _ in await keys_in_study(world)) == sorted(expected)


async def test_a_cell_over_64_kib_fails_its_row_alone(client, world):
    await world.standard()
    cell = "x" * (64 * 1024 + 1)
    body = await body_of(
        await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", cell, "K-1")), 200
    )
    assert body == summary(["K-1"], [("x" * 100, ["cellTooLarge"], 2)], "Crc_A", body["createdAt"])


async def test_a_row_over_1_mib_fails_the_file(client, world):
    """Whatever its shape: one long line, or a quoted cell holding a million newlines."""
    await world.standard()
    one_line = b"ParticipantID\n" + b"x" * (1024 * 1024 + 1) + b"\nK-1\n"
    newlines = b'ParticipantID,Notes\nK-1,"' + b"\n" * (1024 * 1024 + 1) + b'"\nK-2,x\n'
    for data, column in ((one_line, 1), (newlines, 2)):
        body = await body_of(await upload(client, world.token("crc_a"), data), 400)
        where = {"maxBytes": 1024 * 1024, "rowNumber": 2, "column": column}
        assert body == file_failure("rowTooLarge", "Crc_A", body["createdAt"], where)
    assert await keys_in_study(world) == []


async def test_a_long_quoted_cell_with_newlines_under_the_limits(client, world):
    await world.standard()
    cell = "ab\n" * 20_000  # 60,000 characters over 20,000 lines
    data = b'ParticipantID,Notes\nK-1,"' + cell.encode() + b'"\nK-2,x\n'
    body = await body_of(await upload(client, world.token("crc_a"), data), 200)
    assert body == summary(["K-1", "K-2"], [], "Crc_A", body["createdAt"])


# -- per-row failures ----------------------------------------------------------------------------


async def test_row_failures_and_first_occurrence_wins(client, world):
    await world.standard()
    await world.pool.execute("SELECT 1")
    token = world.token("crc_a")
    await expect(await upload(client, token, csv_bytes("ParticipantID", "OLD-1")), 200)
    long_id = "L" * (PARTICIPANT_ID_MAX + 1)
    data = csv_bytes(
        "ParticipantID",
        "A-1",
        "<b>bold</b>",
        long_id,
        "old-1",  # in the study already (case-insensitive)
        "a-1",  # repeated in the file: the first occurrence wins
        "B-2",
        "",
        "  ",
        "B-2",
        "X" * PARTICIPANT_ID_MAX,
    )
    body = await body_of(await upload(client, token, data), 200)
    assert body == summary(
        ["A-1", "B-2", "X" * PARTICIPANT_ID_MAX],
        [
            ("<b>bold</b>", ["participantIDContainsUnsupportedHTMLCharacter"], 3),
            (long_id, ["participantIDLongerThan30Characters"], 4),
            ("old-1", ["participantIDNotUnique"], 5),
            ("a-1", ["participantIDDuplicatedInFile"], 6),
            ("B-2", ["participantIDDuplicatedInFile"], 10),
        ],
        "Crc_A",
        body["createdAt"],
    )


async def test_every_row_failing_is_still_200(client, world):
    await world.standard()
    body = await body_of(
        await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "<a>", "<b>")), 200
    )
    assert body["uploadCount"] == 0 and body["failureCount"] == 2 and body["message"] == "SUCCESS"
    assert await keys_in_study(world) == []


async def test_enrollment_cap_rows_past_the_cap_fail(client, world):
    await world.standard(expectedTotalEnrollment=4, enforceEnrollmentCap=True)
    token = world.token("crc_a")
    await expect(await upload(client, token, csv_bytes("ParticipantID", "E-1")), 200)
    data = csv_bytes("ParticipantID", "E-1", "C-1", "<x>", "C-2", "C-3", "C-4", "C-5")
    body = await body_of(await upload(client, token, data), 200)
    cap = ["participantsEnrollmentCapReached"]
    assert body == summary(
        ["C-1", "C-2", "C-3"],
        [
            ("E-1", ["participantIDNotUnique"], 2),
            ("<x>", ["participantIDContainsUnsupportedHTMLCharacter"], 4),
            ("C-4", cap, 7),
            ("C-5", cap, 8),
        ],
        "Crc_A",
        body["createdAt"],
    )
    assert len(await keys_in_study(world)) == 4


async def test_cap_not_enforced_admits_everything(client, world):
    await world.standard(expectedTotalEnrollment=1, enforceEnrollmentCap=False)
    body = await body_of(
        await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "C-1", "C-2")), 200
    )
    assert body["uploadCount"] == 2


async def test_contact_columns_at_site_level(client, world):
    await world.standard()
    data = csv_bytes(
        "ParticipantID,FirstName,LastName,EmailAddress,MobileNumber,Identifier",
        "P-1,Ann,Lee,ann@example.com,+1 1234567890,ID-9",
        "P-2,,,,,",
        "P-3," + "F" * 36 + ",,,,",
        "P-4,,," + "not-an-email" + ",,",
        "P-5,,,,12345,",
        "P-6,,,,+1 123456789012345678,",
        "P-7,,," + "a" * 250 + "@example.com,,",
        "P-8,,,,," + "I" * 36,
        "P-9,," + "L" * 36 + ",,,",
        ",Bob,,,,",
    )
    body = await body_of(await upload(client, world.token("crc_a"), data), 200)
    assert body == summary(
        ["P-1", "P-2"],
        [
            ("P-3", ["firstNameTooLong"], 4),
            ("P-4", ["invalidEmailAddress"], 5),
            ("P-5", ["invalidPhoneNumber"], 6),
            ("P-6", ["phoneNumberTooLong"], 7),
            ("P-7", ["emailAddressTooLong"], 8),
            ("P-8", ["identifierTooLong"], 9),
            ("P-9", ["lastNameTooLong"], 10),
            ("", ["participantIDEmpty"], 11),
        ],
        "Crc_A",
        body["createdAt"],
    )
    row = await person(world.pool, "P-1")
    assert (row["first_name"], row["last_name"], row["email"], row["phone"], row["identifier"]) == (
        "Ann",
        "Lee",
        "ann@example.com",
        "+1 1234567890",
        "ID-9",
    )
    row = await person(world.pool, "P-2")
    assert (row["first_name"], row["email"], row["access_code"], row["participate_status"]) == (
        None,
        None,
        None,
        "",
    )


async def test_contact_columns_at_study_level(client, world):
    await world.standard()
    data = csv_bytes("ParticipantID,FirstName", "S-1,", "S-2,Ann")
    body = await body_of(await upload(client, world.token("dm"), data, url=STUDY_URL), 200)
    assert body == summary(
        ["S-1"], [("S-2", ["studyLevelParticipantContactNotAllowed"], 3)], "Dm", body["createdAt"]
    )
    assert await keys_in_study(world) == [("S-1", None, "available")]


async def test_bulk_only_creates(client, world):
    """An ID already at another site is not moved: bulk never updates or reassigns."""
    await world.standard()
    await expect(
        await upload(client, world.token("dm"), csv_bytes("ParticipantID", "M-1"), url=STUDY_URL), 200
    )
    body = await body_of(await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "M-1")), 200)
    assert body["failedParticipants"] == [
        {"subjectKey": "M-1", "message": ["errorCode.participantIDNotUnique"], "rowNumber": 2}
    ]
    assert await keys_in_study(world) == [("M-1", None, "available")]


async def test_oids_stay_unique_within_one_upload(client, world):
    await world.standard()
    body = await body_of(
        await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "J-1", "J_1", "J.1")), 200
    )
    assert body["uploadCount"] == 3
    oids = [r["oid"] for r in await world.pool.fetch("SELECT oid FROM participants ORDER BY id")]
    assert len(set(oids)) == 3 and all(o.startswith("SS_J1") for o in oids), oids


async def test_removed_participant_id_is_not_unique(client, world):
    await world.standard()
    token = world.token("crc_a")
    await expect(await upload(client, token, csv_bytes("ParticipantID", "R-1")), 200)
    await world.pool.execute("UPDATE participants SET status = 'removed'")
    body = await body_of(await upload(client, token, csv_bytes("ParticipantID", "R-1")), 200)
    assert body["failedParticipants"] == [
        {"subjectKey": "R-1", "message": ["errorCode.participantIDNotUnique"], "rowNumber": 2}
    ]


# -- audit and personal data ---------------------------------------------------------------------


async def test_audit_rows_name_fields_never_values(client, world, caplog):
    await world.standard()
    data = csv_bytes(
        "ParticipantID,FirstName,EmailAddress", "A-1,Zelda,zelda@example.com", "A-2,,", "<x>,Yolanda,"
    )
    with caplog.at_level("DEBUG"):
        await body_of(await upload(client, world.token("crc_a"), data), 200)
    rows = await world.pool.fetch("SELECT * FROM audit_log ORDER BY id")
    creates = [r for r in rows if r["action"] == "participant.create"]
    assert [(r["username"], r["details"]) for r in creates] == [
        ("crc_a", {"fields": ["firstName", "emailAddress"], "registered": False, "bulk": True}),
        ("crc_a", {"fields": [], "registered": False, "bulk": True}),
    ]
    ids = {r["id"] for r in await world.pool.fetch("SELECT id FROM participants")}
    assert {r["participant_id"] for r in creates} == ids
    uploads = [r for r in rows if r["action"] == "participant.bulk_add"]
    assert len(uploads) == 1
    assert uploads[0]["details"] == {"rows": 3, "bytes": len(data), "uploadCount": 2, "failureCount": 1}
    text = " ".join(str(dict(r)) for r in rows) + caplog.text
    for secret in ("Zelda", "zelda@example.com", "Yolanda"):
        assert secret not in text


async def test_large_upload_response_lists_every_row(client, world):
    await world.standard()
    keys = [f"BIG-{i:06d}" for i in range(25_000)]
    data = csv_bytes("ParticipantID", *keys, "<bad>")
    body = await body_of(await upload(client, world.token("crc_a"), data, raw=True), 200)
    assert body["uploadCount"] == 25_000 and body["failureCount"] == 1
    assert [p["subjectKey"] for p in body["participants"]] == keys
    assert await world.pool.fetchval("SELECT count(*) FROM participants") == 25_000
    assert await world.pool.fetchval("SELECT count(*) FROM audit_log") == 25_001


async def test_oids_match_the_single_add(client, world):
    """Bulk computes plain OIDs set-based; they must be those participant_oid() gives one by one."""
    await world.standard()
    keys = ["Q-1", "q_2", "Q 3", "ÄQ-4", "Q-5!", "--", "Q-1x"]
    single = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
    for key in keys:
        await expect(await client.post(single, json={"subjectKey": key}, headers=world.auth("crc_a")), 200)
    expected = {
        r["subject_key"]: r["oid"]
        for r in await world.pool.fetch("SELECT subject_key, oid FROM participants")
    }
    await world.pool.execute("TRUNCATE audit_log; DELETE FROM participants")  # audit rows are append-only
    body = await body_of(await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", *keys)), 200)
    assert body["uploadCount"] == len(keys)
    got = {
        r["subject_key"]: r["oid"]
        for r in await world.pool.fetch("SELECT subject_key, oid FROM participants")
    }
    plain = {k: v for k, v in expected.items() if "_" not in v.removeprefix("SS_")}
    assert {k: got[k] for k in plain} == plain
    assert len(set(got.values())) == len(keys)


async def test_control_characters_in_a_row(client, world):
    await world.standard()
    data = b'ParticipantID,FirstName,Identifier\n"A\x0bB",,\nC-1,"Jo\nhn",\nC-2,,"x\x07y"\n'
    body = await body_of(await upload(client, world.token("crc_a"), data), 200)
    assert body == summary(
        [],
        [
            ("A\x0bB", ["participantIDContainsUnsupportedCharacter"], 2),
            ("C-1", ["firstNameContainsUnsupportedCharacter"], 3),
            ("C-2", ["identifierContainsUnsupportedCharacter"], 4),
        ],
        "Crc_A",
        body["createdAt"],
    )


async def test_path_prefix_and_gzip_body(make_client, world):
    import gzip

    client = await make_client(path_prefix="/OpenClinica")
    await world.standard()
    data = gzip.compress(csv_bytes("ParticipantID", "Z-1", "Z-2"))
    headers = {**world.auth("crc_a"), "Content-Type": "text/csv", "Content-Encoding": "gzip"}
    body = await body_of(await client.post("/OpenClinica" + SITE_URL, data=data, headers=headers), 200)
    assert body == summary(["Z-1", "Z-2"], [], "Crc_A", body["createdAt"])
    resp = await client.post(SITE_URL, data=data, headers=headers)
    assert resp.status == 404


async def test_gzip_bomb_counts_decompressed_bytes(make_client, world):
    import gzip

    client = await make_client(bulk_max_bytes=10_000)
    await world.standard()
    data = gzip.compress(b"ParticipantID\n" + b"B-1\n" * 500_000)
    assert len(data) < 10_000
    headers = {**world.auth("crc_a"), "Content-Type": "text/csv", "Content-Encoding": "gzip"}
    body = await body_of(await client.post(SITE_URL, data=data, headers=headers), 413)
    assert body["message"] == "errorCode.fileTooLarge"
