"""What each unit of work costs, in CPU seconds, bytes and Redis commands: the figures docs/capacity.md
plans from.

    python -m bench.costs [--adds 4000] [--rows 200000] [--sites 200] [--site-rows 2000] [--smoke]

Runs on servers of its own, so nothing else on the machine is counted: a private Postgres cluster
(tests/engines.py's, one primary, no standby) and a private ``redis-server``. ``participants serve``
(one process) and one ``participants worker --queue extract`` run against them. CPU is user + system
time from /proc, summed over each process tree (the API, the worker, every Postgres backend and
auxiliary process); Redis commands are ``INFO stats`` ``total_commands_processed``.

1. adds: ``--adds`` add-participant requests at 32 concurrent connections (a Python client in this
   process, not counted): API CPU, Postgres CPU and Redis commands per add;
2. a large extract: one site of ``--rows`` participants, three extracts one after another: worker
   CPU, Postgres CPU and bytes per row;
3. a nightly sync: ``--sites`` sites of ``--site-rows`` participants, one extract each, all submitted
   at once: per job worker CPU, Postgres CPU, Redis commands, and the wall time;
4. idle: a worker with nothing to do, for 5 s: Redis commands per second (its polling).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench.common import BENCH_SECRET, keyed_connect, running, running_service, service_env, settle
from bench.many_extracts import seed as seed_sites
from service.core import directory
from service.core.db import migrate_dsn
from service.dev.synthetic import add_participants
from service.settings import Settings
from service.web.tokens import mint_token
from tests.engines import PgPair, free_port, pg_available, redis_server_binary, wait_port

STUDY, SITE, USER = "S_COST", "S_COST_1", "bench_cost"
CONNECTIONS = 32
TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(root_pid: int) -> float:
    """User + system CPU seconds of ``root_pid`` and every process descended from it (live ones)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        pid, ppid = int(entry.name), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICKS
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


