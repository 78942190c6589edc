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


async def test_the_job_list_leaves_out_jobs_whose_right_has_ended(client, world, pool, settings):
    await world.standard()
    await seed_site(pool, SITE_A, 2)
    job = await submit(client, world)

    async def listed() -> list[str]:
        body = await expect(await client.get(JOBS, headers=world.auth("crc_a")), 200)
        return [j["jobUuid"] for j in body["jobs"]]

    assert job in await listed()
    await _revoke(client, world, "crc_a")
    assert job not in await listed()


async def test_the_sql_right_agrees_with_authorize(world, pool):
    """The SQL condition that decides who sees a job (list, status, download, the extract's start)
    agrees with the API's rule (roles.authorize) for every role held at the study, at the job's site
    or at another site, on both job types and both levels."""
    from service.core.errors import ApiError
    from service.core.jobs import lifecycle, model, rights, store
    from service.core.roles import ALL_ROLES, authorize, load_scope

    await world.standard()
    ids = dict(await pool.fetch("SELECT oid, id FROM sites"))
    study_id = await pool.fetchval("SELECT id FROM studies")
    cases = 0
    for role in sorted(ALL_ROLES):
        for held_at in (None, SITE_A, "S_TEXAS"):
            username = f"u_{role}_{held_at or 'study'}".lower().replace("(", "").replace(")", "")
            await world.user(username, [(held_at, role)])
            user_id = await pool.fetchval("SELECT id FROM users WHERE username = $1", username)
            for job_type in (model.EXTRACT_PARTICIPANTS, model.BULK_ADD_PARTICIPANTS):
                for site in (ids[SITE_A], None):
                    if job_type == model.EXTRACT_PARTICIPANTS and site is None:
                        continue  # an extract is always of one site
                    async with pool.acquire() as conn:
                        row = await lifecycle.create_job(
                            conn,
                            model.NewJob(
                                job_type=job_type, study_id=study_id, site_id=site, owner_id=user_id
                            ),
                        )
                        job = await conn.fetchrow(store.JOB_SELECT + " WHERE j.uuid = $1", row["uuid"])
                        scope = await load_scope(conn, username, STUDY, SITE_A if site else None)
                        try:
                            authorize(scope, rights.RIGHT_FOR_TYPE[job_type])
                            allowed = True
                        except ApiError:
                            allowed = False
                        assert job["owner_holds_right"] is allowed, (role, held_at, job_type, site)
                    cases += 1
    assert cases == len(ALL_ROLES) * 3 * 3
