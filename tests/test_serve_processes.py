"""``participants serve --processes N``: one port, N processes, metrics summed across them, and a
clean stop of all of them on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from service.dev.embedded import reachable
from service.launch.processes import pool_max_per_process, process_count
from service.settings import Settings
from tests.serving import bound_port, start_serve


def children_of(pid: int) -> list[int]:
    out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(x) for x in out]


def test_pools_are_sized_to_stay_within_the_total(monkeypatch) -> None:
    settings = Settings(db_pool_max=20, db_connections_total=50)
    assert pool_max_per_process(settings, 1) == 20
    assert pool_max_per_process(settings, 4) == 12  # 4 x 12 = 48 <= 50
    assert process_count(Settings(processes=3), None) == 3
    assert process_count(Settings(processes=3), 2) == 2
    # Unset: one per core this process may run on (three here, whatever the machine has).
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 2, 5})
    assert process_count(Settings(), None) == 3
    # Never more processes than connections: 100 cores and a total of 50 run 50 pools of one.
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(100)))
    assert process_count(settings, None) == 50
    assert pool_max_per_process(settings, process_count(settings, None)) == 1


@pytest.mark.slow
async def test_two_processes_share_the_port_and_the_metrics(settings, tmp_path) -> None:
    log_path = tmp_path / "serve.log"
    proc = start_serve(settings, log_path, "--processes", "2", PARTICIPANTS_DB_CONNECTIONS_TOTAL="10")
    try:
        port = bound_port(proc, log_path)
        deadline = time.monotonic() + 60
        while len(children_of(proc.pid)) != 2 or log_path.read_text().count('"msg":"listening"') != 2:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        workers = children_of(proc.pid)
        requests = 60
        for _ in range(requests):
            # A new connection each time, so the kernel spreads them over both processes.
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
        counted = sum(
            float(m.group(1))
            for m in re.finditer(
                r'^participants_http_requests_total\{[^}]*route="/healthz"[^}]*\} ([\d.e+]+)$', text, re.M
            )
        )
        # Whichever process answered, the count is every process's: 60, not the share of one.
        assert counted == requests, text[:3000]
        assert all(Path(f"/proc/{pid}").exists() for pid in workers)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        time.sleep(0.2)
        assert not any(
            Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
            for pid in workers
        )
        assert not reachable("127.0.0.1", port, 0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
