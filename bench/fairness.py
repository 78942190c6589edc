"""One user's backlog against another user's one job: fair slots across owners.

    python -m bench.fairness [--sites 500] [--rows 1000]

User A (a CTMS) submits one extract for each of N sites at once; the moment those are accepted,
user B submits one extract of their own site. With DEFAULT settings and one
``participants worker --queue extract``, it prints:

- B's time from submit to COMPLETED, against B's time on the idle service measured in the same
  run (the median of three). Target <= 3x: B waits for a slot, not for A's backlog.
- A's total (all N COMPLETED) against the floor: the same N ``COPY ... TO STDOUT`` one after another
  over one connection (bench/many_extracts.py). Target <= 1.5x, as for many extracts.

Prints numbers and ratios; it never fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg

from bench.common import BENCH_SECRET, fresh_database, running, running_service, service_env
from bench.many_extracts import STUDY, USER, floor, seed, until_completed
from service.core import directory
from service.settings import Settings
from service.web.tokens import mint_token

OTHER_USER = "bench_fair_b"
DATABASE = "participants_bench_fair"


async def add_other_user(dsn: str, site_oid: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await directory.create_user(conn, directory.UserIn(username=OTHER_USER, fullName="Bench B"))
        role = directory.RoleIn(studyOid=STUDY, siteOid=site_oid, role="ra")
        await directory.grant_role(conn, OTHER_USER, role)
    finally:
        await conn.close()


def _url(base: str, site_oid: str) -> str:
    return f"{base}/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{site_oid}/participants/extractParticipantsInfo"


async def _submit(http: aiohttp.ClientSession, url: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with http.post(url, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"submit answered {resp.status}")
        return str((await resp.json())["jobUuid"])


async def measure(base: str, dsn: str, sites: list[tuple[str, int]], b_site: str) -> dict[str, float]:
    token_a = mint_token(Settings(jwt_secret=BENCH_SECRET), USER, 3600)
    token_b = mint_token(Settings(jwt_secret=BENCH_SECRET), OTHER_USER, 3600)
    conn = await asyncpg.connect(dsn)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
            idle = []
            for _ in range(4):  # the first warms the worker up; the median of the next three counts
                t0 = time.perf_counter()
                await until_completed(conn, [await _submit(http, _url(base, b_site), token_b)], poll=0.002)
                idle.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            backlog = await asyncio.gather(*(_submit(http, _url(base, oid), token_a) for oid, _ in sites))
            tb = time.perf_counter()
            b_job = await _submit(http, _url(base, b_site), token_b)
            await until_completed(conn, [b_job], poll=0.002)
            b_loaded = time.perf_counter() - tb
            await until_completed(conn, backlog)
            a_total = time.perf_counter() - t0
        return {"idle": statistics.median(idle[1:]), "loaded": b_loaded, "a_total": a_total}
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fairness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sites", type=int, default=500, help="user A's extracts (one site each)")
    parser.add_argument(
        "--rows", type=int, default=1000, help="participants per site (small: a COPY of ~10 ms)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sites, args.rows = 20, 10

    dsn = asyncio.run(fresh_database(DATABASE))
    sites = asyncio.run(seed(dsn, args.sites + 1, args.rows))
    b_site, a_sites = sites[0][0], sites[1:]
    asyncio.run(add_other_user(dsn, b_site))
    folder = Path(tempfile.mkdtemp(prefix="bench-fair-"))
    print(f"fairness: user A submits {len(a_sites)} extracts of {args.rows:,} rows at once, then user B one")
    storage = folder / "storage"
    env = service_env(dsn, PARTICIPANTS_STORAGE_PATH=str(storage))
    with (
        running_service(dsn, PARTICIPANTS_STORAGE_PATH=str(storage)) as (base, _),
        running(["-m", "service.cli", "worker", "--queue", "extract"], env),
    ):
        floor_s = asyncio.run(floor(dsn, a_sites, folder))
        m = asyncio.run(measure(base, dsn, a_sites, b_site))
    print(
        f"  user B behind A's backlog: {m['loaded'] * 1000:.0f} ms against {m['idle'] * 1000:.0f} ms idle,"
        f" ratio {m['loaded'] / m['idle']:.2f}x (target <= 3)",
        flush=True,
    )
    print(
        f"  user A's {len(a_sites)} extracts: {m['a_total']:.3f} s against the floor {floor_s:.3f} s"
        f" ({len(a_sites)} COPYs over one connection), ratio {m['a_total'] / floor_s:.2f}x (target <= 1.5)",
        flush=True,
    )


if __name__ == "__main__":
    main()
