"""Add-participant throughput and latency at 32 concurrent connections, against a trivial aiohttp
JSON handler measured in the same run on the same machine.

Target (issue): the real endpoint (token check, role check, validation, insert, audit row)
reaches at least 0.30 of the trivial handler's throughput, with p99 under 50 ms.
Load comes from ``wrk`` when installed (apt-get install wrk), else from a Python client.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import BENCH_SECRET, fresh_database, running, running_service, service_env
from service import directory
from service.auth import mint_token
from service.embedded import free_port
from service.settings import Settings

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
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await directory.create_study(conn, directory.StudyIn(oid=STUDY, name="Bench", participateEnabled=True))
        await directory.create_site(conn, STUDY, directory.SiteIn(oid=SITE, name="Bench site"))
        await directory.create_user(conn, directory.UserIn(username="crc", fullName="Bench CRC"))
        await directory.grant_role(conn, "crc", directory.RoleIn(studyOid=STUDY, siteOid=SITE, role="ra"))
    finally:
        await conn.close()


def wrk_load(url: str, token: str, seconds: int, prefix: str) -> tuple[float, float, float]:
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(WRK_SCRIPT.replace("args_prefix or \"W\"", f'"{prefix}"'))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url, "--", token],
        capture_output=True, text=True, check=True,
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
            body = {"subjectKey": f"{prefix}{wid}-{n}", "firstName": "Ann", "lastName": "O'Neil",
                    "emailAddress": "ann@example.org", "phoneNumber": "+1 5550100"}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()

    dsn = asyncio.run(fresh_database("participants_bench_add"))
    asyncio.run(seed(dsn))
    token = mint_token(Settings(jwt_secret=BENCH_SECRET), "crc", 3600)
    generator = "wrk" if shutil.which("wrk") else "python aiohttp client"
    print(f"add_participant: {CONNECTIONS} connections, {args.seconds}s per run, load from {generator}")

    port = free_port()
    with running(["-m", "bench.trivial_server", str(port)], service_env(dsn), port):
        load(f"http://127.0.0.1:{port}{PATH}", token, 2, "warm")
        floor_rps, floor_p50, floor_p99 = load(f"http://127.0.0.1:{port}{PATH}", token, args.seconds, "T")
    with running_service(dsn) as (base, _):
        load(base + PATH, token, 2, "warm")
        rps, p50, p99 = load(base + PATH, token, args.seconds, "R")

    print(f"  trivial aiohttp handler: {floor_rps:8.0f} req/s  p50 {floor_p50:6.2f} ms  p99 {floor_p99:6.2f} ms")
    print(f"  add participant        : {rps:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    print(f"  ratio (target >= 0.30) : {rps / floor_rps:.2f}   p99 target < 50 ms: {'met' if p99 < 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
