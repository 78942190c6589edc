"""Add-participant throughput and latency at 32 concurrent connections, against its true floor
measured in the same run on the same machine: Postgres executing exactly the endpoint's statements.

    python -m bench.add_participant [--seconds 10] [--processes 1,2] [--smoke]

The floor is an asyncpg loop at the same concurrency (32 connections, each a client in a loop)
running the very statement texts the endpoint runs, imported from the service (the scope query,
then the insert of the participant with its audit row in one statement, durable commit). The
endpoint adds HTTP, the token check, validation and the JSON answer on top; the ratio says what
that costs. Targets: ratio >= 0.80 with p99 < 50 ms; and, against the bare aiohttp endpoint running
the same SQL in the same run (bench/bare_endpoint.py, the ceiling of any Python endpoint on the
machine), >= 0.90x with one API process. The API is measured with each ``--processes`` count
(``participants serve --processes N``).

Load comes from ``wrk`` when installed (apt-get install wrk), else from a Python client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson

from bench.common import BENCH_SECRET, fresh_database, running, running_service, service_env
from service.core import directory
from service.core.db import create_pool
from service.core.participants import CONTACT_COLUMNS, INSERT_PARTICIPANT_WITH_AUDIT
from service.core.roles import SCOPE_SQL
from service.dev.embedded import free_port
from service.settings import Settings
from service.web.tokens import mint_token

STUDY, SITE = "S_BENCH", "S_BENCH_1"
PATH = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE}/participants"
CONNECTIONS = 32

WRK_SCRIPT = r"""
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
function init(args)
  n = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
end
function request()
  n = n + 1
  local body = string.format('{"subjectKey":"%s%d-%d","firstName":"Ann","lastName":"O\'Neil","emailAddress":"ann@example.org","phoneNumber":"+1 5550100"}', args_prefix or "W", tid, n)
  return wrk.format(nil, nil, nil, body)
