"""docker-compose.yml brought to life without Docker: its services' commands, with its environment
(and the image's), run against the local Postgres, Redis and S3 stand-in; migrations once, then the
API and both workers, checked by the compose file's own health checks. And what the file promises on
its own: credentials only from .env, ordered start-up, restart and stop grace on every service, the
API on the loopback interface, pinned images, and a connection budget within Postgres's."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.launch.processes import pool_max_per_process, process_count
from service.settings import Settings
from service.worker.main import build_worker
from tests.s3 import ACCESS_KEY, SECRET_KEY, s3_client, s3_server  # noqa: F401
from tests.serving import bound_port, start_serve
from tests.test_cli import ROOT, cli_env

COMPOSE = Path(ROOT) / "docker-compose.yml"
DOCKERFILE = Path(ROOT) / "Dockerfile"
APP_SERVICES = ("migrate", "api", "worker-extract", "worker")
# What .env holds on a real machine (the compose file's comment says how to make it).
DOT_ENV = {
    "POSTGRES_PASSWORD": "pg-" + "0" * 20,
    "MINIO_ROOT_USER": "minio-root",
    "MINIO_ROOT_PASSWORD": "root-" + "1" * 20,
    "PARTICIPANTS_S3_ACCESS_KEY_ID": "participants-service",
    "PARTICIPANTS_S3_SECRET_ACCESS_KEY": "svc-" + "2" * 20,
    "PARTICIPANTS_JWT_SECRET": "jwt-" + "3" * 40,
    "PARTICIPANTS_KEK": base64.b64encode(b"4" * 32).decode(),
}
VARIABLE = re.compile(r"\$\$|\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, kind, arg = m.groups()
        got = env.get(name, "")
        if got:
            return got
        if kind == "?":
            raise MissingVariable(f"{name}: {arg}")
        return arg if kind == "-" else ""

    return VARIABLE.sub(one, value)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), DOT_ENV if env is None else env)


def image_env() -> dict[str, str]:
    """The Dockerfile's final ``ENV`` line: what every container starts with."""
    line = [x for x in DOCKERFILE.read_text().splitlines() if x.startswith("ENV ")][-1]
    return dict(pair.split("=", 1) for pair in line.removeprefix("ENV ").split())


def service_env(name: str) -> dict[str, str]:
    return {**image_env(), **{k: str(v) for k, v in compose()["services"][name]["environment"].items()}}


def local_command(command: list[str]) -> list[str]:
    """The container's command, run by this interpreter (the image's ``participants`` and ``python``)."""
    if command[0] == "participants":
        return [sys.executable, "-m", "service.cli", *command[1:]]
    assert command[0] == "python", command
    return [sys.executable, *command[1:]]


# --- what the file promises --------------------------------------------------------------------


def test_every_credential_comes_from_dot_env():
    compose()  # every variable given: it loads
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "PARTICIPANTS_S3_SECRET_ACCESS_KEY"):
        with pytest.raises(MissingVariable, match=name):
            compose({k: v for k, v in DOT_ENV.items() if k != name})
    text = COMPOSE.read_text()
    assert "minioadmin" not in text and "POSTGRES_PASSWORD: participants" not in text
    services = compose()["services"]
    # The service's S3 keys are its own user's, never MinIO's root keys.
    app = services["api"]["environment"]
    root = services["minio"]["environment"]
    assert app["PARTICIPANTS_S3_ACCESS_KEY_ID"] != root["MINIO_ROOT_USER"]
    assert app["PARTICIPANTS_S3_SECRET_ACCESS_KEY"] != root["MINIO_ROOT_PASSWORD"]
    assert "mc admin user add" in " ".join(services["minio-init"]["entrypoint"])


