"""The storage interface, the same behaviour on both backends (local folder, S3 over HTTP via moto)."""

from __future__ import annotations

import datetime as dt

import aiohttp
import pytest

from service.core.storage import PART_SIZE, Storage, StorageNotFound, StorageUnavailable
from service.settings import Settings
from tests.s3 import s3_server, s3_settings  # noqa: F401


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, settings: Settings) -> Storage:
    if request.param == "s3":
        return Storage.from_settings(request.getfixturevalue("s3_settings"))
    return Storage.from_settings(settings)


async def _read(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in storage.read_stream(key, start, end)])


async def test_streaming_upload_then_read_head_range_delete(storage: Storage):
    # Larger than one part, so S3 goes through a real multipart upload.
    data = bytes(range(256)) * (PART_SIZE // 256 * 2 + 123)
    async with storage.open_upload(
        "jobs/a.csv", content_type="text/csv", content_disposition="attachment"
    ) as up:
        for i in range(0, len(data), 1_000_000):
            await up.write(data[i : i + 1_000_000])
    info = await storage.head("jobs/a.csv")
    assert info.size == len(data)
    assert await _read(storage, "jobs/a.csv") == data
    assert await _read(storage, "jobs/a.csv", 10, 20) == data[10:20]
    assert await _read(storage, "jobs/a.csv", len(data) - 5) == data[-5:]
    # Overwrite in place (a re-run of the same job).
    async with storage.open_upload("jobs/a.csv") as up:
        await up.write(b"new")
    assert await _read(storage, "jobs/a.csv") == b"new"
    await storage.delete("jobs/a.csv")
    await storage.delete("jobs/a.csv")  # missing is fine
    with pytest.raises(StorageNotFound):
        await storage.head("jobs/a.csv")
    with pytest.raises(StorageNotFound):
        await _read(storage, "jobs/a.csv")


async def test_an_aborted_upload_leaves_no_object(storage: Storage):
    with pytest.raises(RuntimeError):
        async with storage.open_upload("jobs/partial.csv") as up:
            await up.write(b"x" * (PART_SIZE + 10))  # one part already sent on S3
            await up.write(b"y" * 100)
            raise RuntimeError("killed mid-stream")
    with pytest.raises(StorageNotFound):
        await storage.head("jobs/partial.csv")
    up = storage.open_upload("jobs/partial2.csv")
    await up.write(b"abc")
    await up.abort()
    with pytest.raises(StorageNotFound):
        await storage.head("jobs/partial2.csv")


async def test_presigned_urls_only_on_s3(storage: Storage):
    async with storage.open_upload(
        "jobs/s.csv",
        content_type="text/csv; charset=utf-8",
        content_disposition='attachment; filename="s.csv"',
    ) as up:
        await up.write(b"a,b\n")
    url = await storage.presigned_get_url("jobs/s.csv", dt.timedelta(minutes=5))
    if storage.backend == "local":
        assert url is None and not storage.can_sign
        return
    assert url is not None and storage.can_sign
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == b"a,b\n"
        assert resp.headers["Content-Disposition"] == 'attachment; filename="s.csv"'


async def test_unreachable_s3_is_unavailable_not_not_found(s3_settings: Settings):
    storage = Storage.from_settings(
        s3_settings.model_copy(update={"s3_endpoint": "http://127.0.0.1:9", "storage_timeout_seconds": 1.0})
    )
    with pytest.raises(StorageUnavailable):
        await storage.head("x")
    with pytest.raises(StorageUnavailable):
        async with storage.open_upload("x") as up:
            await up.write(b"abc")


async def test_partials_left_by_a_killed_local_upload_are_discarded(settings: Settings):
    storage = Storage.from_settings(settings)
    folder = settings.storage_dir / "extracts"
    folder.mkdir(parents=True)
    (folder / "a.csv#1").write_bytes(b"half a file")  # what obstore's local store stages
    (folder / "a.csv#2").write_bytes(b"another")
    (folder / "b.csv#1").write_bytes(b"someone else's")
    async with storage.open_upload("extracts/a.csv") as up:
        await up.write(b"whole")
    assert await storage.discard_partials("extracts/a.csv") == 2
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv", "b.csv#1"]
    assert await _read(storage, "extracts/a.csv") == b"whole"
