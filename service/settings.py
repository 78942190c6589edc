"""One settings class. Every knob is an environment variable prefixed ``PARTICIPANTS_``.

Nothing is built at import time: call ``Settings()`` where the process starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARTICIPANTS_", extra="ignore")

    # Where things live. Empty database/redis URLs mean "start the embedded servers" (dev only).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".data")
    path_prefix: str = ""  # e.g. "/OpenClinica", so OC4 client URLs work unchanged
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # base URL used in Location headers and webhooks; derived from the request if empty

    db_pool_min: int = 2
    db_pool_max: int = 20
    db_timeout_seconds: float = 5.0

    # Tokens. HS256 with a shared secret (dev, the `participants token` command) and/or an
    # OIDC provider's JWKS (production; Keycloak is what OC4 uses).
    jwt_secret: str | None = DEV_JWT_SECRET
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_username_claim: str = "preferred_username"
    jwt_leeway_seconds: int = 0
    jwks_cache_seconds: int = 300

    # Object storage for extract files and bulk uploads.
    storage_backend: Literal["local", "s3"] = "local"
    storage_path: Path | None = None  # local backend; default <data_dir>/storage
    s3_endpoint: str | None = None
    s3_bucket: str = "participants"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_allow_http: bool = False

    # Jobs.
    job_retention_hours: float = 24.0
    extract_queue: str = "participants:extract"
    default_queue: str = "participants:default"
    extract_job_timeout_seconds: int = 30
    worker_poll_delay: float = 0.05
    # Extracts (issue 4): progress/heartbeat/cancel checks while streaming, the sweeper's thresholds.
    job_heartbeat_seconds: float = Field(default=1.0, gt=0)
    job_requeue_after_seconds: float = Field(default=15.0, gt=0)  # IN_QUEUE this long: make sure arq has it
    job_stale_seconds: float = Field(default=90.0, gt=0)  # IN_PROGRESS without a heartbeat this long: re-enqueue
    job_max_attempts: int = Field(default=5, ge=1)
    extract_max_jobs: int = Field(default=2, ge=1)  # concurrent extracts per worker (each holds 2 connections)
    storage_timeout_seconds: float = Field(default=30.0, gt=0)  # S3 retries give up after this

    # Bulk upload.
    bulk_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)

    # Webhooks: delivery schedule, SSRF exceptions, secret rotation.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_allowed_networks: list[str] = []  # CIDRs allowed although private, e.g. ["127.0.0.1/32"]
    webhook_retry_hours: float = Field(default=72.0, gt=0)  # give up on a message this long after the event
    webhook_backoff_base_seconds: float = Field(default=30.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=12 * 3600.0, gt=0)
    webhook_lease_seconds: float = Field(default=60.0, gt=0)  # an attempt's claim; must exceed the timeout
    webhook_default_overlap_seconds: int = Field(default=24 * 3600, ge=0)

    log_level: str = "INFO"
    log_json: bool = True

    @property
    def storage_dir(self) -> Path:
        return self.storage_path or (self.data_dir / "storage")
