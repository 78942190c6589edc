"""The `participants` command as an operator uses it, in real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import aiohttp
import jwt
import pytest

from tests.serving import bound_port, start_serve
from tests.world import SITE_A, STUDY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTICIPANTS_")}
    env.update(
        PARTICIPANTS_DATABASE_URL=settings.database_url,
        PARTICIPANTS_REDIS_URL=settings.redis_url,
        PARTICIPANTS_JWT_SECRET=settings.jwt_secret,
        PARTICIPANTS_KEK=settings.kek,
        PARTICIPANTS_DATA_DIR=str(settings.data_dir),
        PARTICIPANTS_STORAGE_PATH=str(settings.storage_dir),
        PYTHONPATH=ROOT,
    )
    env.update(extra)
    return env


def cli(settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=cli_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


async def test_bootstrap_with_the_cli_then_serve_and_stop_cleanly(world, settings, tmp_path):
    await world.study()
    await world.site(SITE_A)
    assert "applied: nothing" in cli(settings, "migrate")
    created = json.loads(cli(settings, "create-user", "boss", "--full-name", "Big Boss", "--admin"))
    assert created["username"] == "boss" and created["admin"] is True
    token = cli(settings, "token", "boss", "--ttl", "120")

    log_path = tmp_path / "serve.log"
    proc = start_serve(settings, log_path)
    try:
        port = bound_port(proc, log_path)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            headers = {"Authorization": f"Bearer {token}"}
            role = {"studyOid": STUDY, "siteOid": SITE_A, "role": "ra"}
            async with http.post("/admin/api/users/boss/roles", json=role, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
            url = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
            async with http.post(
                url, json={"subjectKey": "CLI-1", "lastName": "Secret-Surname"}, headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    logged = log_path.read_text()
    assert proc.returncode == 0, logged[-2000:]
    assert '"route":"/pages/auth/api/clinicaldata/studies/{studyOID}/sites/{siteOID}/participants"' in logged
    assert "Secret-Surname" not in logged  # personal data never reaches the log


def run_cli(settings, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=cli_env(settings, **env),
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "secret, reason",
    [
        ("", "no token verification is configured"),
        ("short-secret-0123456789", "shorter than 32 bytes"),
        # Every secret ever printed in the source, e.g. the old default and the old docker-compose one.
        ("dev-only-secret-change-me-0123456789abcdef", "published in this project's source"),
        ("change-me-to-a-long-random-secret", "published in this project's source"),
    ],
)
@pytest.mark.parametrize("command", [["serve"], ["worker", "--queue", "extract"]])
def test_serve_and_worker_refuse_to_start_without_a_usable_secret(settings, command, secret, reason):
    done = run_cli(settings, *command, PARTICIPANTS_JWT_SECRET=secret, PARTICIPANTS_PORT="0")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to start" in done.stderr and reason in done.stderr
    if secret:
        assert secret not in done.stderr  # the message names the problem, never the secret


def test_an_oidc_issuer_alone_is_enough_to_start(settings, tmp_path):
    log_path = tmp_path / "serve.log"
    proc = start_serve(
        settings,
        log_path,
        PARTICIPANTS_JWT_SECRET="",
        PARTICIPANTS_OIDC_ISSUER="http://127.0.0.1:9/realms/none",
    )
    try:
        assert bound_port(proc, log_path) > 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0


async def test_set_password_from_stdin(settings, world, pool):
    from service.core import accounts

    await world.user("pat")
    done = run_cli(settings, "set-password", "pat", stdin="a long enough password\n")
    assert done.returncode == 0, done.stderr
    assert "a long enough password" not in done.stdout + done.stderr
    async with pool.acquire() as conn:
        assert await accounts.verify_password(conn, "pat", "a long enough password")
    short = run_cli(settings, "set-password", "pat", stdin="too short\n")
    assert short.returncode == 1 and "passwordTooShort" in short.stderr
    nobody = run_cli(settings, "set-password", "nobody", stdin="a long enough password\n")
    assert nobody.returncode == 1 and "userNotFound" in nobody.stderr
    async with pool.acquire() as conn:
        assert await accounts.verify_password(conn, "pat", "a long enough password")  # unchanged
    # Audited as the admin API's PUT .../password is, the actor being "cli"; refusals write nothing.
    rows = await pool.fetch("SELECT user_id, username, action, details FROM audit_log ORDER BY id")
    assert [tuple(r) for r in rows] == [(None, "cli", "admin.password.set", {"user": "pat"})]


def test_the_dev_key_encryption_key_is_random_kept_private_and_usable(tmp_path):
    """`participants dev` (make run) encrypts with a key of its own, made once into .data/kek."""
    from service.core.protection.kek import LocalKek
    from service.dev.secret import KEK_FILE_NAME, dev_kek, secret_path

    first = dev_kek(tmp_path)
    assert dev_kek(tmp_path) == first and dev_kek(tmp_path / "other") != first
    assert stat.S_IMODE(os.stat(secret_path(tmp_path, KEK_FILE_NAME)).st_mode) == 0o600
    assert LocalKek.from_base64(first).kek_id.startswith("local:")  # 32 bytes of base64


async def test_the_dev_secret_is_random_kept_and_private(tmp_path, settings, world):
    from service.dev.secret import dev_secret, secret_path

    await world.user("crc_a")

    first = dev_secret(tmp_path)
    assert len(first) >= 32 and dev_secret(tmp_path) == first
    assert stat.S_IMODE(os.stat(secret_path(tmp_path)).st_mode) == 0o600
    assert dev_secret(tmp_path / "other") != first
    # `participants token` signs with it when no secret is configured, so the README's lines work.
    token = run_cli(
        settings, "token", "crc_a", PARTICIPANTS_JWT_SECRET="", PARTICIPANTS_DATA_DIR=str(tmp_path)
    )
    assert token.returncode == 0, token.stderr
    assert jwt.decode(token.stdout.strip(), first, algorithms=["HS256"])["preferred_username"] == "crc_a"
    none = run_cli(
        settings, "token", "crc_a", PARTICIPANTS_JWT_SECRET="", PARTICIPANTS_DATA_DIR=str(tmp_path / "empty")
    )
    assert none.returncode == 1 and "PARTICIPANTS_JWT_SECRET is not set" in none.stderr


async def test_token_refuses_what_the_service_would_refuse(settings, world, pool):
    await world.user("pat")
    await world.user("gone")
    assert run_cli(settings, "disable-user", "gone").returncode == 0
    short = {"PARTICIPANTS_JWT_MAX_LIFETIME_SECONDS": "600"}
    for args, env, reason in (
        (["pat", "--ttl", str(24 * 3600 + 1)], {}, "PARTICIPANTS_JWT_MAX_LIFETIME_SECONDS (86400)"),
        (["pat", "--ttl", "601"], short, "PARTICIPANTS_JWT_MAX_LIFETIME_SECONDS (600)"),
        (["pat", "--ttl", "0"], {}, "--ttl must be between 1 and"),
        (["nobody"], {}, "no enabled user 'nobody' here"),
        (["gone"], {}, "no enabled user 'gone' here"),
    ):
        done = run_cli(settings, "token", *args, **env)
        assert done.returncode == 2, (args, done.stderr)
        assert reason in done.stderr and not done.stdout, (args, done.stderr)
    done = run_cli(settings, "token", "pat", **short)  # the default TTL, within the maximum
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(
        done.stdout.strip(), settings.jwt_secret, algorithms=["HS256"], options={"verify_aud": False}
    )
    assert claims["exp"] - claims["iat"] == 600 and claims["preferred_username"] == "pat"
    done = run_cli(settings, "token", "pat", "--ttl", "86400")
    assert done.returncode == 0, done.stderr


def test_docker_compose_carries_no_usable_secret():
    import re

    from service.core.auth_config import secret_problem, startup_problem

    with open(os.path.join(ROOT, "docker-compose.yml")) as compose:
        text = compose.read()
    values = re.findall(r"PARTICIPANTS_JWT_SECRET:\s*(.*)", text)
    assert values, "docker-compose.yml no longer names PARTICIPANTS_JWT_SECRET"
    for value in values:
        default = re.fullmatch(r"\$\{PARTICIPANTS_JWT_SECRET:?[-?](.*)\}", value.strip().strip('"'))
        assert default is not None, value  # only ever the operator's own variable
        fallback = default.group(1)
        assert not fallback or secret_problem(fallback), f"a usable default secret: {value}"
    assert startup_problem(None, None, None)


async def test_make_run_gives_every_demo_user_a_fresh_password(pool):
    from service.core import accounts
    from service.dev.demo import DEMO_USERS, seed_demo
    from service.launch.dev import demo_passwords

    async with pool.acquire() as conn:
        await seed_demo(conn)
        first = await demo_passwords(conn)
        second = await demo_passwords(conn)
        assert set(first) == {u[0] for u in DEMO_USERS}
        assert all(len(p) >= accounts.MIN_PASSWORD_LENGTH for p in second.values())
        assert not set(first.values()) & set(second.values())
        for username, password in second.items():
            assert await accounts.verify_password(conn, username, password)
            assert not await accounts.verify_password(conn, username, first[username])


async def test_disable_and_enable_user_like_the_admin_api_does(settings, world, client, pool):
    """`disable-user` / `enable-user` go through the admin API's own change and audit row; only the
    actor differs: "cli", with no user id (never a user who happens to be called cli)."""
    await world.standard()
    url = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"
    assert (await client.get(url, headers=world.auth("crc_a"))).status == 200

    done = run_cli(settings, "disable-user", "crc_a")
    assert done.returncode == 0 and done.stdout.strip() == "crc_a disabled", done.stderr
    assert (await client.get(url, headers=world.auth("crc_a"))).status == 403  # at once: no token cache
    resp = await client.patch("/admin/api/users/crc_a", json={"disabled": False}, headers=world.auth("admin"))
    assert resp.status == 200, await resp.text()
    assert (await client.get(url, headers=world.auth("crc_a"))).status == 200
    done = run_cli(settings, "disable-user", "crc_a")
    assert done.returncode == 0, done.stderr
    done = run_cli(settings, "enable-user", "crc_a")
    assert done.returncode == 0 and done.stdout.strip() == "crc_a enabled", done.stderr
    assert (await client.get(url, headers=world.auth("crc_a"))).status == 200

    nobody = run_cli(settings, "disable-user", "nobody")
    assert nobody.returncode == 1 and "userNotFound" in nobody.stderr
    admin_id = await pool.fetchval("SELECT id FROM users WHERE username = 'admin'")
    rows = await pool.fetch(
        "SELECT user_id, username, action, details FROM audit_log WHERE action LIKE 'admin.%' ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (None, "cli", "admin.user.update", {"user": "crc_a", "disabled": True}),
        (admin_id, "admin", "admin.user.update", {"user": "crc_a", "disabled": False}),
        (None, "cli", "admin.user.update", {"user": "crc_a", "disabled": True}),
        (None, "cli", "admin.user.update", {"user": "crc_a", "disabled": False}),
    ]
