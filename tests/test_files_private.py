"""Extract files on the local backend are readable by the service alone (0600 files, 0700
folders), whatever umask the process started with."""

from __future__ import annotations

import os
import stat

from tests.test_extract import download, run_jobs, seed_site, submit
from tests.world import SITE_A


async def test_local_files_and_folders_are_private_whatever_the_umask(make_client, world, pool, settings):
    old = os.umask(0o002)  # a permissive umask, as a shell might leave it
    try:
        client = await make_client()
        await world.standard()
        await seed_site(pool, SITE_A, 3)
        job = await submit(client, world)
        await run_jobs(settings)
        assert (await download(client, world, job)).status == 200
    finally:
        os.umask(old)
    root = settings.storage_dir
    files = [p for p in root.rglob("*") if p.is_file()]
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    assert files, "the extract wrote no file"
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o600"}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {"0o700"}
