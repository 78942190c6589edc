"""With PARTICIPANTS_S3_SSE set, every object the service writes to S3 is stored encrypted at rest:
an extract file large enough to go up in several parts (a multipart upload), and a small object (a
plain put), with SSE-S3 (AES256) and with SSE-KMS and a key of KMS's own, checked on the S3 endpoint."""

from __future__ import annotations

import pytest

from service.core.storage import PART_SIZE, Storage
from tests.s3 import REGION, s3_client, s3_server, s3_settings  # noqa: F401
from tests.test_extract import run_jobs, seed_site, submit
from tests.world import SITE_A

# The settings a test client needs to write to the test's bucket.
S3_FIELDS = {
    "storage_backend", "s3_endpoint", "s3_bucket", "s3_region", "s3_access_key_id", "s3_secret_access_key",
    "s3_allow_http", "s3_sse", "s3_sse_kms_key_id", "storage_timeout_seconds",
}  # fmt: skip
# Extract rows are about 70 bytes: 150,000 make a file of about 10 MB, two PART_SIZE parts or more.
ROWS = 150_000


def _kms_key(endpoint: str) -> str:
    import boto3

    from tests.s3 import ACCESS_KEY, SECRET_KEY

    kms = boto3.client(
        "kms", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )  # fmt: skip
    return str(kms.create_key(Description="participants test")["KeyMetadata"]["Arn"])


def _parts(etag: str) -> int:
    """How many parts S3 assembled the object from (a multipart ETag ends with ``-N``), 1 for a put."""
    tail = etag.strip('"').rpartition("-")[2]
    return int(tail) if "-" in etag else 1


@pytest.mark.slow
@pytest.mark.parametrize("sse", ["AES256", "aws:kms"])
async def test_objects_are_encrypted_server_side(make_client, world, pool, s3_settings, s3_server, sse):
    key_id = _kms_key(s3_server) if sse == "aws:kms" else None
    settings = s3_settings.model_copy(update={"s3_sse": sse, "s3_sse_kms_key_id": key_id})
    client = await make_client(**settings.model_dump(include=S3_FIELDS))
    await world.standard()
    await seed_site(pool, SITE_A, ROWS)
    job = await submit(client, world)
    await run_jobs(settings)
    row = await pool.fetchrow("SELECT status, object_key, row_count FROM jobs WHERE uuid = $1::uuid", job)
    assert (row["status"], row["row_count"]) == ("COMPLETED", ROWS)
    s3 = s3_client(s3_server)

    def assert_encrypted(key: str) -> dict:
        head = s3.head_object(Bucket=settings.s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == sse
        if key_id is not None:
            assert head["SSEKMSKeyId"] == key_id  # our key, not the bucket's default
        return head

    head = assert_encrypted(row["object_key"])
    assert head["ContentLength"] > PART_SIZE
    assert _parts(head["ETag"]) >= 2, head["ETag"]  # it did go up as a multipart upload

    storage = Storage.from_settings(settings)
    async with storage.open_upload("bulk/sse-check.csv", content_type="text/csv") as upload:
        await upload.write(b"ParticipantID\nK-1\n")
    assert _parts(assert_encrypted("bulk/sse-check.csv")["ETag"]) == 1  # a plain put


async def test_without_the_setting_no_encryption_is_asked_for(s3_settings, s3_server):
    storage = Storage.from_settings(s3_settings)
    async with storage.open_upload("plain.csv", content_type="text/csv") as upload:
        await upload.write(b"x\n")
    head = s3_client(s3_server).head_object(Bucket=s3_settings.s3_bucket, Key="plain.csv")
    assert head.get("ServerSideEncryption") is None  # so the encryption above is our doing
