"""The key-encryption key in AWS KMS (moto in server mode): a real ``participants serve`` started
on a fresh database with PARTICIPANTS_KMS_KEY_ID makes its data keys wrapped by KMS, adds and reads
a participant; ``rotate-kek`` moves the keys from KMS to a local KEK and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3
import pytest

from service.core.protection.kek import LocalKek
from service.settings import Settings
from tests.keyed_db import API, agrees, fresh_database, keyed_pool, new_kek_env, person, run_cli, serving
from tests.s3 import ACCESS_KEY, REGION, SECRET_KEY, s3_server  # noqa: F401
from tests.world import SITE_A, World

AWS_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}


def kms(endpoint: str) -> Any:
    return boto3.client(
        "kms", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )  # fmt: skip


@pytest.fixture
async def kms_settings(
    base_settings: Settings,
    server_dsn: str,
    s3_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Settings]:
    """Settings on a fresh database whose KEK is a new KMS key (this process has the AWS credentials)."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    key_id = str(kms(s3_server).create_key(Description="participants kek")["KeyMetadata"]["Arn"])
    async with fresh_database(server_dsn) as dsn:
        yield base_settings.model_copy(
            update={"database_url": dsn, "kek": "", "kms_key_id": key_id, "kms_endpoint": s3_server,
                    "kms_region": REGION, "key_refresh_seconds": 0.5}
        )  # fmt: skip


def kms_env(settings: Settings) -> dict[str, str]:
    return {
        **AWS_ENV, "PARTICIPANTS_KMS_KEY_ID": settings.kms_key_id or "",
        "PARTICIPANTS_KMS_ENDPOINT": settings.kms_endpoint or "", "PARTICIPANTS_KMS_REGION": REGION,
    }  # fmt: skip


async def add_and_read(base: str, world: World, key: str | None, read: str) -> None:
    async with aiohttp.ClientSession(base, headers=world.auth("crc_a")) as http:
        if key is not None:
            async with http.post(
                f"{API}/sites/{SITE_A}/participants", json={"subjectKey": key, **person(key)}
            ) as r:
                assert r.status == 200, await r.text()
        async with http.get(f"{API}/sites/{SITE_A}/participant", params={"participantID": read}) as r:
            assert r.status == 200, await r.text()
            assert agrees(await r.json(), read)


async def assert_wrapped_by_kms(pool, settings: Settings) -> None:
    """Every data key names the KMS key, and KMS itself opens its wrapped bytes."""
    rows = await pool.fetch("SELECT purpose, wrapped, kek_id FROM data_keys WHERE state <> 'retired'")
    assert {r["purpose"] for r in rows} == {"fields", "index", "audit"}
    client = kms(settings.kms_endpoint or "")
    for r in rows:
        assert r["kek_id"] == f"kms:{settings.kms_key_id}"
        answer = client.decrypt(
            CiphertextBlob=bytes(r["wrapped"]), KeyId=settings.kms_key_id,
            EncryptionContext={"purpose": r["purpose"]},
        )  # fmt: skip
        assert len(answer["Plaintext"]) == 32 and answer["KeyId"] == settings.kms_key_id


async def test_serve_with_kms_on_a_fresh_database_and_rotate_kek_to_local_and_back(
    kms_settings: Settings, tmp_path
) -> None:
    settings = kms_settings
    with serving(settings, tmp_path / "kms.log", **kms_env(settings)) as base:  # makes the keys, under KMS
        async with keyed_pool(settings) as pool:
            await assert_wrapped_by_kms(pool, settings)
            world = World(pool, settings)
            await world.standard()
            await add_and_read(base, world, "KMS-1", "KMS-1")

    # KMS -> a local KEK: the keys re-wrapped, the rows untouched and read by a process given the local KEK.
    local_env = new_kek_env()
    local = LocalKek.from_base64(local_env["NEW_KEK"])
    moved = run_cli(settings, "rotate-kek", "--new-kek-env", "NEW_KEK", **kms_env(settings), **local_env)
    assert moved.returncode == 0, moved.stderr
    local_settings = settings.model_copy(update={"kek": local_env["NEW_KEK"], "kms_key_id": None})
    async with keyed_pool(local_settings) as pool:
        assert {r["kek_id"] for r in await pool.fetch("SELECT kek_id FROM data_keys")} == {local.kek_id}
        with serving(local_settings, tmp_path / "local.log") as base:
            await add_and_read(base, World(pool, local_settings), "LOCAL-1", "KMS-1")

    # And back: the local KEK -> the KMS key.
    back = run_cli(local_settings, "rotate-kek", "--new-kms-key-id", settings.kms_key_id or "",
                   **AWS_ENV, PARTICIPANTS_KMS_ENDPOINT=settings.kms_endpoint or "")  # fmt: skip
    assert back.returncode == 0, back.stderr
    with serving(settings, tmp_path / "kms-again.log", **kms_env(settings)) as base:
        async with keyed_pool(settings) as pool:
            await assert_wrapped_by_kms(pool, settings)
            await add_and_read(base, World(pool, settings), None, "LOCAL-1")
            actions = await pool.fetch(
                "SELECT details FROM audit_log WHERE action = 'keys.rotateKek' ORDER BY id"
            )
    kms_id = f"kms:{settings.kms_key_id}"
    assert [a["details"] for a in actions] == [
        {"from": kms_id, "to": local.kek_id},
        {"from": local.kek_id, "to": kms_id},
    ]
