"""The schemathesis CLI, every check, the stateful phase included, against a real ``participants serve``
with the demo data: as a site CRC, a study data manager and the admin. Any failure fails the test.

This is what an outside client would run against the published document; the in-process fuzzing of
tests/test_openapi.py is quicker and narrower (no stateful links, fewer checks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.dev.embedded import free_port, reachable
from tests.test_cli import ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("PARTICIPANTS_TEST_ST_EXAMPLES", "40"))
ROLES = ("crc_a", "dm", "admin")
ST = Path(sys.executable).parent / "st"
CONFIG = Path(__file__).parent / "schemathesis.toml"


def _st(port: int, token: str, report: Path) -> subprocess.CompletedProcess[str]:
    # One worker: with two threads, hypothesis parses its lambdas' source with ast.parse in both at
    # once, and CPython 3.11 keeps the AST recursion depth per process, not per thread ("SystemError:
    # AST constructor recursion depth mismatch", seen failing a run whose 4,021 cases all passed).
    args = [str(ST), "--config-file", str(CONFIG), "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
            "--max-examples", str(EXAMPLES), "--phases", "examples,coverage,fuzzing,stateful",
            "--header", f"Authorization: Bearer {token}", "--seed", "1", "--generation-deterministic",
            "--request-timeout", "30", "--workers", "1", "--output-truncate", "true",
            "--report", "junit", "--report-junit-path", str(report)]  # fmt: skip
    # Run from the report folder: the CLI keeps a cache (.schemathesis/) in its working directory.
    return subprocess.run(args, cwd=report.parent, capture_output=True, text=True, timeout=900)


async def test_the_schemathesis_cli_finds_nothing(settings, pool, tmp_path):
    done = run_cli(settings, "seed-demo")
    assert done.returncode == 0, done.stderr
    port = free_port()
    # The sign-in throttle (tested in tests/test_token_endpoint.py) would answer the run's later
    # well-formed sign-ins with 429 after its many wrong passwords; here it stays out of the way.
    env = cli_env(settings, PARTICIPANTS_PORT=str(port), PARTICIPANTS_LOG_LEVEL="WARNING",
                  PARTICIPANTS_LOGIN_MAX_FAILURES="1000000")  # fmt: skip
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not reachable("127.0.0.1", port, 0.2):
            assert serve.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        outcomes = {}
        for role in ROLES:
            token = run_cli(settings, "token", role).stdout.strip()
            result = _st(port, token, tmp_path / f"{role}.xml")
            (tmp_path / f"{role}.out").write_text(result.stdout + result.stderr)
            outcomes[role] = result
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    failed = {role: r.stdout[-6000:] + r.stderr[-2000:] for role, r in outcomes.items() if r.returncode != 0}
    assert failed == {}, "\n\n".join(f"== as {role} ==\n{out}" for role, out in failed.items())
    for r in outcomes.values():
        # It really ran: operations were tested and the stateful phase took place.
        assert "No issues found" in r.stdout or "passed" in r.stdout, r.stdout[-3000:]
        assert "Stateful" in r.stdout or "stateful" in r.stdout, r.stdout[-3000:]