end
"""


async def seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await directory.create_study(
            conn, directory.StudyIn(oid=STUDY, name="Bench", participateEnabled=True)
        )
        await directory.create_site(conn, STUDY, directory.SiteIn(oid=SITE, name="Bench site"))
        await directory.create_user(conn, directory.UserIn(username="crc", fullName="Bench CRC"))
        await directory.grant_role(conn, "crc", directory.RoleIn(studyOid=STUDY, siteOid=SITE, role="ra"))
    finally:
        await conn.close()


def wrk_load(url: str, token: str, seconds: int, prefix: str) -> tuple[float, float, float]:
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(WRK_SCRIPT.replace('args_prefix or "W"', f'"{prefix}"'))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url, "--", token],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError("the load got error responses:\n" + out)

    def ms(pct: str) -> float:
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, ms("50"), ms("99")


async def python_load(url: str, token: str, seconds: int, prefix: str) -> tuple[float, float, float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(session: aiohttp.ClientSession, wid: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = {
                "subjectKey": f"{prefix}{wid}-{n}",
                "firstName": "Ann",
                "lastName": "O'Neil",
                "emailAddress": "ann@example.org",
                "phoneNumber": "+1 5550100",
            }
            t0 = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
        await asyncio.gather(*(worker(session, i) for i in range(CONNECTIONS)))
    elapsed = time.monotonic() - start
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, q[49], q[98]


def load(url: str, token: str, seconds: int, prefix: str) -> tuple[float, float, float]:
    if shutil.which("wrk"):
        return wrk_load(url, token, seconds, prefix)
    return asyncio.run(python_load(url, token, seconds, prefix))


def pgbench_script(folder: Path, dsn: str) -> tuple[Path, list[str]]:
    """The endpoint's two statement texts as a pgbench script, and the ``-D`` variable definitions.

    ``$n`` becomes ``:sn`` (scope query) or ``:in`` (insert); with ``-M prepared`` pgbench sends them
    as bind parameters, as asyncpg does. The subject key is a random number per transaction, and the
    three constant parameters pgbench cannot define are literals (see below).
    """
    ids = asyncio.run(_ids(dsn))
    # Identifier and access code (not in the request: ciphertexts and blind indexes) and the empty
    # participate status: pgbench cannot define a NULL or empty variable, so these are literals.
    literals = {8: "NULL", 9: "NULL", 12: "NULL", 13: "NULL", 14: "''"}

    def rename(sql: str, prefix: str) -> str:
        def repl(m: re.Match[str]) -> str:
            n = int(m.group(1))
            if prefix == "i" and n == 3:
                return ":key"
            return literals[n] if prefix == "i" and n in literals else f":{prefix}{n}"

        # Newlines and any comments kept: pgbench reads SQL up to the semicolon, as psql does.
        return re.sub(r"\$(\d+)", repl, sql.strip()) + ";\n"

    script = folder / "add_participant.sql"
    script.write_text(
        "\\set key random(1, 999999999999999)\n"
        + rename(SCOPE_SQL, "s")
        + rename(INSERT_PARTICIPANT_WITH_AUDIT, "i")
    )
    values = {
        "s1": "crc",
        "s2": STUDY,
        "s3": SITE,
        "i1": str(ids["study"]),
        "i2": str(ids["site"]),
        # Bytes of the sizes the service stores: key id, nonce, ciphertext and tag; blind indexes.
        "i4": _bytes(4 + 12 + len("Ann") + 16),
        "i5": _bytes(4 + 12 + len("O'Neil") + 16),
        "i6": _bytes(4 + 12 + len("ann@example.org") + 16),
        "i7": _bytes(4 + 12 + len("+1 5550100") + 16),
        "i10": _bytes(16),
        "i11": _bytes(16),
        "i15": str(ids["user"]),
        "i16": "crc",
        "i17": '{"fields": ["first_name", "last_name", "email", "phone"], "registered": false}',
    }
    return script, [f"-D{k}={v}" for k, v in values.items()]


def _bytes(n: int) -> str:
    """``n`` random bytes in bytea's hex input form (pgbench sends variables as text)."""
    return "\\x" + os.urandom(n).hex()


