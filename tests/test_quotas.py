"""A user may have at most PARTICIPANTS_MAX_ACTIVE_JOBS_PER_USER unfinished jobs; the next submit is
429 tooManyJobs with Retry-After, and other users are not affected."""

from __future__ import annotations

from tests.bulk_files import csv_bytes
from tests.test_extract import SUBMIT, run_jobs, seed_site, submit
from tests.world import SITE_A, STUDY, expect

BULK = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/bulk?async=true"


async def test_active_job_quota_per_user(make_client, world, pool, settings):
    client = await make_client(max_active_jobs_per_user=2)
    await world.standard()
    await seed_site(pool, SITE_A, 2)
    await submit(client, world)
    await submit(client, world)
    for resp in (
        await client.get(SUBMIT, headers=world.auth("crc_a")),
        await client.post(
            BULK,
            data=csv_bytes("ParticipantID", "Q-1"),
            headers={**world.auth("crc_a"), "Content-Type": "text/csv"},
        ),
    ):
        body = await expect(resp, 429)
        assert body["message"] == "errorCode.tooManyJobs" and resp.headers["Retry-After"]
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 2  # nothing was created
    bulk_folder = settings.storage_dir / "bulk"  # core/bulk/summary.py: upload_object_key
    assert not bulk_folder.exists() or not any(bulk_folder.rglob("*"))  # the refused file was never stored
    await submit(client, world, user="inv_a")  # another user has a quota of their own
    await run_jobs(settings)  # finished jobs no longer count
    await submit(client, world)


async def test_concurrent_submits_of_one_user_never_overshoot_the_quota(make_client, world, pool):
    import asyncio

    client = await make_client(max_active_jobs_per_user=5)
    await world.standard()
    answers = await asyncio.gather(*(client.get(SUBMIT, headers=world.auth("crc_a")) for _ in range(30)))
    # Every submit is decided (no deadlock between them, no 500), and exactly the quota got through.
    assert sorted(r.status for r in answers) == [200] * 5 + [429] * 25
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 5
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'extract.submit'") == 5


async def test_a_quota_past_32_bits_is_a_quota_not_a_500(make_client, world):
    """The setting has no upper bound: the quota check takes it whole (bigint), as it took it in Python."""
    client = await make_client(max_active_jobs_per_user=3_000_000_000)
    await world.standard()
    resp = await client.get(SUBMIT, headers=world.auth("crc_a"))
    assert resp.status == 200, await resp.text()


async def test_a_nightly_sync_of_200_sites_fits_the_default_quota(client, world, pool):
    """A CTMS submits one extract per site, all at once, as one user: with the default settings
    every one is accepted (the quota is an abuse guard, not a pace)."""
    import asyncio

    from service.core import directory

    await world.standard()
    sites = [f"S_NIGHT{i:03d}" for i in range(200)]
    async with pool.acquire() as conn:
        await directory.create_user(conn, directory.UserIn(username="ctms", fullName="Nightly CTMS"))
        for site in sites:
            await directory.create_site(conn, STUDY, directory.SiteIn(oid=site, name=site))
            role = directory.RoleIn(studyOid=STUDY, siteOid=site, role="ra")
            await directory.grant_role(conn, "ctms", role)
    url = "/pages/auth/api/clinicaldata/studies/{}/sites/{}/participants/extractPartcipantsInfo"
    answers = await asyncio.gather(
        *(client.get(url.format(STUDY, site), headers=world.auth("ctms")) for site in sites)
    )
    assert [r.status for r in answers] == [200] * 200
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'IN_QUEUE'") == 200
