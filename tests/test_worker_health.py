"""``participants worker-health --queue Q`` against real worker processes: each process's own
heartbeat, replicas that never hide each other, a clean stop that removes only its own key, and a
stuck worker (SIGSTOP) read as unhealthy within one refresh interval."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import pytest

from tests.test_cli import run_cli
from tests.test_extract_reliability import _start_worker, _stop

pytestmark = pytest.mark.slow
INTERVAL = "0.5"  # seconds between heartbeats; a key lives 1.5 s


def health(settings, queue: str) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, "worker-health", "--queue", queue)


async def until(check, seconds: float = 20.0) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + seconds
    while True:
        done = check()
        if done is not None:
            return done
        assert time.monotonic() < deadline, "worker-health never reported the expected state"
        await asyncio.sleep(0.2)


async def until_exit(
    settings, queue: str, code: int, seconds: float = 20.0
) -> subprocess.CompletedProcess[str]:
    def check() -> subprocess.CompletedProcess[str] | None:
        done = health(settings, queue)
        return done if done.returncode == code else None

    return await until(check, seconds)


async def test_worker_health_follows_each_worker_process(settings, pool, tmp_path):
    extract = health(settings, "extract")
    assert extract.returncode == 1 and "no worker on" in extract.stdout  # none started yet
    env = {"PARTICIPANTS_WORKER_HEALTH_INTERVAL_SECONDS": INTERVAL}
    first = _start_worker(settings, tmp_path / "first.log", "extract", **env)
    second = _start_worker(settings, tmp_path / "second.log", "extract", **env)
    default = _start_worker(settings, tmp_path / "default.log", "default", **env)
    try:

        def both_extract_workers_beat():
            done = health(settings, "extract")
            pids = f"pid {first.pid}:" in done.stdout and f"pid {second.pid}:" in done.stdout
            return done if done.returncode == 0 and pids else None

        listed = await until(both_extract_workers_beat)
        assert f"pid {default.pid}" not in listed.stdout  # the other queue's worker is not counted
        default_health = await until_exit(settings, "default", 0)
        assert f"pid {default.pid}:" in default_health.stdout
        assert health(settings, "all").returncode == 0

        # A replica stopped cleanly removes its own heartbeat, and only its own.
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        after = health(settings, "extract")
        assert after.returncode == 0, after.stdout
        assert f"pid {second.pid}:" in after.stdout and f"pid {first.pid}:" not in after.stdout

        # A stuck worker (its event loop never runs) stops refreshing: unhealthy within about one
        # key lifetime, not arq's default hour.
        second.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        await until_exit(settings, "extract", 1, seconds=10)
        assert time.monotonic() - stopped_at < 10
        second.send_signal(signal.SIGCONT)
        await until_exit(settings, "extract", 0)
    finally:
        for proc in (first, second, default):
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            _stop(proc)
