"""Extract participant contact information: submit, roles, the CSV itself, both storage backends."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import warnings
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import pytest

from service.settings import Settings
from service.worker.main import build_worker
from tests.people import seed
from tests.s3 import s3_server, s3_settings  # noqa: F401
from tests.world import SITE_A, SITE_B, STUDY, World, expect

SUBMIT = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/extractPartcipantsInfo"
SUBMIT_POST = (
    f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/extractParticipantsInfo"
)
JOBS = "/pages/auth/api/jobs"
HEADER = [
    "ParticipantId",
    "First Name",
    "Last Name",
    "Email",
    "Mobile",
    "Identifier",
    "Access Code",
    "Participate Status",
]
UUID_TEXT = re.compile(r"^job uuid: ([0-9a-f-]{36})$")


# ---- helpers shared by the other extract/job test modules ----


async def add_participant(pool: asyncpg.Pool, site_oid: str | None, key: str, **fields: Any) -> None:
    """A participant written straight to the table, encrypted (values the API would refuse, too)."""
    await seed(pool, STUDY, site_oid, [{"subject_key": key, "participate_status": "", **fields}])


async def seed_site(pool: asyncpg.Pool, site_oid: str, n: int, prefix: str = "P") -> None:
    """``n`` participants at a site, encrypted, in batches."""
    for start in range(1, n + 1, 20_000):
        people = [
            {
                "subject_key": f"{prefix}{g:07d}",
                "first_name": f"First{g}",
                "last_name": f"Last, {g}",
                "email": f"p{g}@example.org",
                "phone": f"+1 555{g}",
            }
            for g in range(start, min(n, start + 19_999) + 1)
        ]
        await seed(pool, STUDY, site_oid, people)


async def run_jobs(settings: Settings) -> None:
    """Run every queued extract job to the end with a burst worker (the real worker code)."""
    worker = build_worker(settings, settings.extract_queue, burst=True, poll_delay=0.01)
    try:
        await worker.main()
    finally:
        await close_worker(worker)


async def close_worker(worker: Any) -> None:
    with warnings.catch_warnings():  # arq calls redis' deprecated close()
        warnings.simplefilter("ignore", DeprecationWarning)
        await worker.close()


async def submit(
    client: Any, world: World, user: str = "crc_a", url: str = SUBMIT, method: str = "GET"
) -> str:
    resp = await client.request(method, url, headers=world.auth(user))
    text = await expect(resp, 200)
    m = UUID_TEXT.match(text)
    assert m, text
    assert resp.headers["Location"].endswith(f"{JOBS}/{m.group(1)}")
    return m.group(1)


async def download(client: Any, world: World, job_uuid: str, user: str = "crc_a", **kw: Any) -> Any:
    return await client.get(
        f"{JOBS}/{job_uuid}/downloadFile", headers={**world.auth(user), **kw.pop("headers", {})}, **kw
    )


def parse_csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


# ---- submit ----


async def test_submit_answers_the_job_uuid_as_text_and_json(client, world, pool, settings):
    await world.standard()
    job_uuid = await submit(client, world)
    UUID(job_uuid)
    row = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1", UUID(job_uuid))
    assert row["status"] == "IN_QUEUE" and row["type"] == "EXTRACT_PARTICIPANTS"

    resp = await client.post(SUBMIT_POST, headers={**world.auth("inv_a"), "Accept": "application/json"})
    body = await expect(resp, 200)
    assert set(body) == {"jobUuid", "status", "statusUrl", "downloadUrl"}
    assert body["status"] == "IN_QUEUE"
    assert body["statusUrl"].endswith(f"{JOBS}/{body['jobUuid']}")
    assert body["downloadUrl"] == body["statusUrl"] + "/downloadFile"
    assert resp.headers["Location"] == body["statusUrl"]

    audit = await pool.fetch(
        "SELECT action, username, job_uuid FROM audit_log WHERE action = 'extract.submit' ORDER BY id"
    )
    assert [(a["username"], str(a["job_uuid"])) for a in audit] == [
        ("crc_a", job_uuid),
        ("inv_a", body["jobUuid"]),
    ]


ROLE_CASES = [
    ("crc_a", 200, None),
    ("inv_a", 200, None),
    ("dm", 403, "noSufficientPrivileges"),  # study-level roles may not extract
    ("dspec", 403, "noSufficientPrivileges"),
    ("dep", 403, "noSufficientPrivileges"),
    ("director", 403, "noSufficientPrivileges"),
    ("monitor", 403, "noSufficientPrivileges"),
    ("viewer", 403, "noSufficientPrivileges"),
    ("dm_a", 403, "noSufficientPrivileges"),
    ("ra2_a", 403, "noSufficientPrivileges"),
    ("monitor_a", 403, "noSufficientPrivileges"),
    ("viewer_a", 403, "noSufficientPrivileges"),
    ("crc_b", 403, "noRoleSetUp"),  # a role at another site only
    ("nobody", 403, "noRoleSetUp"),  # a valid token for an unknown user
]


@pytest.mark.parametrize(("user", "status", "code"), ROLE_CASES)
async def test_role_table_for_extract(client, world, pool, user, status, code):
    await world.standard()
    resp = await client.get(SUBMIT, headers=world.auth(user))
    body = await expect(resp, status)
    if code:
        assert body == {"message": f"errorCode.{code}", "params": {"studyOid": STUDY, "siteOid": SITE_A}}
        assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_seed_error_codes_through_http(client, world):
    await world.standard()
    await world.study("S_OTHER")
    await world.site("S_ELSEWHERE", study="S_OTHER")
    base = "/pages/auth/api/clinicaldata/studies/{}/sites/{}/participants/extractPartcipantsInfo"
    cases = [
        ("sdgsd", "sdgsg", 404, "studyNotExist"),
        (STUDY, "sdgsg", 404, "siteNotExist"),
        (STUDY, "S_ELSEWHERE", 404, "siteNotExist"),  # a site of another study
    ]
    for study, site, status, code in cases:
        body = await expect(await client.get(base.format(study, site), headers=world.auth("crc_a")), status)
        assert body == {"message": f"errorCode.{code}", "params": {"studyOid": study, "siteOid": site}}
    body = await expect(await client.get(SUBMIT), 401)
    assert body["message"] == "errorCode.unauthenticated"
    body = await expect(await client.get(SUBMIT, headers={"Authorization": "Bearer nope"}), 401)
    assert body["message"] == "errorCode.unauthenticated"


# ---- the file ----

TRICKY = [
    # key, first, last, email, phone, identifier, access code, status
    ("A-001", "Anne, Marie", 'O"Neil', "a@example.org", "+1 1234567890", "ID-1", "aB3dE6fG7", "available"),
    ("A-002", "Line\nBreak", "Ünïcödé 名前", "b@example.org", "+44 2071234567", "", None, "signed"),
    ("A-003", '=HYPERLINK("http://x")', "+SUM(A1)", "@evil", "-12", "\tTabbed", None, "available"),
    ("A-004", "\rCarriage", "-minus", None, "+1 555 12", "=1+1", None, "available"),
    ("A-005", "Removed", "Person", None, None, None, None, "removed"),
    ("A-006", "Auto", "Removed", None, None, None, None, "auto-removed"),
    ("-007", "Dash", "Key", None, "+12345", None, None, "available"),
]


async def _seed_tricky(pool: asyncpg.Pool) -> None:
    for key, first, last, email, phone, ident, code, status in TRICKY:
        await add_participant(
            pool,
            SITE_A,
            key,
            first_name=first,
            last_name=last,
            email=email,
            phone=phone,
            identifier=ident,
            access_code=code,
            status=status,
            participate_status="CREATED" if code else "",
        )
    await add_participant(pool, SITE_B, "B-001", first_name="Other", last_name="Site")
    await add_participant(pool, None, "S-001", first_name="Study", last_name="Level")


EXPECTED_ROWS = [
    HEADER,
    ["'-007", "Dash", "Key", "", "'+12345", "", "", ""],
    ["A-001", "Anne, Marie", 'O"Neil', "a@example.org", "+1 1234567890", "ID-1", "aB3dE6fG7", "CREATED"],
    ["A-002", "Line\nBreak", "Ünïcödé 名前", "b@example.org", "+44 2071234567", "", "", ""],
    ["A-003", '\'=HYPERLINK("http://x")', "'+SUM(A1)", "'@evil", "'-12", "'\tTabbed", "", ""],
    ["A-004", "'\rCarriage", "'-minus", "", "'+1 555 12", "'=1+1", "", ""],
]


async def _extract_and_download(client, world, pool, settings) -> tuple[Any, bytes, str]:
    await world.standard()
    await _seed_tricky(pool)
    job_uuid = await submit(client, world)
    await run_jobs(settings)
    resp = await download(client, world, job_uuid)
    body = await resp.read()
    assert resp.status == 200, body[:500]
    return resp, body, job_uuid


async def _check_file(resp, body: bytes, job_uuid: str, pool: asyncpg.Pool) -> None:
    # Ordered by participant ID in the database's collation: compare with what Postgres says.
    order = [
        r["subject_key"]
        for r in await pool.fetch(
            "SELECT subject_key FROM participants WHERE subject_key = ANY($1) ORDER BY subject_key",
            [r[0].lstrip("'") for r in EXPECTED_ROWS[1:]],
        )
    ]
    by_key = {r[0].lstrip("'"): r for r in EXPECTED_ROWS[1:]}
    assert parse_csv(body) == [HEADER] + [by_key[k] for k in order]
    job = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1", UUID(job_uuid))
    assert job["status"] == "COMPLETED"
    assert job["row_count"] == 5 and job["rows_done"] == 5 and job["rows_expected"] == 5
    assert job["byte_size"] == len(body)
    assert job["sha256"] == hashlib.sha256(body).hexdigest()
    assert resp.headers["ETag"] == f'"{job["sha256"]}"'
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert int(resp.headers["Content-Length"]) == len(body)
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    name = job["file_name"]
    assert re.fullmatch(
        re.escape(f"{STUDY}-{SITE_A}_Participant Access Code_") + r"\d{4}-\d{2}-\d{2}-\d{9}Z\.csv", name
    ), name
    assert (
        "filename*=UTF-8''" + name.replace(" ", "%20").replace("(", "%28").replace(")", "%29") in disposition
    )
    # One line ending throughout: LF, never a bare CR outside quotes.
    assert b"\r\n" not in body.replace(b'"\r', b"")
    # An empty cell is empty, never a quoted "" (not registered: no access code, no status).
    unregistered = [line for line in body.split(b"\n") if line.startswith((b"'-007,", b"A-004,"))]
    assert len(unregistered) == 2 and all(line.endswith(b",,") for line in unregistered), unregistered


async def test_csv_content_local_backend(client, world, pool, settings):
    resp, body, job_uuid = await _extract_and_download(client, world, pool, settings)
    await _check_file(resp, body, job_uuid, pool)
    assert (settings.storage_dir / "extracts" / f"{job_uuid}.csv").read_bytes() == body
    # OC4's open=true: the same file, shown rather than saved.
    shown = await download(client, world, job_uuid, params={"open": "true"})
    assert shown.headers["Content-Disposition"].startswith("inline; filename=")
    assert await shown.read() == body
    audit = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'job.download' AND job_uuid = $1", UUID(job_uuid)
    )
    assert audit == 2


async def test_csv_content_s3_backend(make_client, world, pool, s3_settings):
    client = await make_client(
        **s3_settings.model_dump(
            include={
                "storage_backend",
                "s3_endpoint",
                "s3_bucket",
                "s3_region",
                "s3_access_key_id",
                "s3_secret_access_key",
                "s3_allow_http",
                "storage_timeout_seconds",
            }
        )
    )
    resp, body, job_uuid = await _extract_and_download(client, world, pool, s3_settings)
    await _check_file(resp, body, job_uuid, pool)
    from tests.s3 import s3_client

    obj = s3_client(s3_settings.s3_endpoint).get_object(
        Bucket=s3_settings.s3_bucket, Key=f"extracts/{job_uuid}.csv"
    )
    assert obj["Body"].read() == body
    assert not (s3_settings.storage_dir / "extracts").exists()


async def test_empty_site_gives_a_header_only_file(client, world, pool, settings):
    await world.standard()
    await add_participant(pool, SITE_A, "GONE", status="removed")
    job_uuid = await submit(client, world)
    await run_jobs(settings)
    resp = await download(client, world, job_uuid)
    body = await resp.read()
    assert resp.status == 200
    assert parse_csv(body) == [HEADER]
    assert await pool.fetchval("SELECT row_count FROM jobs WHERE uuid = $1", UUID(job_uuid)) == 0


async def test_participant_added_through_the_api_is_extracted(client, world, settings):
    await world.standard()
    resp = await client.post(
        f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants?register=y",
        headers=world.auth("crc_a"),
        json={
            "subjectKey": "OHIO-5",
            "firstName": "Jo",
            "lastName": "Doe",
            "emailAddress": "jo@example.org",
            "phoneNumber": "+1 1234567890",
            "identifier": "X9",
        },
    )
    await expect(resp, 200)
    job_uuid = await submit(client, world, "inv_a")
    await run_jobs(settings)
    resp = await download(client, world, job_uuid, "inv_a")
    rows = parse_csv(await resp.read())
    assert resp.status == 200
    assert rows[0] == HEADER and len(rows) == 2
    key, first, last, email, phone, ident, code, status = rows[1]
    assert (key, first, last, email, phone, ident, status) == (
        "OHIO-5",
        "Jo",
        "Doe",
        "jo@example.org",
        "+1 1234567890",
        "X9",
        "CREATED",
    )
    assert re.fullmatch(r"[2346789aAbBcCdDeEfFgGhHijJkKLmMnNpPqQrRstTuUvVwWxXyYzZ]{9}", code), code


async def test_job_is_safe_to_run_twice(client, world, pool, settings):
    """arq may run a job more than once: the second run neither duplicates nor changes the result."""
    from service.worker.context import shutdown, startup
    from service.worker.extract import extract_participants_job

    await world.standard()
    await seed_site(pool, SITE_A, 50)
    job_uuid = await submit(client, world)
    await run_jobs(settings)
    first = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1", UUID(job_uuid))
    ctx: dict[str, Any] = {"settings": settings}
    await startup(ctx)
    try:
        assert await extract_participants_job(ctx, job_uuid) == "skipped"
        # Even a run that finds the job unfinished again (e.g. a lost status write, then its worker
        # gone silent) overwrites in place.
        await pool.execute(
            "UPDATE jobs SET status = 'IN_PROGRESS', heartbeat_at = now() - interval '1 hour' WHERE uuid = $1",
            UUID(job_uuid),
        )
        assert await extract_participants_job(ctx, job_uuid) == "COMPLETED"
    finally:
        await shutdown(ctx)
    second = await pool.fetchrow("SELECT * FROM jobs WHERE uuid = $1", UUID(job_uuid))
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 1
    assert (second["sha256"], second["row_count"], second["object_key"]) == (
        first["sha256"],
        50,
        first["object_key"],
    )
    assert second["attempts"] == 2
    assert [p.name for p in (settings.storage_dir / "extracts").iterdir()] == [f"{job_uuid}.csv"]
    resp = await download(client, world, job_uuid)
    assert len(parse_csv(await resp.read())) == 51


async def test_no_personal_data_in_job_rows_audit_or_logs(client, world, pool, settings, caplog):
    await world.standard()
    await add_participant(
        pool,
        SITE_A,
        "SECRET-KEY-1",
        first_name="Zebedee",
        last_name="Quux",
        email="zebedee@secret.example",
        phone="+1 5550199",
        access_code="qQ7wW8eE9",
    )
    caplog.set_level("DEBUG")
    job_uuid = await submit(client, world)
    await run_jobs(settings)
    resp = await download(client, world, job_uuid)
    assert b"Zebedee" in await resp.read()
    await client.get(f"{JOBS}/{job_uuid}", headers=world.auth("crc_a"))
    stored = " ".join(str(dict(r)) for r in await pool.fetch("SELECT * FROM jobs"))
    stored += " ".join(
        str(dict(r)) for r in await pool.fetch("SELECT * FROM audit_log WHERE job_uuid IS NOT NULL")
    )
    logs = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in ("Zebedee", "Quux", "zebedee@secret", "5550199", "qQ7wW8eE9", "SECRET-KEY-1"):
        assert secret not in stored, secret
        assert secret not in logs, secret


async def test_path_prefix_reaches_submit_and_urls(make_client, world, settings):
    client = await make_client(path_prefix="/OpenClinica")
    await world.standard()
    resp = await client.get(
        "/OpenClinica" + SUBMIT, headers={**world.auth("crc_a"), "Accept": "application/json"}
    )
    body = await expect(resp, 200)
    assert "/OpenClinica/pages/auth/api/jobs/" in body["statusUrl"]
    await run_jobs(settings)
    resp = await client.get(urlsplit(body["downloadUrl"]).path, headers=world.auth("crc_a"))
    assert resp.status == 200 and parse_csv(await resp.read()) == [HEADER]
