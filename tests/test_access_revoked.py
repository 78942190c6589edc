"""Access ends when the role that granted it ends: a job's owner whose right to extract at the job's
site is revoked sees neither the job nor its file (404 invalidUuid, as for anyone else), and an
extract submitted before the revocation does not run after it."""

from __future__ import annotations

from tests.test_extract import JOBS, download, run_jobs, seed_site, submit
from tests.world import SITE_A, STUDY, expect


async def _revoke(client, world, username: str, role: str = "ra") -> None:
    resp = await client.delete(
        f"/admin/api/users/{username}/roles",
        json={"studyOid": STUDY, "siteOid": SITE_A, "role": role},
        headers=world.auth("admin"),
    )
    assert resp.status == 204, await resp.text()


async def test_revoked_role_ends_access_to_an_extract_made_before(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 3)
    job = await submit(client, world)
    await run_jobs(settings)
    assert (await download(client, world, job)).status == 200
    await _revoke(client, world, "crc_a")
    for resp in (
        await download(client, world, job),
        await client.get(f"{JOBS}/{job}", headers=world.auth("crc_a")),
    ):
        body = await expect(resp, 404)
        assert body["message"] == "errorCode.invalidUuid"
    # The investigator at the same site never owned the job: still nothing to see either.
    assert (await download(client, world, job, user="inv_a")).status == 404


async def test_extract_submitted_before_revocation_does_not_run(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 3)
    job = await submit(client, world)
    await _revoke(client, world, "crc_a")
    await run_jobs(settings)
    row = await pool.fetchrow("SELECT status, error, byte_size FROM jobs WHERE uuid = $1::uuid", job)
    assert (row["status"], row["error"], row["byte_size"]) == (
        "FAILED",
        "errorCode.noSufficientPrivileges",
        None,
    )
    assert (await download(client, world, job)).status == 404


async def test_a_kept_role_keeps_access(client, world, pool, settings):
    """The re-check does not take away what is still granted (another role at the site stays)."""
    await world.standard()
    await seed_site(pool, SITE_A, 2)
    job = await submit(client, world, user="inv_a")
    await run_jobs(settings)
    await _revoke(client, world, "crc_a")  # someone else's role
    assert (await download(client, world, job, user="inv_a")).status == 200
