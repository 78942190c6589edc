"""A database of a test's own, for the tests that change its keys (rotations) or its schema
(encrypt-existing and migration 0026): the session database keeps its keys, which the tests' pool
holds. Also the key commands as real processes, and a client that keeps adding and reading
participants over HTTP while they run."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from service.core.db import create_pool, dsn_with_database, migrate
from service.core.protection.loading import load_keyring
from service.settings import Settings
from tests.serving import bound_port, start_serve
from tests.world import SITE_A, STUDY, World

API = f"/pages/auth/api/clinicaldata/studies/{STUDY}"


@contextlib.asynccontextmanager
async def fresh_database(server_dsn: str, up_to: str | None = None) -> AsyncIterator[str]:
    """A new database migrated (up to ``up_to``, e.g. "0023"), dropped afterwards."""
    name = f"participants_keys_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_with_database(server_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn, up_to=up_to)
        finally:
            await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def keyed_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on ``settings``' database carrying its keyring (made there if it has none)."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, 1, 4, keyring=await load_keyring(settings))
    try:
        yield pool
    finally:
        await pool.close()


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    from tests.test_cli import cli_env as base

    return base(settings, PARTICIPANTS_KEY_REFRESH_SECONDS=str(settings.key_refresh_seconds), **extra)


def run_cli(
    settings: Settings, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    from tests.test_cli import ROOT

    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=cli_env(settings, **env),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def start_cli(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    from tests.test_cli import ROOT

    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=cli_env(settings, **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@contextlib.contextmanager
def serving(settings: Settings, log_path: Path, **env: str) -> Any:
    """A real ``participants serve`` on ``settings``' database; yields its base URL."""
    proc = start_serve(
        settings, log_path, PARTICIPANTS_KEY_REFRESH_SECONDS=str(settings.key_refresh_seconds), **env
    )
    try:
        yield f"http://127.0.0.1:{bound_port(proc, log_path)}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def person(key: str) -> dict[str, str]:
    """The contact data participant ``key`` is given (and must be read back with)."""
    return {"firstName": f"Zoë {key}", "lastName": f"O'Brien {key}", "emailAddress": f"{key.lower()}@example.org",
            "phoneNumber": "+1 5550101", "identifier": f"MRN-{key}"}  # fmt: skip


def seed_row(key: str) -> dict[str, str]:
    """``person(key)`` as the columns synthetic.add_participants takes."""
    p = person(key)
    return {"subject_key": key, "first_name": p["firstName"], "last_name": p["lastName"],
            "email": p["emailAddress"], "phone": p["phoneNumber"], "identifier": p["identifier"]}  # fmt: skip


def agrees(detail: dict[str, Any], key: str) -> bool:
    want = person(key)
    return (detail.get("firstName"), detail.get("lastName"), detail.get("email"), detail.get("secondaryID")) == (
        want["firstName"], want["lastName"], want["emailAddress"], want["identifier"],
    )  # fmt: skip


@dataclass
class Traffic:
    """Adds and reads participants over HTTP until stopped; every failure is kept."""

    base: str
    world: World
    read_keys: list[str]
    check_read: bool = True
    added: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        headers = self.world.auth("crc_a")
        async with aiohttp.ClientSession(self.base, headers=headers) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                key = f"LIVE-{n}"
                async with http.post(
                    f"{API}/sites/{SITE_A}/participants", json={"subjectKey": key, **person(key)}
                ) as r:
                    self._record(r.status, await r.text(), "add")
                    if r.status == 200:
                        self.added.append(key)
                again = self.added[n // 2] if self.added else None  # an update: the transactional path
                if again is not None:
                    body = {"subjectKey": again, **person(again)}
                    async with http.post(f"{API}/sites/{SITE_A}/participants", json=body) as r:
                        self._record(r.status, await r.text(), "update")
                for read in (
                    self.read_keys[(n * 7) % len(self.read_keys)],
                    self.added[-1] if self.added else None,
                ):
                    if read is None:
                        continue
                    async with http.get(
                        f"{API}/sites/{SITE_A}/participant", params={"participantID": read}
                    ) as r:
                        text = await r.text()
                        self._record(r.status, text, "read")
                        if r.status == 200 and self.check_read and not agrees(await r.json(), read):
                            self.failures.append(f"read {read}: wrong values")

    def _record(self, status: int, text: str, what: str) -> None:
        self.requests += 1
        if status != 200:
            self.failures.append(f"{what}: {status} {text[:300]}")

    def stop(self) -> None:
        self._stop.set()


async def wait_process(proc: subprocess.Popen[str], seconds: float = 180) -> tuple[int, str, str]:
    """``proc``'s exit code and output, the event loop free meanwhile (the traffic keeps going)."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the command did not finish"
        await asyncio.sleep(0.1)
    out, err = proc.communicate()
    return proc.returncode, out, err


def new_kek_env() -> dict[str, str]:
    from service.core.protection.kek import new_local_kek_text

    return {"NEW_KEK": new_local_kek_text()}
