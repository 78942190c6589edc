"""A first run as a new user makes it: one demo per checkout, the other commands beside it with
nothing set, live worker counts, a word at Ctrl-C, and webhooks that can be tried on this machine."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook

from service.core.jobs import lifecycle, model
from service.dev.demo import DEMO_STUDY
from service.dev.embedded import free_port, kept_port, reachable
from service.dev.instance import apply_dev_env, demo_lock, demo_running, read_env, write_env
from service.dev.webhook_receiver import build_receiver, verify
from service.launch.dev_session import allow_loopback_webhooks
from tests.test_cli import ROOT, cli_env
from tests.test_webhooks_support import ALLOW_LOCAL, run_default_worker, sweep
from tests.world import SITE_A, STUDY, expect

EXTRACT = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants/extractPartcipantsInfo"


def beside_env(settings, **extra: str) -> dict[str, str]:
    """A terminal next to `make run`: no server named, only the checkout's data folder."""
    env = cli_env(settings, **extra)
    del env["PARTICIPANTS_DATABASE_URL"], env["PARTICIPANTS_REDIS_URL"]
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, input=stdin,
    )  # fmt: skip


def _wait_listening(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 60
    while not reachable("127.0.0.1", port, 0.2):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.slow
async def test_a_second_demo_is_refused_politely_and_the_commands_work_beside_the_first(
    settings, pool, tmp_path
):
    port = free_port()
    env = cli_env(
        settings, PARTICIPANTS_PORT=str(port), PARTICIPANTS_DATA_DIR=str(tmp_path),
        PARTICIPANTS_DB_CONNECTIONS_TOTAL="10", PARTICIPANTS_WORKER_HEALTH_INTERVAL_SECONDS="0.5",
    )  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dev"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_listening(first, port)
        dev_env = tmp_path / "dev.env"
        assert stat.S_IMODE(dev_env.stat().st_mode) == 0o600
        assert f"PARTICIPANTS_API_URL=http://127.0.0.1:{port}" in dev_env.read_text()

        # A second `make run` in the same checkout, on another port: says where the first answers.
        other = free_port()
        second = run_cli({**env, "PARTICIPANTS_PORT": str(other)}, "dev")
        assert second.returncode == 0, second.stderr[-2000:]
        assert "already running" in second.stdout and f"http://127.0.0.1:{port}" in second.stdout
        assert "Traceback" not in second.stderr
        assert not reachable("127.0.0.1", other, 0.2)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 200, await resp.text()

        # The other commands, with no server named: they find the demo's.
        beside = beside_env(settings, PARTICIPANTS_DATA_DIR=str(tmp_path))
        made = run_cli(beside, "create-user", "newbie", "--full-name", "New Bie")
        assert made.returncode == 0, made.stderr[-2000:]
        assert json.loads(made.stdout) == {
            "username": "newbie",
            "fullName": "New Bie",
            "admin": False,
            "disabled": False,
        }
        assert run_cli(beside, "set-password", "newbie", stdin="a long new password\n").returncode == 0
        token = run_cli(beside, "token", "crc_a")
        assert token.returncode == 0, token.stderr[-2000:]

        # The worker's counts are live: an extract done shows in `worker-health` within seconds.
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            headers = {"Authorization": f"Bearer {token.stdout.strip()}", "Accept": "application/json"}
            demo_extract = EXTRACT.replace(STUDY, DEMO_STUDY).replace(SITE_A, "S_SITE_A")
            async with http.get(demo_extract, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 20
        while True:
            health = run_cli(beside, "worker-health")
            assert health.returncode == 0, health.stdout + health.stderr[-2000:]
            extract_line = next(x for x in health.stdout.splitlines() if x.startswith(settings.extract_queue))
            if "j_complete=1" in extract_line:
                break
            assert time.monotonic() < deadline, health.stdout
            time.sleep(0.5)
    finally:
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=40)
    assert first.returncode == 0, err[-3000:]
    assert "Stopped the API on http://127.0.0.1:" in out and "the workers" in out
    assert "Traceback" not in err
    assert not (tmp_path / "dev.env").exists()  # gone with the demo: nothing stale for the commands


def test_dev_env_is_trusted_only_while_the_demo_holds_the_lock(settings, tmp_path):
    values = {"PARTICIPANTS_DATABASE_URL": "postgresql://x/y", "PARTICIPANTS_REDIS_URL": "redis://r:1/0"}
    write_env(tmp_path, values)
    assert stat.S_IMODE((tmp_path / "dev.env").stat().st_mode) == 0o600
    assert read_env(tmp_path) == {}  # no demo holds the lock: a stale file names nothing
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(tmp_path / "dev.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        write_env(tmp_path, values)
        assert demo_running(tmp_path)
        assert read_env(tmp_path) == values
        mine = settings.model_copy(update={"data_dir": tmp_path, "database_url": None, "redis_url": None})
        assert apply_dev_env(mine) and (mine.database_url, mine.redis_url) == tuple(values.values())
        named = settings.model_copy(update={"data_dir": tmp_path})
        apply_dev_env(named)  # variables win over the file
        assert (named.database_url, named.redis_url) == (settings.database_url, settings.redis_url)
        with demo_lock(tmp_path) as got:
            assert not got
    finally:
        holder.kill()
        holder.wait()
    assert not demo_running(tmp_path)


def test_the_embedded_redis_keeps_its_port(tmp_path):
    path = tmp_path / "port"
    port = kept_port(path)
    assert kept_port(path) == port  # free again: the same address as last time
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        other = kept_port(path)
    assert other != port and kept_port(path) == other


def test_command_output_is_never_a_python_repr(settings, tmp_path):
    done = run_cli(beside_env(settings, PARTICIPANTS_DATA_DIR=str(tmp_path)), "create-user", "x")
    assert done.returncode != 0
    assert "no demo is running" in done.stderr and "Traceback" not in done.stderr


def test_the_demo_allows_webhooks_to_this_machine_only(settings):
    s = settings.model_copy(update={"webhook_allowed_networks": ["10.1.0.0/16"]})
    allow_loopback_webhooks(s)
    assert s.webhook_allowed_networks == ["10.1.0.0/16", "127.0.0.0/8", "::1/128"]
    assert settings.model_copy().webhook_allowed_networks == []  # `serve` keeps refusing loopback


def test_the_receiver_checks_signatures_as_a_receiver_must():
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"type": "job.completed"}'
    now = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now)}
    signed = Webhook(secret).sign("msg_1", __import__("datetime").datetime.fromtimestamp(now), body.decode())
    assert verify(secret, {**headers, "webhook-signature": "v1,bad " + signed}, body) is None
    assert (
        verify(secret, {**headers, "webhook-signature": signed}, body + b" ")
        == "no signature matches the secret"
    )
    late = {**headers, "webhook-signature": signed}
    assert verify(secret, late, body, now=now + 301) == "timestamp more than five minutes away"
    assert verify(secret, {"webhook-id": "msg_1"}, body) is not None


