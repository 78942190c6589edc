"""An OC4 client script works unchanged: token call, add, bulk, extract, poll, download, against a
real `participants serve` and `participants worker`, each its own process."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time

import pytest

from tests.serving import bound_port, start_serve
from tests.test_cli import ROOT, cli_env, run_cli
from tests.world import SITE_A, STUDY

pytestmark = pytest.mark.slow


async def test_an_oc4_client_script_works_unchanged(world, settings, pool, tmp_path):
    await world.standard()
    await pool.execute("UPDATE studies SET participate_enabled = true")
    done = run_cli(settings, "set-password", "crc_a", stdin="an OC4 integration's password\n")
    assert done.returncode == 0, done.stderr

    env = cli_env(settings, PARTICIPANTS_PATH_PREFIX="/OpenClinica", PARTICIPANTS_WORKER_POLL_DELAY="0.05",
                  PARTICIPANTS_PARTICIPATE_URL="https://portal.example.org")  # fmt: skip
    serve_log = tmp_path / "serve.log"

    def start(cmd: list[str], log_path) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as log:
            return subprocess.Popen([sys.executable, "-m", "service.cli", *cmd], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip

    procs = [start_serve(settings, serve_log, PARTICIPANTS_PATH_PREFIX="/OpenClinica",
                         PARTICIPANTS_PARTICIPATE_URL="https://portal.example.org")]  # fmt: skip
    try:
        port = bound_port(procs[0], serve_log)
        deadline = time.monotonic() + 60
        client = subprocess.Popen(
            [sys.executable, "tests/oc4_client.py", f"http://127.0.0.1:{port}", STUDY, SITE_A, "crc_a"],
            cwd=ROOT, env={"PATH": "/usr/bin:/bin", "OC4_PASSWORD": "an OC4 integration's password"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # No worker yet: the client must meet a running job (OC4's 200 jobInProgress) at least once.
        poll_line = '"route":"/OpenClinica/pages/auth/api/jobs/{jobUuid}/downloadFile","status":200'
        while poll_line not in serve_log.read_text():
            assert client.poll() is None, client.communicate()
            assert time.monotonic() < deadline, serve_log.read_text()[-2000:]
            time.sleep(0.05)
        procs.append(start(["worker", "--queue", "all"], tmp_path / "worker.log"))
        out, err = client.communicate(timeout=120)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    logs = [serve_log.read_text(), (tmp_path / "worker.log").read_text()]
    assert client.returncode == 0, err[-3000:] + "\n".join(log[-2000:] for log in logs)
    seen = json.loads(out)
    assert seen["polls"] >= 1
    assert seen["added"]["subjectKey"] == "OC4-001" and seen["added"]["participateStatus"] == "CREATED"
    assert seen["bulk"]["uploadCount"] == 2 and seen["bulk"]["failureCount"] == 0
    assert seen["contentType"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(seen["csv"])))
    assert rows[0] == ["ParticipantId", "First Name", "Last Name", "Email", "Mobile", "Identifier", "Access Code",
                       "Participate Status"]  # fmt: skip
    assert [r[0] for r in rows[1:]] == ["OC4-001", "OC4-002", "OC4-003"]
    assert (
        rows[1][1:5] == ["Jo", "Doe, Jr.", "jo@example.org", "+1 5550101"]
        and rows[1][6]
        and rows[1][7] == "CREATED"
    )
    # The code read after the reset is the one the link and the fresh extract hold; the first is gone.
    first, code = seen["firstCode"], seen["code"]
    assert first and code and first != code
    assert seen["accessLink"] == {"accessCode": code, "host": "https://portal.example.org",
                                  "accessLink": f"https://portal.example.org/?accessCode={code}"}  # fmt: skip
    assert rows[1][6] == code and first not in seen["csv"]
    for log in logs:
        assert "an OC4 integration's password" not in log and "jo@example.org" not in log
        assert first not in log and code not in log
