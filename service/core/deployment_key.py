"""The deployment's one secret of its own: 32 random bytes kept in Redis, made once.

What it keys:
- the digest of a username in sign-in log lines (``user_digest``: HMAC-SHA256, so a list of likely
  usernames does not find a person in the logs without the key);
- the console's signed, stateless tokens (``sign``/``unsign``): the login form's CSRF token and the
  identity provider flow's state, kept in the browser's cookies instead of in Redis.

Why Redis and not ``JWT_SECRET``: a deployment that only uses an identity provider has no JWT
secret, and an OIDC client secret is optional (a public client with PKCE). Every process of a
deployment shares the Redis, so the first one to start writes the key (``SET NX``) and all read the
same one; it has no TTL. If Redis loses it, a new one is made: the login forms open at that moment
must be reloaded and digests in the logs change from then on (console sessions are gone with Redis
anyway). A copy of Redis can compute the digests; it could also read the sessions' digests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import weakref

from redis.asyncio import Redis

from service.core.errors import ApiError

REDIS_KEY = "participants:deployment-key"
DIGEST_HEX = 12

_cache: weakref.WeakKeyDictionary[Redis, bytes] = weakref.WeakKeyDictionary()


async def deployment_key(redis: Redis) -> bytes:
    """The deployment's key: read from Redis once per client (made there if absent), then kept."""
    key = _cache.get(redis)
    if key is not None:
        return key
    for _ in range(2):  # twice: the key may be deleted between the two commands
        await redis.set(REDIS_KEY, base64.b64encode(os.urandom(32)), nx=True)
        raw = await redis.get(REDIS_KEY)
        if raw is not None:
            key = _cache[redis] = base64.b64decode(raw)
            return key
    # Something keeps deleting it (an operator's FLUSHALL in a loop?): a clear 503, not a 500.
    raise ApiError("serviceUnavailable", headers={"Retry-After": "5"})


def user_digest(key: bytes, username: str) -> str:
    """What a log line says instead of a username: 12 hex of HMAC-SHA256(key, username)."""
    mac = hmac.new(key, b"log-user\x00" + username.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return mac.hexdigest()[:DIGEST_HEX]


async def log_digest(redis: Redis, username: str) -> str:
    """``user_digest`` under the deployment's key: the one way a sign-in log line names a user."""
    return user_digest(await deployment_key(redis), username)


def _mac(key: bytes, purpose: str, body: str) -> str:
    mac = hmac.new(key, purpose.encode() + b"\x00" + body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign(key: bytes, purpose: str, payload: str, now: float | None = None) -> str:
    """``payload`` (URL-safe text without ``.``), the time (``now``: a test's), and their MAC for
    ``purpose``."""
    body = f"{payload}.{int(time.time() if now is None else now)}"
    return f"{body}.{_mac(key, purpose, body)}"


def unsign(key: bytes, purpose: str, token: str | None, max_age: float) -> str | None:
    """The payload of a token ``sign`` made for ``purpose`` at most ``max_age`` seconds ago, else None."""
    if not token or len(token) > 4096 or not token.isascii():  # not a token sign() made
        return None
    body, _, mac = token.rpartition(".")
    payload, _, stamp = body.rpartition(".")
    if not payload or not stamp.isdigit():
        return None
    if not hmac.compare_digest(_mac(key, purpose, body).encode(), mac.encode()):
        return None
    age = time.time() - int(stamp)
    if not -60 <= age < max_age:  # a minute of clock skew between processes
        return None
    return payload
