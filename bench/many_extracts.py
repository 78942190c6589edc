"""Many extracts at once: N sites of R participants, one extract per site submitted at the same
moment, against the floor measured in the same run.

    python -m bench.many_extracts [--sites 200] [--rows 1000] [--workers 1,2] [--repeat 1]

The shape of a nightly CTMS sync. For each worker count, ``participants serve`` and that many
``participants worker --queue extract`` processes run with DEFAULT settings (nothing tuned); all N
extracts are POSTed concurrently and the clock stops when Postgres shows every job ``COMPLETED``.
The floor: the same N ``COPY (the worker's query) TO STDOUT`` one after another over one
connection, each into its own file. Target with one worker process: <= 1.5x.

Per job it also prints where the time went: queue wait (created to started) and run time
(started to completed), as medians. Prints numbers and ratios; it never fails on timing.
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

from bench.common import (
    BENCH_SECRET,
    fresh_database,
    keyed_connect,
    running,
    running_service,
    service_env,
    settle,
)
from service.core import directory
from service.core.extracts import extract_select
from service.dev.synthetic import add_participants
from service.settings import Settings
from service.web.tokens import mint_token

STUDY, USER = "S_MANY", "bench_many"
DATABASE = "participants_bench_many"


async def seed(dsn: str, sites: int, rows: int) -> list[tuple[str, int]]:
    """``sites`` sites of ``rows`` participants each (three statements); the user a CRC at each."""
    conn = await keyed_connect(dsn)
    try:
        await directory.create_user(conn, directory.UserIn(username=USER, fullName="Bench Many"))
        await directory.create_study(conn, directory.StudyIn(oid=STUDY, name=STUDY))
        study_id = await conn.fetchval("SELECT id FROM studies WHERE oid = $1", STUDY)
        await conn.execute(
            "INSERT INTO sites (study_id, oid, name) SELECT $1, 'S_M' || g, 'Site ' || g FROM generate_series(1, $2) g",
            study_id,
            sites,
        )
        for site_id, site_oid in await conn.fetch("SELECT id, oid FROM sites WHERE study_id = $1", study_id):
            await add_participants(conn, study_id, site_id, (
                {"subject_key": f"{site_oid}-{g:06d}", "first_name": f"First{g}", "last_name": f'Last, "{g}"',
                 "email": f"p{g}@example.org", "phone": f"+1 555{g}"} for g in range(1, rows + 1)
            ))  # fmt: skip
        await conn.execute(
            "INSERT INTO role_assignments (user_id, study_id, site_id, role)"
            " SELECT u.id, $1, s.id, 'ra' FROM users u, sites s WHERE u.username = $2 AND s.study_id = $1",
            study_id,
            USER,
        )
        await settle(conn)
        return [
            (r["oid"], r["id"])
            for r in await conn.fetch("SELECT oid, id FROM sites WHERE study_id = $1 ORDER BY id", study_id)
        ]
    finally:
        await conn.close()


async def floor(dsn: str, sites: list[tuple[str, int]], folder: Path) -> float:
    """The same N COPYs of the worker's query (the rows it reads, ciphertexts as they are stored),
    one after another over one connection, each into its own file."""
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        for oid, site_id in sites:
            await conn.copy_from_query(
                extract_select(site_id)[0], output=str(folder / f"{oid}.csv"), format="csv", header=True
            )
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def until_completed(conn: asyncpg.Connection, uuids: list[str], poll: float = 0.005) -> None:
    """Wait until Postgres shows every job of ``uuids`` COMPLETED (any other final status raises)."""
    while True:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS done,"
            " count(*) FILTER (WHERE status NOT IN ('COMPLETED', 'IN_QUEUE', 'IN_PROGRESS')) AS bad"
            " FROM jobs WHERE uuid = ANY($1::uuid[])",
            uuids,
        )
        if row["bad"]:
            raise RuntimeError(f"{row['bad']} jobs did not complete")
        if row["done"] == len(uuids):
            return
        await asyncio.sleep(poll)


async def submit_all(
    base: str, dsn: str, sites: list[tuple[str, int]], token: str
) -> tuple[float, dict[str, float]]:
    """POST every extract at once; wait until all are COMPLETED. (seconds, per-job medians)."""
    conn = await asyncpg.connect(dsn)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=64)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:

            async def submit(oid: str) -> str:
                url = f"{base}/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{oid}/participants/extractParticipantsInfo"
                async with http.post(url, headers=headers) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"submit answered {resp.status}")
                    return str((await resp.json())["jobUuid"])

            t0 = time.perf_counter()
            uuids = await asyncio.gather(*(submit(oid) for oid, _ in sites))
            submitted = time.perf_counter() - t0
            await until_completed(conn, uuids)
            elapsed = time.perf_counter() - t0
        rows = await conn.fetch(
            "SELECT extract(epoch FROM started_at - created_at) AS wait, extract(epoch FROM completed_at - started_at) AS run,"
            " attempts FROM jobs WHERE uuid = ANY($1::uuid[])",
            uuids,
        )
        return elapsed, {
            "wait": statistics.median(float(r["wait"]) for r in rows),
            "run": statistics.median(float(r["run"]) for r in rows),
            "attempts": max(r["attempts"] for r in rows),
            "submitted": submitted,
        }
    finally:
        await conn.close()


def one_run(
    dsn: str,
    sites: list[tuple[str, int]],
    workers: int,
    token: str,
    folder: Path,
    settings_env: dict[str, str],
) -> tuple[float, float, dict[str, float]]:
    storage = folder / f"storage-{workers}"
    env = service_env(dsn, PARTICIPANTS_STORAGE_PATH=str(storage), **settings_env)
    # One user submits every site's extract at once, with the default settings: the per-user quota
    # (1,000 unfinished jobs) is an abuse guard that a nightly sync fits in.
    with running_service(dsn, PARTICIPANTS_STORAGE_PATH=str(storage)) as (base, _):
        procs = [running(["-m", "service.cli", "worker", "--queue", "extract"], env) for _ in range(workers)]
        for p in procs:
            p.__enter__()
        try:
            # Warm up: imports, pools, plans; the first real run is then not paying for them.
            asyncio.run(submit_all(base, dsn, sites[:2], token))
            floor_s = asyncio.run(floor(dsn, sites, folder))
            ours, detail = asyncio.run(submit_all(base, dsn, sites, token))
        finally:
            for p in reversed(procs):
                p.__exit__(None, None, None)
    return ours, floor_s, detail


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.many_extracts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1000, help="participants per site")
    parser.add_argument("--workers", default="1,2", help="worker process counts to run, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting away from its default, e.g. --set EXTRACT_MAX_JOBS=8 (for comparisons)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sites, args.rows, args.workers, args.repeat = 5, 20, "1", 1

    settings_env = {"PARTICIPANTS_" + k.upper(): v for k, v in (item.split("=", 1) for item in args.set)}
    dsn = asyncio.run(fresh_database(DATABASE))
    sites = asyncio.run(seed(dsn, args.sites, args.rows))
    token = mint_token(Settings(jwt_secret=BENCH_SECRET), USER, 3600)
    folder = Path(tempfile.mkdtemp(prefix="bench-many-"))
    print(
        f"many_extracts: {args.sites} sites x {args.rows:,} rows, all submitted at once, "
        f"{'settings ' + ' '.join(args.set) if args.set else 'default settings'}"
    )
    for workers in (int(w) for w in args.workers.split(",")):
        for _ in range(args.repeat):
            ours, floor_s, d = one_run(dsn, sites, workers, token, folder, settings_env)
            print(
                f"  {workers} worker process(es): all COMPLETED in {ours:.3f} s ({args.sites / ours:.0f} jobs/s);"
                f" floor ({args.sites} COPYs over one connection) {floor_s:.3f} s;"
                f" ratio {ours / floor_s:.2f}x (target <= 1.5 with one worker);"
                f" all submitted after {d['submitted']:.3f} s; per job median wait {d['wait'] * 1000:.0f} ms, run {d['run'] * 1000:.1f} ms, max attempts {d['attempts']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
