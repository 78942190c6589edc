"""The schemathesis CLI, every check, the stateful phase included, against a real ``participants serve``
with the demo data: as a site CRC, a study data manager and the admin. Any failure fails the test.

This is what an outside client would run against the published document; the in-process fuzzing of
tests/test_openapi.py is quicker and narrower (no stateful links, fewer checks)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving import bound_port, start_serve
from tests.test_cli import ROOT, run_cli

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("PARTICIPANTS_TEST_ST_EXAMPLES", "40"))
ROLES = ("crc_a", "dm", "admin")
ST = Path(sys.executable).parent / "st"
CONFIG = Path(__file__).parent / "schemathesis.toml"


def _st(port: int, token: str, report: Path, runner: str) -> subprocess.CompletedProcess[str]:
    # One worker: with two threads, hypothesis parses its lambdas' source with ast.parse in both at
    # once, and CPython 3.11 keeps the AST recursion depth per process, not per thread ("SystemError:
    # AST constructor recursion depth mismatch", seen failing a run whose 4,021 cases all passed).
    args = [str(ST), "--config-file", str(CONFIG), "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
            "--max-examples", str(EXAMPLES), "--phases", "examples,coverage,fuzzing,stateful",
            "--header", f"Authorization: Bearer {token}", "--seed", "1", "--generation-deterministic",
            "--request-timeout", "30", "--workers", "1", "--output-truncate", "true",
            "--report", "junit", "--report-junit-path", str(report)]  # fmt: skip
    # Run from the report folder: the CLI keeps a cache (.schemathesis/) in its working directory.
    env = {**os.environ, "PYTHONPATH": ROOT, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PARTICIPANTS_ST_RUNNER": runner}  # fmt: skip
    return subprocess.run(args, cwd=report.parent, env=env, capture_output=True, text=True, timeout=900)


async def test_the_schemathesis_cli_finds_nothing(settings, pool, tmp_path):
    done = run_cli(settings, "seed-demo")
    assert done.returncode == 0, done.stderr
    # The sign-in throttle (tested in tests/test_token_endpoint.py) would answer the run's later
    # well-formed sign-ins with 429 after its many wrong passwords; here it stays out of the way.
    log_path = tmp_path / "serve.log"
    serve = start_serve(settings, log_path, PARTICIPANTS_LOGIN_MAX_FAILURES="1000000")
    try:
        port = bound_port(serve, log_path)
        outcomes = {}
        answered = {}
        # Each run spares the user it signs in as (tests/schemathesis_hooks.py); the admin run signs
        # in as an admin of its own, so that the demo's "admin" is tested like any other user.
        runner = f"st-admin-{secrets.token_hex(8)}"
        made = run_cli(settings, "create-user", runner, "--admin")
        assert made.returncode == 0, made.stderr[-2000:]
        for role in ROLES:
            minted = run_cli(settings, "token", runner if role == "admin" else role)
            assert minted.returncode == 0 and minted.stdout.count(".") == 2, minted.stderr[-2000:]
            before = len(log_path.read_text().splitlines())
            result = _st(
                port, minted.stdout.strip(), tmp_path / f"{role}.xml", runner if role == "admin" else role
            )
            (tmp_path / f"{role}.out").write_text(result.stdout + result.stderr)
            outcomes[role] = result
            answered[role] = _authenticated_successes(log_path.read_text().splitlines()[before:])
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    failed = {role: r.stdout[-6000:] + r.stderr[-2000:] for role, r in outcomes.items() if r.returncode != 0}
    assert failed == {}, "\n\n".join(f"== as {role} ==\n{out}" for role, out in failed.items())
    for role, r in outcomes.items():
        # It really ran: every operation was tested, every test case passed, the stateful phase ran.
        selected = re.search(r"Selected: (\d+)/(\d+)", r.stdout)
        tested = re.search(r"Tested: (\d+)", r.stdout)
        cases = re.search(r"(\d+) generated, (\d+) passed", r.stdout)
        assert selected and tested and cases, r.stdout[-3000:]
        assert selected[1] == selected[2] == tested[1] and int(tested[1]) >= 40, r.stdout[-3000:]
        assert int(cases[1]) >= 500 and cases[1] == cases[2], r.stdout[-3000:]
        assert re.search(r"✅ Stateful", r.stdout), r.stdout[-3000:]
        # And it ran signed in: the role's own operations answered 2xx (a refused token gets only
        # 401s, which the checks above would not see).
        assert len(answered[role]) >= MIN_ROUTES_ANSWERED[role], {r: sorted(a) for r, a in answered.items()}


# Routes that answer anyone: a 2xx there says nothing about the token.
PUBLIC_ROUTES = {"/openapi.json", "/docs", "/docs/", "/docs/redoc.standalone.js", "/healthz", "/readyz", "/metrics",
                 "/user-service/api/oauth/token"}  # fmt: skip
# Distinct authenticated routes each role must have had a 2xx from: with a refused token, none.
MIN_ROUTES_ANSWERED = {"crc_a": 1, "dm": 1, "admin": 5}


def _authenticated_successes(log_lines: list[str]) -> set[str]:
    """The authenticated routes that answered 2xx, from the API's access log lines."""
    routes = set()
    for line in log_lines:
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        status, route = record.get("status"), record.get("route")
        if isinstance(status, int) and 200 <= status < 300 and route and route not in PUBLIC_ROUTES:
            routes.add(route)
    return routes
