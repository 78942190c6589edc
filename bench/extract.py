"""Extract benchmark: the real API and a real worker process against the physical floor, in one run.

    python -m bench.extract [--rows 500000] [--big-study 10000000] [--quick]

Measures, on a throw-away database (``participants_bench_extract_<pid>``) and queues of its own:

1. speed: a site with ``--rows`` participants (personal fields encrypted, seeded as the service
   writes them) extracted to the local-folder backend, job time (``started_at`` to
   ``completed_at``) against the floor: the same rows in plain text (table ``plain_floor``) through
   the extract's query as it was before encryption (the SQL formula guard),
   ``COPY (...) TO STDOUT (FORMAT csv, HEADER)`` into a local file over an open asyncpg connection.
   The worker decrypts five fields a row (AES-256-GCM) in Python; target ratio <= 2.0, and the two
   files byte for byte the same;
2. memory: the worker's peak RSS (``VmHWM``) growth over its idle size after extracting 100,000
   and then 1,000,000 rows; target < 64 MB and no growth between the two;
3. latency: a 100-participant site, submit (HTTP) to COMPLETED (seen in Postgres), median of 30;
   target < 150 ms;
4. scale: a 1,000-row site in a study of ``--big-study`` participants over 1,000 sites (those hold
   no personal fields: only the target site's rows are read) against a 1,000-row site in a
   10,000-participant study (median job time of 9 runs each); target ratio <= 1.

Servers as every benchmark finds them (bench/common.py): ``PARTICIPANTS_BENCH_DATABASE_URL`` and
``PARTICIPANTS_BENCH_REDIS_URL``, else the local ones, else embedded.
Prints numbers and ratios; it never fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from bench.common import BENCH_KEK, BENCH_SECRET, RUN_QUEUES, fresh_database, redis_url, service_env, settle
from service.core import db, directory
from service.core.extracts import extract_select
from service.core.protection.fields import PERSONAL
from service.core.protection.kek import LocalKek
from service.core.protection.keyring import Keyring
from service.dev.synthetic import add_participants
from service.settings import Settings
from service.web.app import create_app
from service.web.tokens import mint_token

ROOT = Path(__file__).resolve().parent.parent
STUDY, BIG_STUDY = "S_BENCH", "S_BIG"
USER = "bench_crc"


# The floor's table: the same rows as the participants' extractable ones, personal fields in plain
# text, read by the query the extract ran before encryption (COPY, the SQL formula guard).
PLAIN_FLOOR_DDL = """
CREATE TABLE plain_floor (site_id bigint, subject_key text, status text, participate_status text,
    first_name text, last_name text, email text, phone text, identifier text, access_code text);
CREATE INDEX plain_floor_extract_idx ON plain_floor (site_id, subject_key) WHERE status IN ('available', 'signed');
"""
PLAIN_FLOOR_COLUMNS = ["site_id", "subject_key", "status", "participate_status", *PERSONAL]
FLOOR_SELECT = """
SELECT csv_guard(p.subject_key) AS "ParticipantId",
       csv_guard(p.first_name) AS "First Name",
       csv_guard(p.last_name) AS "Last Name",
       csv_guard(p.email) AS "Email",
       csv_guard_phone(p.phone) AS "Mobile",
       csv_guard(p.identifier) AS "Identifier",
       CASE WHEN true THEN csv_guard(p.access_code) END AS "Access Code",
       CASE WHEN true THEN csv_guard(nullif(p.participate_status, '')) END AS "Participate Status"
