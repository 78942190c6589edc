"""``participants serve`` in a process of its own, on a port the kernel picks.

The API is started with ``PARTICIPANTS_PORT=0`` and its port is read back from its ``listening``
log line: no port is picked here and bound later by another process, so two test runs on one
machine never race for one (a free port found by binding and closing can be taken in between).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.dev.embedded import reachable


def start_serve(settings: Any, log_path: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """``participants serve ARGS`` with its log (JSON, INFO) in ``log_path``."""
    from tests.test_cli import ROOT, cli_env  # that module's tests use this one

    # One process unless asked for more: a supervisor killed (SIGKILL) leaves its children serving.
    env = {"PARTICIPANTS_PROCESSES": "1", **env}
    full_env = cli_env(settings, **{"PARTICIPANTS_PORT": "0", "PARTICIPANTS_LOG_JSON": "true", **env})
    full_env["PARTICIPANTS_LOG_LEVEL"] = "INFO"  # the `listening` line is INFO
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", *args],
            cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


def bound_port(proc: subprocess.Popen[bytes], log_path: Path, seconds: float = 60.0) -> int:
    """The port ``proc`` listens on, once it accepts connections there."""
    deadline = time.monotonic() + seconds
    while True:
        for line in log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("msg") == "listening" and record.get("port"):
                port = int(record["port"])
                if reachable("127.0.0.1", port, 0.2):
                    return port
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "the API did not start: " + log_path.read_text()[-3000:]
        time.sleep(0.05)


@contextmanager
def refused_port() -> Iterator[int]:
    """A port held by this process, bound and never listening: a connection to it is refused, and no
    other process can listen there while the test runs (a "free" port could be taken meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