async def _ids(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec("jsonb", encoder=str, decoder=orjson.loads, schema="pg_catalog")
        row = await conn.fetchrow(SCOPE_SQL, "crc", STUDY, SITE)
        return {"study": row["study"]["id"], "site": row["site"]["id"], "user": row["user_id"]}  # type: ignore[index]
    finally:
        await conn.close()


def pgbench_floor(dsn: str, seconds: float, folder: Path) -> tuple[float, float, float]:
    """pgbench at the same concurrency running the endpoint's statements: (transactions/s, p50, p99 ms)."""
    script, defines = pgbench_script(folder, dsn)
    logs = folder / f"pgbench-{time.monotonic_ns()}"
    logs.mkdir()
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "prepared",
            f"-c{CONNECTIONS}",
            "-j2",
            f"-T{max(1, int(seconds))}",
            "-f",
            str(script),
            *defines,
            "-l",
            f"--log-prefix={logs}/tx",
            dsn,
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError("pgbench failed:\n" + out.stderr[-2000:])
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    # Per-transaction log lines: client, transaction number, latency in microseconds, ...
    latencies = [int(line.split()[2]) / 1000 for f in logs.iterdir() for line in f.read_text().splitlines()]
    q = statistics.quantiles(latencies, n=100)
    return tps, q[49], q[98]


async def sql_floor(dsn: str, seconds: float, prefix: str) -> tuple[float, float, float]:
    """The endpoint's statements at the same concurrency: (statements pairs/s, p50 ms, p99 ms)."""
    pool = await create_pool(dsn, CONNECTIONS, CONNECTIONS)  # the service's own pool (codecs, no reset query)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client(cid: int) -> None:
        n = 0
        async with pool.acquire() as conn:
            while time.monotonic() < deadline:
                n += 1
                t0 = time.perf_counter()
                scope = await conn.fetchrow(SCOPE_SQL, "crc", STUDY, SITE)
                row = await conn.fetchrow(
                    INSERT_PARTICIPANT_WITH_AUDIT,
                    scope["study"]["id"],
                    scope["site"]["id"],
                    f"{prefix}{cid}-{n}",
                    "Ann",
                    "O'Neil",
                    "ann@example.org",
                    "+1 5550100",
                    None,  # CONTACT_COLUMNS' order
                    None,
                    "",
                    scope["user_id"],
                    "crc",
                    {"fields": list(CONTACT_COLUMNS)[:4], "registered": False},
                )
                assert row is not None
                latencies.append((time.perf_counter() - t0) * 1000)

    try:
        start = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(CONNECTIONS)))
        elapsed = time.monotonic() - start
    finally:
        await pool.close()
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, q[49], q[98]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.add_participant",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--processes", default="1,2", help="API process counts to measure, comma-separated")
    parser.add_argument("--smoke", action="store_true", help="one-second runs: checks that the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        # One-second runs, no warm-up, one API process (tests/test_serve_processes.py covers more):
        # the smoke run only checks that every line still comes out, and make test waits for it.
        args.seconds, args.processes = 1, "1"

    dsn = asyncio.run(fresh_database("participants_bench_add"))
    asyncio.run(seed(dsn))
    token = mint_token(Settings(jwt_secret=BENCH_SECRET), "crc", 3600)
    generator = "wrk" if shutil.which("wrk") else "python aiohttp client"
    print(f"add_participant: {CONNECTIONS} connections, {args.seconds}s per run, load from {generator}")

    warm = 0 if args.smoke else 2
    if shutil.which("pgbench"):
        floor_name = "pgbench -M prepared"
        floor_rps, floor_p50, floor_p99 = pgbench_floor(
            dsn, args.seconds, Path(tempfile.mkdtemp(prefix="bench-add-"))
        )
    else:
        floor_name = "asyncpg loop"
        if warm:
            asyncio.run(sql_floor(dsn, warm, "fwarm"))
        floor_rps, floor_p50, floor_p99 = asyncio.run(sql_floor(dsn, args.seconds, "F"))
    print(
        f"  endpoint's SQL (floor) : {floor_rps:8.0f} /s     p50 {floor_p50:6.2f} ms  p99 {floor_p99:6.2f} ms"
        f"   ({floor_name}, {CONNECTIONS} clients: scope query + insert with audit row)",
        flush=True,
    )
    with running(
        ["-m", "bench.bare_endpoint", "--port", str(port := free_port()), "--dsn", dsn],
        service_env(dsn),
        port,
    ):
        base = f"http://127.0.0.1:{port}"
        if warm:
            load(base + PATH, token, warm, "warmbare-")
        rps, p50, p99 = load(base + PATH, token, args.seconds, "B-")
    print(
        f"  bare aiohttp + the SQL : {rps:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
        f"   ratio {rps / floor_rps:.2f}x   (bench/bare_endpoint.py, 1 process: the ceiling of any Python endpoint here)",
        flush=True,
    )
    bare_rps = rps
    for processes in (int(p) for p in args.processes.split(",")):
        extra = {"PARTICIPANTS_PROCESSES": str(processes)}
        with running_service(dsn, **extra) as (base, _):
            if warm:
                load(base + PATH, token, warm, f"warm{processes}-")
            rps, p50, p99 = load(base + PATH, token, args.seconds, f"R{processes}-")
        print(
            f"  add participant, {processes} API process(es): {rps:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
            f"   ratio {rps / floor_rps:.2f}x (target >= 0.80), {rps / bare_rps:.2f}x of bare"
            f"{' (target >= 0.90)' if processes == 1 else ''}"
            f"   p99 < 50 ms: {'met' if p99 < 50 else 'NOT met'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
