"""The artifact a deployment runs is the artifact we test: the project installed NON-editably into a
fresh virtualenv (as the Dockerfile does) migrates an empty database with the SQL it ships."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from service.core.db import dsn_with_database

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


async def test_installed_wheel_migrates_an_empty_database(tmp_path: Path, server_dsn: str, redis_url: str):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # setuptools reuses build/ and never removes a file deleted or renamed since the last build,
    # so a stale copy (an old migration name) would ship: build from a clean slate.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    _run([*pip, "install", str(ROOT)], tmp_path)  # not -e: a wheel is built and installed
    python = str(venv / "bin" / "python")
    # Run from an empty folder, so nothing of the source tree can be imported by accident.
    where = _run(
        [python, "-c", "import service, pathlib; print(pathlib.Path(service.__file__).parent)"], tmp_path
    )
    installed = Path(where.strip())
    assert installed.is_relative_to(venv), installed
    assert sorted(p.name for p in (installed / "sql").glob("*.sql")) == sorted(
        p.name for p in (ROOT / "service" / "sql").glob("*.sql")
    )
    # The console's templates and assets ship in the wheel (the machine that runs it may have no internet).
    for folder, pattern in (("web/console/templates", "*.html"), ("web/console/static", "*")):
        assert sorted(p.name for p in (installed / folder).glob(pattern)) == sorted(
            p.name for p in (ROOT / "service" / folder).glob(pattern)
        ), folder

    name = f"participants_pkg_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {
            **os.environ,
            "PARTICIPANTS_DATABASE_URL": dsn_with_database(server_dsn, name),
            "PARTICIPANTS_REDIS_URL": redis_url,
        }
        _run([str(venv / "bin" / "participants"), "migrate"], tmp_path, env)
        conn = await asyncpg.connect(dsn_with_database(server_dsn, name))
        try:
            applied = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            tables = {
                r["tablename"]
                for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            }
        finally:
            await conn.close()
        assert applied == {p.name for p in (ROOT / "service" / "sql").glob("*.sql")}
        assert {
            "participants",
            "jobs",
            "studies",
            "sites",
            "users",
            "audit_log",
            "webhook_endpoints",
        } <= tables
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
