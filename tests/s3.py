"""An S3-compatible HTTP endpoint for tests: moto in server mode, one per session, a fresh bucket per test.

Import the fixtures into a test module: ``from tests.s3 import s3_server, s3_settings  # noqa: F401``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from service.settings import Settings

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


@pytest.fixture
def s3_settings(settings: Settings, s3_server: str) -> Settings:
    """The test's settings with the S3 backend on a new, empty bucket."""
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    s3_client(s3_server).create_bucket(Bucket=bucket)
    return settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_endpoint": s3_server,
            "s3_bucket": bucket,
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            "s3_allow_http": True,
            "storage_timeout_seconds": 5.0,
        }
    )