class CommandsSent:
    """Commands clients sent to Redis (each one round trip; a pipeline's commands count one each),
    read with MONITOR, which also shows the commands Lua scripts run (``client_type`` "lua"): those
    are left out, as ``total_commands_processed`` cannot."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        async with self.redis.monitor() as monitor:
            async for command in monitor.listen():
                if command["client_type"] != "lua" and not command["command"].upper().startswith("INFO"):
                    self.sent += 1

    async def __aenter__(self) -> CommandsSent:
        self.task = asyncio.create_task(self._watch())
        await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.2)
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class Meter:
    """CPU of the API, the worker and Postgres, and Redis commands, between two readings."""

    def __init__(self, pg_pid: int, redis: Redis, api_pid: int, worker_pid: int | None = None) -> None:
        self.pids = {"api": api_pid, "postgres": pg_pid}
        if worker_pid is not None:
            self.pids["worker"] = worker_pid
        self.redis = redis

    async def read(self) -> dict[str, float]:
        info = await self.redis.info("stats")
        reading = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        reading["redis_commands"] = float(info["total_commands_processed"])
        reading["wall"] = time.monotonic()
        return reading

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: after[k] - before[k] for k in before}


async def seed_user(dsn: str, rows: int) -> None:
    conn = await keyed_connect(dsn)
    try:
        await directory.create_study(conn, directory.StudyIn(oid=STUDY, name="Cost", participateEnabled=True))
        await directory.create_site(conn, STUDY, directory.SiteIn(oid=SITE, name="Cost site"))
        await directory.create_user(conn, directory.UserIn(username=USER, fullName="Bench Cost"))
        await directory.grant_role(conn, USER, directory.RoleIn(studyOid=STUDY, siteOid=SITE, role="ra"))
        ids = await conn.fetchrow("SELECT study_id, id FROM sites WHERE oid = $1", SITE)
        await add_participants(conn, ids["study_id"], ids["id"], (
            {"subject_key": f"R{g:07d}", "first_name": f"First{g}", "last_name": f'Last, "{g}"',
             "email": f"p{g}@example.org", "phone": f"+1 555{g}"} for g in range(1, rows + 1)
        ))  # fmt: skip
        await settle(conn)
    finally:
        await conn.close()


async def add_load(base: str, token: str, adds: int) -> None:
    url = f"{base}/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE}/participants"
    headers = {"Authorization": f"Bearer {token}"}
    counter = iter(range(adds))

    async def client(session: aiohttp.ClientSession) -> None:
        for n in counter:
            body = {"subjectKey": f"A{n:07d}", "firstName": "Ann", "lastName": "O'Neil",
                    "emailAddress": "ann@example.org", "phoneNumber": "+1 5550100"}  # fmt: skip
            async with session.post(url, json=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
        await asyncio.gather(*(client(session) for _ in range(CONNECTIONS)))


async def extracts(base: str, token: str, site_oids: list[str], dsn: str, study: str) -> dict[str, float]:
    """Submit one extract per site (all at once); wait until all are COMPLETED; rows and bytes."""
    headers = {"Authorization": f"Bearer {token}"}
    conn = await asyncpg.connect(dsn)
    since = await conn.fetchval("SELECT clock_timestamp()")
    await conn.close()
    async with aiohttp.ClientSession() as session:

        async def one(site: str) -> None:
            url = f"{base}/pages/auth/api/clinicaldata/studies/{study}/sites/{site}/participants/extractParticipantsInfo"
            async with session.post(url, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"submit: {resp.status} {await resp.text()}")

        await asyncio.gather(*(one(s) for s in site_oids))
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS done, count(*) AS n,"
                " coalesce(sum(row_count), 0) AS rows, coalesce(sum(byte_size), 0) AS bytes FROM jobs"
                " WHERE created_at >= $1",
                since,
            )
            if row["done"] == row["n"]:
                return {"rows": float(row["rows"]), "bytes": float(row["bytes"]), "jobs": float(row["n"])}
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def postmaster_pid(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


def line(label: str, value: float, unit: str) -> None:
    print(f"  {label:<52} {value:>12.3f} {unit}")


async def measure(args: argparse.Namespace, pair: PgPair, redis_url: str, pg_pid: int) -> None:
    dsn = pair.url("participants", pair.primary_port)
    admin = await asyncpg.connect(pair.url("postgres", pair.primary_port))
    await admin.execute("CREATE DATABASE participants")
    await admin.close()
    await migrate_dsn(dsn)
    await seed_user(dsn, args.rows)
    sites = await seed_sites(dsn, args.sites, args.site_rows)
    conn = await asyncpg.connect(dsn)
    size = await conn.fetchrow(
        "SELECT pg_table_size('participants') AS heap, pg_indexes_size('participants') AS indexes,"
        " (SELECT count(*) FROM participants) AS n"
    )
    await conn.close()
    print(f"participants table: {size['n']} rows")
    line("heap bytes per participant", size["heap"] / size["n"], "B")
    line("index bytes per participant", size["indexes"] / size["n"], "B")
    token = mint_token(Settings(jwt_secret=BENCH_SECRET), USER, 3600)
    many_token = mint_token(Settings(jwt_secret=BENCH_SECRET), "bench_many", 3600)
    redis = Redis.from_url(redis_url)
    env = {"PARTICIPANTS_REDIS_URL": redis_url, "PARTICIPANTS_STORAGE_PATH": str(pair.root / "storage")}
    with running_service(dsn, **env) as (base, api):
        await add_load(base, token, min(200, args.adds))  # warm-up: imports, caches, pool
        meter = Meter(pg_pid, redis, api.pid)
        before = await meter.read()
        await add_load(base, token, args.adds)
        d = Meter.delta(before, await meter.read())
        print(f"adds: {args.adds} at {CONNECTIONS} connections, {args.adds / d['wall']:.0f}/s wall")
        line("API CPU per add", d["api"] / args.adds * 1000, "ms")
        line("Postgres CPU per add", d["postgres"] / args.adds * 1000, "ms")
        line("Redis commands per add", d["redis_commands"] / args.adds, "")

        worker_env = service_env(dsn, **env)
        with running(["-m", "service.cli", "worker", "--queue", "extract"], worker_env) as worker:
            meter = Meter(pg_pid, redis, api.pid, worker.pid)
            await asyncio.sleep(3)  # started, polling
            before = await meter.read()
            await asyncio.sleep(5)
            d = Meter.delta(before, await meter.read())
            print("idle worker (polling):")
            polling = d["redis_commands"] / d["wall"]
            line("Redis commands per second", polling, "/s")
            line("worker CPU per second", d["worker"] / d["wall"], "s/s")

            await extracts(base, token, [SITE], dsn, STUDY)  # warm-up
            before = await meter.read()
            totals = {"rows": 0.0, "bytes": 0.0}
            for _ in range(3):
                got = await extracts(base, token, [SITE], dsn, STUDY)
                totals["rows"] += got["rows"]
                totals["bytes"] += got["bytes"]
            d = Meter.delta(before, await meter.read())
            print(f"large extract: 3 x {args.rows} rows, {totals['rows'] / d['wall']:.0f} rows/s wall")
            line("worker CPU per 1,000 rows", d["worker"] / totals["rows"] * 1e6, "ms")
            line("Postgres CPU per 1,000 rows", d["postgres"] / totals["rows"] * 1e6, "ms")
            line("bytes per row", totals["bytes"] / totals["rows"], "B")

            before = await meter.read()
            async with CommandsSent(Redis.from_url(redis_url)) as sent:
                got = await extracts(base, many_token, [oid for oid, _ in sites], dsn, "S_MANY")
                d = Meter.delta(before, await meter.read())
            jobs = got["jobs"]
            print(
                f"nightly-sync shape: {int(jobs)} extracts of {args.site_rows} rows at once, {d['wall']:.2f} s wall"
            )
            line("worker CPU per job", d["worker"] / jobs * 1000, "ms")
            line("Postgres CPU per job", d["postgres"] / jobs * 1000, "ms")
            line("API CPU per submit", d["api"] / jobs * 1000, "ms")
            line("Redis commands per job (submit to done, API and worker)", d["redis_commands"] / jobs, "")
            line("  of which the worker's polling meanwhile", polling * d["wall"] / jobs, "")
            line("Redis commands clients sent per job (a script counts once)", sent.sent / jobs, "")
            line("jobs per second, one worker", jobs / d["wall"], "/s")
    await redis.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adds", type=int, default=4000)
    parser.add_argument("--rows", type=int, default=200_000, help="participants at the large extract's site")
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--site-rows", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.adds, args.rows, args.sites, args.site_rows = 100, 2000, 5, 100
    if (reason := pg_available()) or not (binary := redis_server_binary()):
        print(f"costs: skipped ({reason or 'no redis-server'})")
        return
    print(f"costs: private Postgres ({pg_available() or 'ok'}), private Redis, {os.cpu_count()} cores")
    pair = PgPair()
    port = free_port()
    folder = pair.root / "redis"
    redis_proc = None
    try:
        pair.start(standby=False)
        folder.mkdir()
        redis_proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(port)
        asyncio.run(measure(args, pair, f"redis://127.0.0.1:{port}/0", postmaster_pid(pair.primary_dir)))
    finally:
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        pair.stop()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
