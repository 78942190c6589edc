"""The pure rules of Standard Webhooks v1 as this service applies them: secrets and signatures, the
retry schedule, and what a receiver's answer means. No I/O here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from service.core.webhooks.models import Outcome
from service.settings import Settings

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
EXCERPT_CHARS = 500


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (Standard Webhooks v1)."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()).decode()


def signature_header(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per active secret, space-separated: receivers accept any that matches."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def backoff_seconds(attempt: int, settings: Settings, rand: Callable[[], float] = random.random) -> float:
    """Delay after failed attempt number ``attempt`` (1-based): exponential, capped, with ±25% jitter."""
    base: float = settings.webhook_backoff_base_seconds * 2 ** min(attempt - 1, 40)
    return min(base, settings.webhook_backoff_max_seconds) * (0.75 + 0.5 * rand())


def classify(http_status: int) -> Outcome:
    if 200 <= http_status < 300:
        return "success"
    if http_status == 410:
        return "gone"
    return "http_error"  # 3xx (never followed), 4xx, 5xx: a failed attempt, retried


def next_attempt_at(
    attempt: int,
    now: datetime,
    retry_until: datetime,
    settings: Settings,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> datetime | None:
    """When to try again after failed attempt ``attempt``; None once the retry window is over.

    ``Retry-After`` (from a 429 or 5xx) replaces the computed backoff, within the same cap. The last
    attempt is made at the end of the window rather than skipped.
    """
    if now >= retry_until:
        return None
    if retry_after is not None:
        delay = min(max(retry_after, 1.0), settings.webhook_backoff_max_seconds)
    else:
        delay = backoff_seconds(attempt, settings, rand)
    return min(now + timedelta(seconds=delay), retry_until)


def excerpt(body: bytes) -> str:
    """The start of a receiver's answer, storable whatever it holds (Postgres text refuses NUL)."""
    return body[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS].replace("\x00", "\ufffd")
