"""With PARTICIPANTS_S3_SSE set, every object the service writes to S3 is stored encrypted at rest:
the extract file (a multipart upload) and a bulk upload (a plain put), checked on the S3 endpoint."""

from __future__ import annotations

from service.core.storage import Storage
from tests.s3 import s3_client, s3_server, s3_settings  # noqa: F401
from tests.test_extract import run_jobs, seed_site, submit
from tests.world import SITE_A

S3_FIELDS = {
    "storage_backend",
    "s3_endpoint",
    "s3_bucket",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
}
S3_FIELDS |= {"s3_allow_http", "s3_sse"}


async def test_objects_are_encrypted_server_side(make_client, world, pool, s3_settings, s3_server):
    settings = s3_settings.model_copy(update={"s3_sse": "AES256"})
    client = await make_client(
        **settings.model_dump(
            include={
                "storage_backend",
                "s3_endpoint",
                "s3_bucket",
                "s3_region",
                "s3_access_key_id",
                "s3_secret_access_key",
                "s3_allow_http",
                "s3_sse",
            }
        )
    )
    await world.standard()
    await seed_site(pool, SITE_A, 3)
    job = await submit(client, world)
    await run_jobs(settings)
    key = await pool.fetchval("SELECT object_key FROM jobs WHERE uuid = $1::uuid", job)
    s3 = s3_client(s3_server)
    assert s3.head_object(Bucket=settings.s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"

    storage = Storage.from_settings(settings)
    async with storage.open_upload("bulk/sse-check.csv", content_type="text/csv") as upload:
        await upload.write(b"ParticipantID\nK-1\n")
    assert (
        s3.head_object(Bucket=settings.s3_bucket, Key="bulk/sse-check.csv")["ServerSideEncryption"]
        == "AES256"
    )


async def test_without_the_setting_no_encryption_is_asked_for(s3_settings, s3_server):
    storage = Storage.from_settings(s3_settings)
    async with storage.open_upload("plain.csv", content_type="text/csv") as upload:
        await upload.write(b"x\n")
    head = s3_client(s3_server).head_object(Bucket=s3_settings.s3_bucket, Key="plain.csv")
    assert head.get("ServerSideEncryption") is None  # so the AES256 above is our doing
