"""One settings class. Every knob is an environment variable prefixed ``PARTICIPANTS_``.

Nothing is built at import time: call ``Settings()`` where the process starts.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    db_pool_max: int = 20  # per API process; lowered when N processes would exceed db_connections_total
    db_connections_total: int = Field(default=80, ge=1)  # all API processes of one `serve` together
    # API processes of `participants serve` on one port (SO_REUSEPORT); unset: one per core.
    # `participants dev` always runs one.
    processes: int | None = Field(default=None, ge=1)
    shutdown_timeout_seconds: float = Field(default=30.0, gt=0)  # requests in flight get this long at stop
    db_timeout_seconds: float = 5.0
    # An API request waits this long for a pooled connection, then answers 503 (never hangs).
    db_acquire_timeout_seconds: float = Field(default=2.0, gt=0)

    # Tokens. HS256 with a shared secret (local accounts, the `participants token` command) and/or
    # an OIDC provider (production; Keycloak is what OC4 uses). No default secret: `serve` and
    # `worker` refuse to start without a verification method (`participants dev` makes a secret).
    jwt_secret: str | None = None
    # The provider by discovery: its /.well-known/openid-configuration names the JWKS and the token
    # endpoint. Tokens must carry this issuer and, when one is known, the audience below.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None  # default: oidc_client_id
    # A confidential client with direct access grants: the token endpoint forwards passwords to it.
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    jwks_url: str | None = None  # a JWKS without discovery (checked against jwt_issuer/jwt_audience)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_username_claim: str = "preferred_username"
    jwt_leeway_seconds: int = 0
    # Tokens living longer than this (exp - iat, or exp - now without iat) are refused, whoever signed them.
    jwt_max_lifetime_seconds: int = Field(default=24 * 3600, ge=60)
    jwks_cache_seconds: int = 300
    jwks_min_refresh_seconds: float = Field(default=30.0, ge=0)  # unknown `kid`: refetch at most this often
    token_ttl_seconds: int = Field(default=3600, ge=60)  # tokens the token endpoint mints for local accounts

    # Sign-in (the OC4 token endpoint and the console): attempts allowed per username, and per client
    # address (only a bound on the volume of guessing from one place), within the window before 429.
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=100, ge=1)
    login_window_seconds: float = Field(default=15 * 60.0, gt=0)
    # Reverse proxies (CIDRs) whose X-Forwarded-For / Forwarded header names the client; from any
    # other peer those headers are ignored and the peer is the client. Empty: no proxy is trusted.
    trusted_proxies: list[str] = []
    # The one header those proxies write (the other is ignored, whatever a client put in it).
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    console_idle_seconds: float = Field(default=30 * 60.0, gt=0)  # a console session unused this long ends
    # and every session ends this long after sign-in
    console_max_seconds: float = Field(default=8 * 3600.0, gt=0)

    # Personal data at rest (docs/data-protection.md): the key-encryption key that wraps the data
    # keys, either 32 random bytes in base64 (`openssl rand -base64 32`) or an AWS KMS key (id,
    # ARN or alias; credentials the usual AWS way). No default: `serve` and `worker` refuse to start
    # without one; `participants dev` makes a local one in <data_dir>/kek.
    kek: str | None = None
    kms_key_id: str | None = None
    kms_region: str | None = None  # default: AWS_REGION / AWS_DEFAULT_REGION
    kms_endpoint: str | None = None  # a KMS-compatible endpoint other than AWS's (tests use moto)
    # Every process re-reads the data keys this often: a rotation's new key is used everywhere
    # within it (the rotation waits twice this long before re-encrypting).
    key_refresh_seconds: float = Field(default=5.0, gt=0)

    # Object storage for extract files and bulk uploads.
    storage_backend: Literal["local", "s3"] = "local"
    storage_path: Path | None = None  # local backend; default <data_dir>/storage
    s3_endpoint: str | None = None
    s3_bucket: str = "participants"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_allow_http: bool = False
    # Server-side encryption of every object written (extracts, uploads, results): AES256 (SSE-S3)
    # or aws:kms (SSE-KMS, with the key id below, or the bucket's default key when empty).
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    s3_sse_kms_key_id: str | None = None

    # Jobs.
    job_retention_hours: float = 24.0
    extract_queue: str = "participants:extract"
    default_queue: str = "participants:default"
    extract_job_timeout_seconds: int = 30
    # other jobs (bulk uploads); a killed worker's job runs again after this + 10 s
    default_job_timeout_seconds: int = Field(default=300, ge=1)
    worker_poll_delay: float = 0.05
    # Extracts: progress/heartbeat/cancel checks while streaming, the sweeper's thresholds.
    job_heartbeat_seconds: float = Field(default=1.0, gt=0)
    job_requeue_after_seconds: float = Field(default=5.0, gt=0)  # IN_QUEUE this long: make sure arq has it
    # Every worker beats for all its jobs every job_heartbeat_seconds, whatever they are waiting on:
    # a job silent this long has a dead (or stuck) worker and runs again elsewhere (the attempt
    # number fences the old one's writes). Extracts and other jobs (bulk uploads) separately.
    job_stale_seconds: float = Field(default=5.0, gt=0)
    extract_stale_seconds: float = Field(default=5.0, gt=0)
    # Unfinished (queued or running) jobs one user may have at once; beyond it a submit is 429.
    # An Idempotency-Key's answer is replayed for this long; a claim whose request never finished
    # (its process died) is taken over after the lease, which must exceed any request's duration.
    idempotency_retention_seconds: float = Field(default=24 * 3600.0, gt=0)
    idempotency_lease_seconds: float = Field(default=600.0, gt=0)
    max_active_jobs_per_user: int = Field(default=1000, ge=1)  # an abuse guard: a nightly sync fits
    job_max_attempts: int = Field(default=5, ge=1)
    # concurrent jobs per default-queue worker (bulk: 2 connections each)
    default_max_jobs: int = Field(default=10, ge=1)
    # Concurrent extracts per worker (each holds one connection): a small extract spends most of its
    # time waiting on round trips, so more in flight overlap them (bench/many_extracts.py: 4 -> 8).
    extract_max_jobs: int = Field(default=8, ge=1)
    storage_timeout_seconds: float = Field(default=30.0, gt=0)  # S3 retries give up after this

    # The Participate portal participants sign in to (OC4's Participate module URL), e.g.
    # https://portal.example.org: access links are `{participate_url}/?accessCode={code}`. Unset: no
    # access links can be built (409 participateUrlNotConfigured), never a made-up host.
    participate_url: str | None = None

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

    # OC4 answers a download poll of an unfinished job with 200 and an errorCode.jobInProgress body;
    # false answers 409 instead.
    oc4_polling_compat: bool = True

    # /metrics reads job counts from Postgres and Redis at most this often per API process; scrapes
    # in between (and scrapes arriving together) share the last reading.
    metrics_refresh_seconds: float = Field(default=5.0, ge=0)
    # When set, a scrape must send `Authorization: Bearer <token>`; unset, /metrics is open (keep it
    # behind the network edge then).
    metrics_token: str | None = None

    # Invitations (docs/invitations.md). Email goes out over SMTP when a host and a from address are
    # set; SMS through a Twilio-compatible API when an account, a token and a sender are. Without
    # them, asking for an invitation on that channel is a 409, never a message that cannot go.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"  # tls: implicit TLS (port 465)
    smtp_user: str | None = None
    smtp_password: str | None = None
    mail_from: str | None = None  # e.g. "Juno study <no-reply@example.org>"
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    sms_base_url: str = "https://api.twilio.com"
    sms_account_sid: str | None = None
    sms_auth_token: str | None = None
    sms_from: str | None = None  # the sending number (E.164) or alphanumeric sender id
    sms_timeout_seconds: float = Field(default=15.0, gt=0)
    invitation_retry_hours: float = Field(default=24.0, gt=0)  # give up this long after queueing
    invitation_backoff_base_seconds: float = Field(default=30.0, gt=0)
    invitation_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    invitation_lease_seconds: float = Field(default=120.0, gt=0)  # an attempt's claim; above the timeouts

    # Each worker process refreshes its own heartbeat this often (`participants worker-health`).
    worker_health_interval_seconds: float = Field(default=10.0, gt=0)

    log_level: str = "INFO"
    log_json: bool = True

    # Failover. Redis through Sentinel: the sentinels as "host:port,host:port" and the name they
    # watch the master under; then PARTICIPANTS_REDIS_URL only supplies the database number, user and
    # password (its host is not used). Every Redis call gives up after these timeouts (a server that
    # stops answering is a 503 within them, never a hung request); a refused or dropped connection
    # is tried again this many times, a short backoff apart, before the caller sees the error.
    redis_sentinels: Annotated[list[str], NoDecode] = []
    redis_sentinel_master: str = "mymaster"
    redis_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    redis_retries: int = Field(default=3, ge=0)
    # A job whose dependency (Postgres, Redis, object storage) failed mid-run goes back to the queue
    # and runs again after this long, doubling with each attempt (up to job_max_attempts).
    job_retry_delay_seconds: float = Field(default=1.0, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # a ValueError here names the bad entry
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _host_ports(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for entry in value:
                host, _, port = str(entry).rpartition(":")
                if not host or not port.isdigit():
                    raise ValueError(f"a sentinel is host:port, not {entry!r}")
        return value

    @field_validator(
        "jwt_secret",
        "kek",
        "kms_key_id",
        "kms_region",
        "kms_endpoint",
        "oidc_issuer",
        "oidc_audience",
        "oidc_client_id",
        "oidc_client_secret",
        "jwks_url",
        "metrics_token",
        "participate_url",
    )
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # docker-compose's `${X:-}` passes an empty string for an unset variable.
        return value or None

    @model_validator(mode="after")
    def _stale_outlasts_heartbeats(self) -> Settings:
        # A threshold within a couple of heartbeats would take live jobs over from their workers.
        if min(self.extract_stale_seconds, self.job_stale_seconds) < 2 * self.job_heartbeat_seconds:
            raise ValueError(
                "extract_stale_seconds and job_stale_seconds must be at least 2 x job_heartbeat_seconds"
            )
        return self

    @field_validator(
        "smtp_host",
        "smtp_user",
        "smtp_password",
        "mail_from",
        "sms_account_sid",
        "sms_auth_token",
        "sms_from",
    )
    @classmethod
    def _empty_transport_is_unset(cls, value: str | None) -> str | None:
        return value or None  # docker-compose's `${X:-}`, as above

    @model_validator(mode="after")
    def _smtp_credentials_over_tls(self) -> Settings:
        # A password is never sent over a connection anyone on the path can read.
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ValueError("smtp_user and smtp_password go together")
        if self.smtp_user is not None and self.smtp_security == "none":
            raise ValueError("smtp_user needs smtp_security starttls or tls")
        return self

    @property
    def oidc_expected_audience(self) -> str | None:
        return self.oidc_audience or self.oidc_client_id

    @property
    def storage_dir(self) -> Path:
        return self.storage_path or (self.data_dir / "storage")
