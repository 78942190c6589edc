"""The benchmarks cannot rot: every script runs at tiny sizes (``make bench-smoke``) and prints its
ratio line. Timing is never asserted; a crash, a missing line or a non-zero exit fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each benchmark's ratio line (a number followed by "x" or after "ratio").
RATIO_LINES = {
    "add_participant": r"add participant, 1 API process\(es\):.*ratio \d+\.\d+x",
    "add_participant (bare reference)": r"bare aiohttp \+ the SQL .* ratio \d+\.\d+x",
    "bulk_upload": r"HTTP upload, end to end .* ratio \d+\.\d+",
    "bulk_memory": r"bulk memory: worst peak RSS growth .* ratio \d+\.\d+x .* ratio \d+\.\d+x",
    "extract": r"ratio job/floor\s+\d+\.\d+x",
    "many_extracts": r"1 worker process\(es\): all COMPLETED .* ratio \d+\.\d+x",
    "fairness (user B)": r"user B behind A's backlog: .* ratio \d+\.\d+x",
    "fairness (user A)": r"user A's \d+ extracts: .* ratio \d+\.\d+x",
    # Costs, not ratios; skipped (saying why) without Postgres' server binaries or redis-server.
    "costs": r"(Redis commands per job .*\d+\.\d+|costs: skipped \(.+\))",
}


@pytest.mark.slow
def test_every_benchmark_runs_to_its_ratio_line(server_dsn: str, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTICIPANTS_")}
    env.update(PARTICIPANTS_BENCH_DATABASE_URL=server_dsn, PARTICIPANTS_BENCH_REDIS_URL=redis_url)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name, pattern in RATIO_LINES.items():
        assert re.search(pattern, done.stdout), f"{name}: no ratio line in\n{done.stdout}"