def test_start_order_restart_and_stop_grace():
    services = compose()["services"]
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "on-failure"), name
        if service["restart"] == "unless-stopped":
            assert "stop_grace_period" in service, name
        for dependency, how in service.get("depends_on", {}).items():
            assert how["condition"] in ("service_healthy", "service_completed_successfully"), (
                name,
                dependency,
            )
    for name in ("api", "worker-extract", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # Docker's stop grace exceeds the API's own drain of requests in flight.
    drain = Settings().shutdown_timeout_seconds
    assert int(services["api"]["stop_grace_period"].removesuffix("s")) > drain


def test_api_published_on_loopback_and_images_pinned():
    services = compose()["services"]
    assert services["api"]["ports"] == ["127.0.0.1:8080:8080"]
    for name, service in services.items():
        if "image" in service:
            repository, _, tag = service["image"].rpartition(":")
            assert repository and tag and tag != "latest" and re.search(r"\d", tag), name
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("FROM "):
            assert re.match(r"FROM python:\d+\.\d+\.\d+-slim-\w+", line), line
        if line.startswith("USER "):
            assert re.fullmatch(r"USER \d+(:\d+)?", line), line  # runAsNonRoot needs a number


def test_the_connection_budget_fits_postgres():
    services = compose()["services"]
    command = " ".join(services["postgres"]["command"])
    max_connections = int(re.search(r"max_connections=(\d+)", command)[1])
    reserved = int(re.search(r"superuser_reserved_connections=(\d+)", command)[1])
    settings = Settings(**{k.removeprefix("PARTICIPANTS_").lower(): v for k, v in service_env("api").items()
                           if k.startswith("PARTICIPANTS_")})  # fmt: skip
    processes = process_count(settings, None)  # the file's own count, whatever this host's cores
    api = processes * pool_max_per_process(settings, processes)
    budget = {"api": api}
    for name, queue in (("worker-extract", settings.extract_queue), ("worker", settings.default_queue)):
        worker = build_worker(settings, queue)
        # Its jobs' pool, the heartbeat's connection, and the default queue's LISTEN connection.
        budget[name] = worker.ctx["db_pool_max"] + 1 + (1 if worker.ctx.get("listen_outbox") else 0)
    budget["migrate"] = 1
    assert sum(budget.values()) <= max_connections - reserved, budget
    assert api <= settings.db_connections_total


# --- the file's commands, run ------------------------------------------------------------------


def local_env(name: str, settings: Settings, s3_endpoint: str, **extra: str) -> dict[str, str]:
    """The service's environment with the compose network's hosts swapped for the local servers."""
    env = service_env(name)
    assert urlsplit(env["PARTICIPANTS_DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(env["PARTICIPANTS_REDIS_URL"]).hostname == "redis"
    assert urlsplit(env["PARTICIPANTS_S3_ENDPOINT"]).hostname == "minio"
    env.update(
        PARTICIPANTS_DATABASE_URL=str(settings.database_url),
        PARTICIPANTS_REDIS_URL=str(settings.redis_url),
        PARTICIPANTS_S3_ENDPOINT=s3_endpoint,
        PARTICIPANTS_S3_ACCESS_KEY_ID=ACCESS_KEY,
        PARTICIPANTS_S3_SECRET_ACCESS_KEY=SECRET_KEY,
        PARTICIPANTS_DATA_DIR=str(settings.data_dir),
        PARTICIPANTS_KEK=str(settings.kek),  # the local database's keys are wrapped by the run's own
        # The container's 0.0.0.0:8080 becomes a port of the kernel's choice on the loopback.
        PARTICIPANTS_HOST="127.0.0.1",
        PARTICIPANTS_PORT="0",
        **extra,
    )
    return env


def healthy(check: list[str], env: dict[str, str], seconds: float) -> subprocess.CompletedProcess[str]:
    """Run a compose health check (``CMD`` form) until it passes, as Docker would."""
    assert check[0] == "CMD", check
    deadline = time.monotonic() + seconds
    while True:
        done = subprocess.run(
            local_command(check[1:]), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


@pytest.mark.slow
def test_the_compose_services_run_with_the_compose_settings(settings, pool, s3_server, tmp_path):
    services = compose()["services"]
    bucket = services["api"]["environment"]["PARTICIPANTS_S3_BUCKET"]
    s3 = s3_client(s3_server)
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)  # what minio-init does
    base = {k: v for k, v in cli_env(settings).items() if not k.startswith("PARTICIPANTS_")}

    def env_of(name: str) -> dict[str, str]:
        # Each service its own host, as each container is: a health check sees its own workers only.
        return {**base, **local_env(name, settings, s3_server), "HOSTNAME": name}

    migrate = subprocess.run(local_command(services["migrate"]["command"]), cwd=ROOT, env=env_of("migrate"),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-2000:]

    procs: list[subprocess.Popen[bytes]] = []
    try:
        api_log = tmp_path / "api.log"
        assert services["api"]["command"] == ["participants", "serve"]
        api_env = local_env("api", settings, s3_server)
        served = {k: v for k, v in api_env.items() if k.startswith("PARTICIPANTS_")}
        api = start_serve(settings, api_log, HOSTNAME="api", **served)
        procs.append(api)
        port = bound_port(api, api_log, seconds=90)
        for name in ("worker-extract", "worker"):
            with open(tmp_path / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen(local_command(services[name]["command"]), cwd=ROOT, env=env_of(name),
                                              stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

        api_check = [
            part.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            for part in services["api"]["healthcheck"]["test"]
        ]
        assert "/readyz" in " ".join(api_check)
        done = healthy(api_check, env_of("api"), 60)
        assert done.returncode == 0, done.stderr[-2000:] + api_log.read_text()[-2000:]
        for name, queue in (("worker-extract", "extract"), ("worker", "default")):
            check = services[name]["healthcheck"]["test"]
            assert check[-2:] == ["--queue", queue]
            done = healthy(check, env_of(name), 60)
            log = (tmp_path / f"{name}.log").read_text()[-2000:]
            assert done.returncode == 0, done.stdout + done.stderr + log
            worker = procs[2 if name == "worker" else 1]
            assert f"pid {worker.pid}:" in done.stdout  # this process's own heartbeat
        # The API ran as compose runs it: the file's process count, each within its share.
        assert api_log.read_text().count('"msg":"listening"') == int(api_env["PARTICIPANTS_PROCESSES"])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert all(proc.returncode == 0 for proc in procs), [p.returncode for p in procs]