FROM plain_floor p
WHERE p.site_id = {site_id} AND p.status IN ('available', 'signed')
ORDER BY p.subject_key"""
SEED_BATCH = 20_000


async def _seed_site(conn: asyncpg.Connection, study_id: int, site_oid: str, n: int) -> int:
    """``n`` participants, encrypted as the service writes them (service/dev/synthetic.py), and the
    same rows in plain text in ``plain_floor``."""
    site_id = await conn.fetchval(
        "INSERT INTO sites (study_id, oid, name) VALUES ($1, $2, $2) RETURNING id", study_id, site_oid
    )
    for start in range(1, n + 1, SEED_BATCH):
        people = [
            {
                "subject_key": f"{site_oid}-{g:08d}",
                "oid": f"SS_{site_id}_{g}",
                "first_name": f"First{g}",
                "last_name": f'Last, "{g}"',
                "email": f"person{g}@example.org",
                "phone": f"+1 555{g}",
                "identifier": f"ID{g}",
            }
            for g in range(start, min(n, start + SEED_BATCH - 1) + 1)
        ]
        await add_participants(conn, study_id, site_id, people)
        await conn.copy_records_to_table(
            "plain_floor",
            columns=PLAIN_FLOOR_COLUMNS,
            records=[
                (site_id, p["subject_key"], "available", "", *(p.get(c) for c in PERSONAL)) for p in people
            ],
        )
    await conn.execute(
        "INSERT INTO role_assignments (user_id, study_id, site_id, role) SELECT id, $1, $2, 'ra' FROM users WHERE username = $3",
        study_id,
        site_id,
        USER,
    )
    return site_id


async def _seed_big_study(conn: asyncpg.Connection, study_id: int, total: int, sites: int) -> None:
    """``total`` participants over ``sites`` sites (one statement for the sites, one for the people).
    Only the extracted site's rows are ever read: these hold no personal fields at all, which keeps
    the seed of millions of rows to one statement."""
    await conn.execute(
        "INSERT INTO sites (study_id, oid, name) SELECT $1, 'S_BIG_' || g, 'Big ' || g FROM generate_series(1, $2) g",
        study_id,
        sites,
    )
    await conn.execute(
        """
        INSERT INTO participants (study_id, site_id, subject_key, oid)
        SELECT $1, s.first_id + (g % $3), 'B-' || lpad(g::text, 9, '0'), 'SS_B' || g
        FROM (SELECT min(id) AS first_id FROM sites WHERE study_id = $1) s, generate_series(1, $2) g
        """,
        study_id,
        total,
        sites,
    )


async def _create_study(conn: asyncpg.Connection, oid: str) -> int:
    await directory.create_study(conn, directory.StudyIn(oid=oid, name=oid))
    return await conn.fetchval("SELECT id FROM studies WHERE oid = $1", oid)


class Bench:
    def __init__(self, settings: Settings, conn: asyncpg.Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.worker: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.base = ""
        self.token = mint_token(settings, USER, 3600)

    def start_worker(self) -> None:
        env = service_env(
            str(self.settings.database_url),
            PARTICIPANTS_STORAGE_PATH=str(self.settings.storage_dir),
            PARTICIPANTS_WORKER_POLL_DELAY=str(self.settings.worker_poll_delay),
            PARTICIPANTS_EXTRACT_JOB_TIMEOUT_SECONDS="600",
            PARTICIPANTS_REDIS_URL=str(self.settings.redis_url),
        )
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--queue", "extract"], cwd=ROOT, env=env
        )

    def rss_kb(self, field: str) -> int:
        assert self.worker is not None
        for line in Path(f"/proc/{self.worker.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(field)

    async def extract(self, study_oid: str, site_oid: str) -> tuple[float, float, asyncpg.Record]:
        """Submit over HTTP, wait for COMPLETED; (submit-to-completed seconds, job seconds, job row)."""
        assert self.http is not None
        url = f"{self.base}/pages/auth/api/clinicaldata/studies/{study_oid}/sites/{site_oid}/participants/extractParticipantsInfo"
        t0 = time.perf_counter()
        async with self.http.post(
            url, headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            job_uuid = (await resp.json())["jobUuid"]
        while True:
            row = await self.conn.fetchrow("SELECT * FROM jobs WHERE uuid = $1", job_uuid)
            assert row is not None
            if row["status"] == "COMPLETED":
                break
            if row["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                raise RuntimeError(f"job ended {row['status']}: {row['error']}")
            if self.worker is not None and self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.worker.returncode}")
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        return elapsed, (row["completed_at"] - row["started_at"]).total_seconds(), row

    async def copy_floor(self, site_id: int, out: Path) -> float:
        """The floor: the extract's query as it was before encryption, over the same rows in plain
        text (``plain_floor``), ``COPY ... TO STDOUT (FORMAT csv, HEADER)`` into a local file over
        one open connection."""
        t0 = time.perf_counter()
        await self.conn.copy_from_query(
            FLOOR_SELECT.format(site_id=int(site_id)), output=str(out), format="csv", header=True
        )
        return time.perf_counter() - t0


async def run(args: argparse.Namespace) -> None:
    dsn = await fresh_database("participants_bench_extract")  # dropped when the script exits
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    settings = Settings(
        database_url=dsn,
        redis_url=redis_url(),
        data_dir=tmp,
        storage_path=tmp / "storage",
        worker_poll_delay=args.poll_delay,
        log_json=False,
        log_level="WARNING",
        jwt_secret=BENCH_SECRET,
        kek=BENCH_KEK,
        extract_queue=RUN_QUEUES["PARTICIPANTS_EXTRACT_QUEUE"],
        default_queue=RUN_QUEUES["PARTICIPANTS_DEFAULT_QUEUE"],
    )
    first = await asyncpg.connect(dsn)
    try:  # the run's data keys, made under the run's KEK as the service would make them
        ring = await Keyring.load(first, LocalKek.from_base64(BENCH_KEK))
    finally:
        await first.close()
    conn = await db.connect(dsn, ring)
    await conn.execute(PLAIN_FLOOR_DDL)
    bench = Bench(settings, conn)
    runner: web.AppRunner | None = None
    try:
        await directory.create_user(conn, directory.UserIn(username=USER, fullName="Bench CRC"))
        study_id = await _create_study(conn, STUDY)
        big_id = await _create_study(conn, BIG_STUDY)

        t = time.perf_counter()
        sizes = {"S_SMALL100": 100, "S_100K": args.sizes[0], "S_MAIN": args.rows, "S_1M": args.sizes[1]}
        site_ids = {oid: await _seed_site(conn, study_id, oid, n) for oid, n in sizes.items()}
        # The 10,000-participant study of the scale comparison: this 1,000-row site and 9,000 others.
        tenk_id = await _create_study(conn, "S_TENK")
        await _seed_site(conn, tenk_id, "S_TENK_1000", 1000)
        await _seed_site(conn, tenk_id, "S_TENK_REST", 9000)
        await _seed_big_study(conn, big_id, args.big_study, 1000)
        await _seed_site(conn, big_id, "S_BIG_TARGET", 1000)
        await settle(conn)
        print(
            f"seeded in {time.perf_counter() - t:.1f} s "
            f"(sites {', '.join(f'{k}={v:,}' for k, v in sizes.items())}; big study {args.big_study:,} over 1,000 sites)"
        )

        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        bench.base = f"http://127.0.0.1:{port}"
        bench.http = aiohttp.ClientSession()
        bench.start_worker()
        for _ in range(3):  # warm up: imports, pools, first plans
            await bench.extract(STUDY, "S_SMALL100")
        idle_kb = bench.rss_kb("VmRSS")

        # 1. speed against the floor, alternating, best of 3 each (the machine is shared)
        ours, floors = [], []
        for _ in range(3):
            floors.append(await bench.copy_floor(site_ids["S_MAIN"], tmp / "floor.csv"))
            _, job_s, row = await bench.extract(STUDY, "S_MAIN")
            ours.append(job_s)
        same = hashlib.sha256((tmp / "floor.csv").read_bytes()).hexdigest() == row["sha256"]
        print(
            f"\n[speed] {args.rows:,} rows, {row['byte_size'] / 1e6:.1f} MB (byte for byte the floor's file: {same})",
            flush=True,
        )
        print(
            f"  COPY floor         best {min(floors):.3f} s  (runs {', '.join(f'{x:.3f}' for x in floors)})",
            flush=True,
        )
        print(
            f"  extract job        best {min(ours):.3f} s  (runs {', '.join(f'{x:.3f}' for x in ours)})",
            flush=True,
        )
        print(f"  ratio job/floor    {min(ours) / min(floors):.2f}x   (target <= 2.0)", flush=True)

        # 2. memory
        await bench.extract(STUDY, "S_100K")
        hwm_100k = bench.rss_kb("VmHWM")
        _, _, row_1m = await bench.extract(STUDY, "S_1M")
        hwm_1m = bench.rss_kb("VmHWM")
        print(f"\n[memory] worker RSS idle {idle_kb / 1024:.1f} MB", flush=True)
        print(
            f"  peak after {args.sizes[0]:,} rows      {hwm_100k / 1024:.1f} MB (+{(hwm_100k - idle_kb) / 1024:.1f} MB)",
            flush=True,
        )
        print(
            f"  peak after {row_1m['row_count']:,} rows  {hwm_1m / 1024:.1f} MB (+{(hwm_1m - idle_kb) / 1024:.1f} MB;"
            f" {(hwm_1m - hwm_100k) / 1024:+.1f} MB over the {args.sizes[0]:,} run)   (target growth < 64 MB, none from 100k to 1M)"
        )

        # 3. latency of a small site
        latencies = [(await bench.extract(STUDY, "S_SMALL100"))[0] for _ in range(args.runs[0])]
        med = statistics.median(latencies)
        print(
            f"\n[latency] 100-participant site, submit to COMPLETED over {len(latencies)} runs: median {med * 1000:.0f} ms,"
            f" p90 {sorted(latencies)[int(len(latencies) * 0.9)] * 1000:.0f} ms, worker poll delay {args.poll_delay * 1000:.0f} ms   (target < 150 ms)"
        )

        # 4. scale: a 1,000-row site in a huge study vs in a 10,000-participant study
        big_times, small_times = [], []
        for _ in range(args.runs[1]):
            big_times.append((await bench.extract(BIG_STUDY, "S_BIG_TARGET"))[1])
            small_times.append((await bench.extract("S_TENK", "S_TENK_1000"))[1])
        b, s = statistics.median(big_times), statistics.median(small_times)
        plan = await conn.fetch(
            "EXPLAIN "
            + extract_select(await conn.fetchval("SELECT id FROM sites WHERE oid = 'S_BIG_TARGET'"))[0]
        )
        uses_index = any("participants_site_extract_idx" in r[0] for r in plan)
        print(
            f"\n[scale] 1,000-row site: in a {args.big_study:,}-participant study (1,000 sites) {b * 1000:.1f} ms,"
            f" in a 10,000-participant study {s * 1000:.1f} ms: ratio {b / s:.2f}x (target <= 1);"
            f" plan uses participants_site_extract_idx: {uses_index}"
        )
    finally:
        if bench.worker is not None:
            bench.worker.terminate()
            try:
                bench.worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                bench.worker.kill()
                bench.worker.wait(timeout=10)
        if bench.http is not None:
            await bench.http.close()
        if runner is not None:
            await runner.cleanup()
        await conn.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.extract",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=500_000, help="participants at the speed test's site")
    parser.add_argument(
        "--big-study",
        type=int,
        default=2_000_000,
        help="participants in the big study (10,000,000 is the target size; the default fits a 2-core machine in about a minute)",
    )
    parser.add_argument(
        "--poll-delay", type=float, default=0.02, help="arq poll delay of the worker, seconds"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a quick look")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args(argv)
    args.sizes = (100_000, 1_000_000 if not args.quick else 300_000)
    args.runs = (30, 9)
    if args.quick:
        args.rows, args.big_study = min(args.rows, 50_000), min(args.big_study, 100_000)
    if args.smoke:
        args.rows, args.big_study, args.sizes, args.runs = 2_000, 20_000, (1_000, 3_000), (5, 2)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
