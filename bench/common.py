"""Shared pieces of the benchmarks: a scratch database, the service in a subprocess, memory readings.

Benchmarks print ratios against a physical floor measured in the same run; they never assert on
wall time. Servers are found like the tests find them: ``PARTICIPANTS_BENCH_DATABASE_URL`` /
``PARTICIPANTS_BENCH_REDIS_URL``, else the local ones on 127.0.0.1, else embedded.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from service.core.db import dsn_with_database, migrate
from service.core.protection.kek import new_local_kek_text
from service.dev.embedded import EmbeddedServers, free_port, reachable

ROOT = Path(__file__).resolve().parent.parent
# Per run: `participants serve` refuses any secret printed in the source.
BENCH_SECRET = secrets.token_urlsafe(32)
BENCH_KEK = new_local_kek_text()  # the run's key-encryption key, likewise
# Queues of this run's own: two benchmarks (or a benchmark and the tests) sharing one Redis never take
# each other's messages, and no benchmark flushes a database something else may be using.
RUN_ID = secrets.token_hex(6)  # random, not the PID: PIDs repeat across machines and containers
RUN_QUEUES = {
    "PARTICIPANTS_EXTRACT_QUEUE": f"participants:bench-{RUN_ID}:extract",
    "PARTICIPANTS_DEFAULT_QUEUE": f"participants:bench-{RUN_ID}:default",
}
_embedded: EmbeddedServers | None = None


def _embedded_servers() -> EmbeddedServers:
    global _embedded
    if _embedded is None:
        _embedded = EmbeddedServers(Path(tempfile.mkdtemp(prefix="participants-bench-")))
    return _embedded


# Cached: an embedded server is started once per run, and asked again it must give the same address.
@functools.cache
def server_dsn() -> str:
    if url := os.environ.get("PARTICIPANTS_BENCH_DATABASE_URL"):
        return url
    if reachable("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    return _embedded_servers().postgres_url()


@functools.cache
def redis_url() -> str:
    if url := os.environ.get("PARTICIPANTS_BENCH_REDIS_URL"):
        return url
    if reachable("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/14"
    return _embedded_servers().redis_url()


async def fresh_database(name: str) -> str:
    """Create ``<name>_<run id>`` (so two runs never share one), apply the migrations, return its
    DSN. The database is dropped when the script exits."""
    name = f"{name}_{RUN_ID}"
    atexit.register(lambda: asyncio.run(_drop_database(name)))
    admin = await asyncpg.connect(server_dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_with_database(server_dsn(), name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


async def _drop_database(name: str) -> None:
    try:
        admin = await asyncpg.connect(server_dsn())
    except OSError:
        return  # an embedded server already stopped at exit: its whole cluster goes with its folder
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def settle(conn: asyncpg.Connection) -> None:
    """After seeding: VACUUM (hint bits and the visibility map set now, so whichever side of a
    comparison reads the new rows first does not pay for writing them) and ANALYZE, then a
    CHECKPOINT, so the seed's dirty pages are not written out in the middle of a measurement."""
    await conn.execute("VACUUM ANALYZE")
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):  # CHECKPOINT needs pg_checkpoint
        await conn.execute("CHECKPOINT")


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTICIPANTS_")}
    env.update(
        PARTICIPANTS_DATABASE_URL=database_url,
        PARTICIPANTS_REDIS_URL=redis_url(),
        PARTICIPANTS_JWT_SECRET=BENCH_SECRET,
        PARTICIPANTS_KEK=BENCH_KEK,
        PARTICIPANTS_LOG_LEVEL="WARNING",
        PARTICIPANTS_PROCESSES="1",  # one API process unless a benchmark asks for more
        PYTHONPATH=str(ROOT),
        **RUN_QUEUES,
    )
    env.update(extra)
    return env


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        if reachable("127.0.0.1", port, 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


@contextlib.contextmanager
def running(
    args: list[str], env: dict[str, str], port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (a python -m ... command) until the block ends; wait for ``port`` if given."""
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        if port is not None:
            wait_for_port(port, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_service(database_url: str, **extra_env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``participants serve`` on a free port; yields its base URL and process."""
    port = free_port()
    env = service_env(database_url, PARTICIPANTS_PORT=str(port), **extra_env)
    with running(["-m", "service.cli", "serve"], env, port) as proc:
        yield f"http://127.0.0.1:{port}", proc


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def keyed_connect(dsn: str) -> asyncpg.Connection:
    """A connection to a benchmark's database carrying its keyring (the run's KEK), to seed
    participants encrypted as the service writes them (service/dev/synthetic.py)."""
    from service.core.db import connect
    from service.core.protection.loading import load_keyring
    from service.settings import Settings

    return await connect(dsn, await load_keyring(Settings(database_url=dsn, kek=BENCH_KEK)))
