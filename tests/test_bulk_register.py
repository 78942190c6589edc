"""Bulk upload with OC4's ``register=y``: every added participant registered with its own code,
synchronously and as a job; refused as a whole when Participate is off; a drawn code that is
already taken is drawn again, never reported as a taken ID."""

from __future__ import annotations

import pytest

from service.core import participant_ids
from service.core.bulk import staging
from service.core.participant_ids import ACCESS_CODE_ALPHABET, ACCESS_CODE_LENGTH, new_access_codes
from tests.bulk_files import SITE_URL, csv_bytes, upload
from tests.people import everyone
from tests.test_bulk_async import job_status, submit
from tests.test_webhooks_support import run_default_worker
from tests.world import expect

FILE = csv_bytes("ParticipantID,FirstName,EmailAddress", "R-1,Ann,ann@example.org", "R-2,Bo,", "<bad>,x,")


async def registered(pool) -> dict[str, tuple[str | None, str]]:
    return {r["subject_key"]: (r["access_code"], r["participate_status"]) for r in await everyone(pool)}


def check_codes(found: dict[str, tuple[str | None, str]], keys: list[str]) -> None:
    assert sorted(found) == keys
    codes = [code for code, _ in found.values()]
    assert all(
        code and len(code) == ACCESS_CODE_LENGTH and set(code) <= set(ACCESS_CODE_ALPHABET) for code in codes
    )
    assert len(set(codes)) == len(codes)
    assert {status for _, status in found.values()} == {"CREATED"}


async def test_sync_upload_registers_every_added_participant(client, world, pool):
    await world.standard()
    body = await expect(await upload(client, world.token("crc_a"), FILE, url=SITE_URL + "?register=y"), 200)
    assert body["uploadCount"] == 2 and body["failureCount"] == 1
    check_codes(await registered(pool), ["R-1", "R-2"])
    audit = await pool.fetch("SELECT details FROM audit_log WHERE action = 'participant.create'")
    assert [a["details"]["registered"] for a in audit] == [True, True]


async def test_async_upload_registers_too(client, world, pool, settings):
    await world.standard()
    resp = await upload(client, world.token("crc_a"), FILE, url=SITE_URL + "?register=y&async=y")
    job_uuid = (await expect(resp, 200)).removeprefix("job uuid: ")
    await run_default_worker(settings)
    assert (await job_status(client, world, job_uuid))["status"] == "COMPLETED"
    check_codes(await registered(pool), ["R-1", "R-2"])


async def test_without_register_nobody_is_registered(client, world, pool):
    await world.standard()
    await submit(client, world, FILE)  # async, register absent
    await expect(await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "N-1")), 200)
    assert (await registered(pool))["N-1"] == (None, "")


@pytest.mark.parametrize("query", ["?register=y", "?register=y&async=y"])
async def test_participate_off_refuses_the_whole_file(client, world, pool, query):
    await world.standard(participateEnabled=False)
    body = await expect(await upload(client, world.token("crc_a"), FILE, url=SITE_URL + query), 409)
    assert body["message"] == "errorCode.participateNotEnabled" and body["uploadCount"] == 0
    assert await pool.fetchval("SELECT count(*) FROM participants") == 0
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_bad_register_value(client, world):
    await world.standard()
    body = await expect(
        await upload(client, world.token("crc_a"), FILE, url=SITE_URL + "?register=maybe"), 400
    )
    assert body["message"] == "errorCode.invalidRegisterParameter"


async def test_a_code_drawn_twice_is_drawn_again(client, world, pool, monkeypatch):
    """The first draw gives every row a code some participant already holds: the rows are inserted
    with the next draw, and no row is reported as a taken ID."""
    await world.standard()
    await expect(await upload(client, world.token("crc_a"), csv_bytes("ParticipantID", "OLD-1"),
                              url=SITE_URL + "?register=y"), 200)  # fmt: skip
    taken = (await registered(pool))["OLD-1"][0]
    draws: list[int] = []

    def draw(count: int) -> list[str]:
        draws.append(count)
        return [taken] * count if len(draws) == 1 else new_access_codes(count)

    monkeypatch.setattr(staging, "new_access_codes", draw)
    body = await expect(await upload(client, world.token("crc_a"), FILE, url=SITE_URL + "?register=y"), 200)
    assert body["uploadCount"] == 2 and [f["subjectKey"] for f in body["failedParticipants"]] == ["<bad>"]
    assert len(draws) == 2
    check_codes({k: v for k, v in (await registered(pool)).items() if k != "OLD-1"}, ["R-1", "R-2"])


def test_batch_codes_use_the_whole_alphabet_evenly():
    codes = participant_ids.new_access_codes(20_000)
    assert len(codes) == 20_000 and all(len(c) == ACCESS_CODE_LENGTH for c in codes)
    chars = "".join(codes)
    counts = [chars.count(c) for c in ACCESS_CODE_ALPHABET]
    expected = len(chars) / len(ACCESS_CODE_ALPHABET)  # 3,333 each
    assert min(counts) > expected * 0.9 and max(counts) < expected * 1.1
