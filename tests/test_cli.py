"""The `participants` command as an operator uses it, in real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import aiohttp

from service.embedded import free_port, reachable
from tests.world import SITE_A, STUDY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTICIPANTS_")}
    env.update(
        PARTICIPANTS_DATABASE_URL=settings.database_url,
        PARTICIPANTS_REDIS_URL=settings.redis_url,
        PARTICIPANTS_JWT_SECRET=settings.jwt_secret,
        PARTICIPANTS_DATA_DIR=str(settings.data_dir),
        PARTICIPANTS_STORAGE_PATH=str(settings.storage_dir),
        PYTHONPATH=ROOT,
    )
    env.update(extra)
    return env


def cli(settings, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "service.cli", *args], env=cli_env(settings), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


async def test_bootstrap_with_the_cli_then_serve_and_stop_cleanly(world, settings):
    await world.study()
    await world.site(SITE_A)
    assert "applied: nothing" in cli(settings, "migrate")
    assert "'username': 'boss'" in cli(settings, "create-user", "boss", "--full-name", "Big Boss", "--admin")
    token = cli(settings, "token", "boss", "--ttl", "120")

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT,
                            env=cli_env(settings, PARTICIPANTS_PORT=str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not reachable("127.0.0.1", port, 0.2):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            headers = {"Authorization": f"Bearer {token}"}
            role = {"studyOid": STUDY, "siteOid": SITE_A, "role": "ra"}
            async with http.post("/admin/api/users/boss/roles", json=role, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
            url = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
            async with http.post(url, json={"subjectKey": "CLI-1", "lastName": "Secret-Surname"}, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    logged = stderr.decode()
    assert '"route":"/pages/auth/api/clinicaldata/studies/{studyOID}/sites/{siteOID}/participants"' in logged
    assert "Secret-Surname" not in logged  # personal data never reaches the log