async def test_a_demo_delivery_reaches_the_receiver_signed_with_absolute_urls(
    make_client, world, settings, pool
):
    """No PARTICIPANTS_PUBLIC_URL: the event's URLs are the job API's, built from the submit's origin."""
    await world.standard()
    s = settings.model_copy(update=ALLOW_LOCAL)
    client = await make_client(**ALLOW_LOCAL)
    created = await expect(
        await client.post("/admin/api/webhooks", json={"url": "http://127.0.0.1:1/", "eventTypes": ["job.completed"]},
                          headers=world.auth("admin")), 201)  # fmt: skip
    printed = io.StringIO()
    server = TestServer(build_receiver(created["secret"], out=printed), host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/"))
        await expect(await client.patch(f"/admin/api/webhooks/{created['id']}", json={"url": url},
                                        headers=world.auth("admin")), 200)  # fmt: skip
        submitted = await expect(
            await client.get(EXTRACT, headers={**world.auth("crc_a"), "Accept": "application/json"}), 200
        )
        job_uuid = submitted["jobUuid"]
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE jobs SET status = 'IN_PROGRESS', attempts = 1 WHERE uuid = $1", job_uuid
            )
            made = model.JobFile(row_count=1, byte_size=10, sha256="ab" * 32, object_key="extracts/x.csv")
            await lifecycle.complete_job(conn, job_uuid, 1, made, __import__("datetime").timedelta(hours=1))
        assert await sweep(s, pool) == 1
        await run_default_worker(s)
    finally:
        await server.close()
    lines = printed.getvalue()
    assert f"job.completed job {job_uuid} COMPLETED; signature verified" in lines
    event = json.loads(lines[lines.index("{") :])
    assert event["data"]["statusUrl"] == submitted["statusUrl"]
    assert event["data"]["statusUrl"].startswith("http://127.0.0.1:")
    assert event["data"]["downloadUrl"] == submitted["downloadUrl"]
    assert "baseUrl" not in event["data"]
    assert os.environ.get("PARTICIPANTS_PUBLIC_URL") is None
