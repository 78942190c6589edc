"""OC4 4.x's later extract parameters on both submit paths: includeParticipateInfo /
includeParticipateRelatedInfo, page_number / page_size."""

from __future__ import annotations

import csv
import hashlib
import io
from uuid import UUID

import pytest

from service.core.extract_options import ExtractOptions
from tests.test_extract import (
    HEADER,
    SUBMIT,
    SUBMIT_POST,
    add_participant,
    download,
    parse_csv,
    run_jobs,
    submit,
)
from tests.world import SITE_A, expect


async def seed(world, pool) -> None:
    await world.standard()
    # Inserted out of order: the file is in participant-ID order whatever the insertion order.
    for key, code, status in [("K-03", "AC3", "CREATED"), ("K-01", "AC1", "CREATED"), ("K-05", None, ""),
                              ("K-02", "AC2", "CREATED"), ("K-04", "=AC4", "")]:  # fmt: skip
        await add_participant(
            pool, SITE_A, key, first_name="F" + key, access_code=code, participate_status=status
        )
    await add_participant(pool, SITE_A, "K-00", status="removed", access_code="GONE")


async def extract(client, world, settings, query: str = "", method: str = "GET") -> list[list[str]]:
    url = (SUBMIT if method == "GET" else SUBMIT_POST) + query
    job_uuid = await submit(client, world, url=url, method=method)
    await run_jobs(settings)
    resp = await download(client, world, job_uuid)
    assert resp.status == 200, await resp.text()
    return parse_csv(await resp.read())


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_absent_parameters_keep_the_seeds_behaviour(client, world, pool, settings, method):
    await seed(world, pool)
    rows = await extract(client, world, settings, method=method)
    assert rows[0] == HEADER
    assert [(r[0], r[6], r[7]) for r in rows[1:]] == [
        ("K-01", "AC1", "CREATED"), ("K-02", "AC2", "CREATED"), ("K-03", "AC3", "CREATED"),
        ("K-04", "'=AC4", ""), ("K-05", "", ""),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "query",
    [
        "?includeParticipateInfo=n",
        "?includeParticipateRelatedInfo=N",
        "?includeParticipateInfo=y&includeParticipateRelatedInfo=n",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_without_participate_info_those_cells_are_empty(client, world, pool, settings, query, method):
    await seed(world, pool)
    rows = await extract(client, world, settings, query, method)
    assert rows[0] == HEADER  # the header never changes
    assert [r[0] for r in rows[1:]] == ["K-01", "K-02", "K-03", "K-04", "K-05"]
    assert {(r[6], r[7]) for r in rows[1:]} == {("", "")}
    assert all(r[1] == "F" + r[0] for r in rows[1:])  # the rest is all there


async def test_participate_info_y_in_any_case(client, world, pool, settings):
    await seed(world, pool)
    rows = await extract(client, world, settings, "?includeParticipateInfo=Y&includeParticipateRelatedInfo=y")
    assert rows[1][6:] == ["AC1", "CREATED"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_pages_in_participant_id_order(client, world, pool, settings, method):
    await seed(world, pool)
    pages = {}
    for number in (1, 2, 3, 4):
        rows = await extract(client, world, settings, f"?page_number={number}&page_size=2", method)
        assert rows[0] == HEADER
        pages[number] = [r[0] for r in rows[1:]]
    assert pages == {1: ["K-01", "K-02"], 2: ["K-03", "K-04"], 3: ["K-05"], 4: []}
    rows = await extract(client, world, settings, "?page_size=3")  # page_number defaults to 1
    assert [r[0] for r in rows[1:]] == ["K-01", "K-02", "K-03"]
    rows = await extract(client, world, settings, "?page_number=1")  # no page_size: everyone
    assert len(rows) == 6
    rows = await extract(client, world, settings, "?page_number=2&page_size=2&includeParticipateInfo=n")
    assert [(r[0], r[6]) for r in rows[1:]] == [("K-03", ""), ("K-04", "")]


async def test_a_page_job_expects_and_counts_its_slice(client, world, pool, settings):
    await seed(world, pool)
    job_uuid = await submit(client, world, url=SUBMIT + "?page_number=3&page_size=2")
    await run_jobs(settings)
    job = await pool.fetchrow(
        "SELECT rows_expected, row_count, params FROM jobs WHERE uuid = $1", UUID(job_uuid)
    )
    assert (job["rows_expected"], job["row_count"]) == (1, 1)
    assert job["params"]["pageNumber"] == 3 and job["params"]["pageSize"] == 2


@pytest.mark.parametrize(
    "query, code",
    [
        ("?page_number=0", "invalidPageNumberParameter"),
        ("?page_number=-1", "invalidPageNumberParameter"),
        ("?page_number=abc", "invalidPageNumberParameter"),
        ("?page_number=", "invalidPageNumberParameter"),
        ("?page_number=1.5", "invalidPageNumberParameter"),
        ("?page_number=%D9%A1", "invalidPageNumberParameter"),  # an Arabic-Indic one
        ("?page_number=99999999999999999999", "invalidPageNumberParameter"),
        ("?page_size=0", "invalidPageSizeParameter"),
        ("?page_size=1000001", "invalidPageSizeParameter"),
        ("?page_size=x&page_number=1", "invalidPageSizeParameter"),
        ("?page_size=1_000", "invalidPageSizeParameter"),
        ("?includeParticipateInfo=maybe", "invalidParameter"),
        ("?includeParticipateRelatedInfo=", "invalidParameter"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bad_values_are_400_with_oc4s_names(client, world, pool, query, code, method):
    await world.standard()
    url = (SUBMIT if method == "GET" else SUBMIT_POST) + query
    resp = await client.request(method, url, headers=world.auth("crc_a"))
    assert (await expect(resp, 400))["message"] == f"errorCode.{code}"
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


def test_limits_are_accepted_at_the_edges():
    opts = ExtractOptions.from_query({"page_number": "1000000000", "page_size": "1000000"})
    assert opts.slice_sql() == f"LIMIT 1000000 OFFSET {(1_000_000_000 - 1) * 1_000_000}"
    assert ExtractOptions.from_params(opts.to_params()) == opts
    assert ExtractOptions.from_params({"studyOid": "S"}) == ExtractOptions()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bom_y_writes_the_mark_excel_needs(client, world, pool, settings, method):
    await seed(world, pool)
    await add_participant(pool, SITE_A, "K-06", first_name="Müller", last_name="ОНІО")
    url = (SUBMIT if method == "GET" else SUBMIT_POST) + "?bom=Y"
    job_uuid = await submit(client, world, url=url, method=method)
    await run_jobs(settings)
    resp = await download(client, world, job_uuid)
    body = await resp.read()
    assert body.startswith(b"\xef\xbb\xbfParticipantId,")
    # As Excel reads it: the mark says UTF-8, and is not part of the first header cell.
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert rows[0] == HEADER and rows[-1][:3] == ["K-06", "Müller", "ОНІО"]
    job = await expect(await client.get(f"/pages/auth/api/jobs/{job_uuid}", headers=world.auth("crc_a")), 200)
    assert job["byteSize"] == len(body) and job["sha256"] == hashlib.sha256(body).hexdigest()
    assert resp.headers["ETag"].strip('"') == job["sha256"]


async def test_without_bom_the_file_stays_oc4s(client, world, pool, settings):
    await seed(world, pool)
    for query in ("", "?bom=n"):
        job_uuid = await submit(client, world, url=SUBMIT + query)
        await run_jobs(settings)
        assert (await (await download(client, world, job_uuid)).read()).startswith(b"ParticipantId,")
    resp = await client.get(SUBMIT + "?bom=perhaps", headers=world.auth("crc_a"))
    assert await expect(resp, 400) == {
        "message": "errorCode.invalidParameter",
        "params": {"parameter": "bom"},
    }
