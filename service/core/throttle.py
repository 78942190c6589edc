"""Login throttling: too many failed sign-ins for one username or from one client address.

State lives in Redis (one sorted set of failure times per username and per address), so the limit
holds across every API process. A sliding window: a failure counts for ``window_seconds`` after it
happened. Usernames are hashed before they become keys, so Redis holds no account names.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid

from redis.asyncio import Redis

from service.core.errors import ApiError

DEFAULT_MAX_FAILURES = 5
DEFAULT_WINDOW_SECONDS = 15 * 60
KEY_PREFIX = "participants:login-failures:"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LoginThrottle:
    def __init__(
        self,
        redis: Redis,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        prefix: str = KEY_PREFIX,
    ) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.window = float(window_seconds)
        self.prefix = prefix

    def _keys(self, username: str | None, address: str | None) -> list[str]:
        keys = []
        if username is not None:
            # Case-folded: "Admin" and "admin" share one budget whatever the directory thinks.
            keys.append(self.prefix + "user:" + _digest(username.casefold()))
        if address:
            keys.append(self.prefix + "addr:" + _digest(address))
        return keys

    async def retry_after(self, username: str | None, address: str | None) -> int:
        """Seconds until another attempt is allowed; 0 when one is allowed now."""
        now = time.time()
        wait = 0.0
        pipe = self.redis.pipeline(transaction=False)
        keys = self._keys(username, address)
        for key in keys:
            pipe.zremrangebyscore(key, "-inf", now - self.window)
            # The failure whose expiry brings the count back under the limit.
            pipe.zrange(key, -self.max_failures, -self.max_failures, withscores=True)
        results = await pipe.execute()
        for i in range(len(keys)):
            edge = results[2 * i + 1]
            if edge:
                wait = max(wait, edge[0][1] + self.window - now)
        return math.ceil(wait) if wait > 0 else 0

    async def check(self, username: str | None, address: str | None) -> None:
        """Raise 429 ``tooManyAttempts`` with ``Retry-After`` while either budget is spent."""
        wait = await self.retry_after(username, address)
        if wait:
            raise ApiError("tooManyAttempts", {"retryAfterSeconds": wait}, headers={"Retry-After": str(wait)})

    async def record_failure(self, username: str | None, address: str | None) -> None:
        now = time.time()
        # Each failure is a unique member (two in one instant both count) that names the username's
        # digest, so a later success can forgive that username's failures on the address too.
        member = f"{_digest((username or '').casefold())}:{uuid.uuid4().hex}"
        pipe = self.redis.pipeline(transaction=False)
        for key in self._keys(username, address):
            pipe.zadd(key, {member: now})
            pipe.zremrangebyscore(key, "-inf", now - self.window)
            pipe.expire(key, math.ceil(self.window))
        await pipe.execute()

    async def clear(self, username: str, address: str | None = None) -> None:
        """After a successful sign-in: forget the username's failures, and on ``address`` only the
        failures for this username (a typo before the right password). Failures for other usernames
        stay: one good account must not reset a client that is guessing at others."""
        user_key, *addr_key = self._keys(username, address)
        await self.redis.delete(user_key)
        if addr_key:
            prefix = _digest(username.casefold()).encode() + b":"
            members = [m for m in await self.redis.zrange(addr_key[0], 0, -1) if m.startswith(prefix)]
            if members:
                await self.redis.zrem(addr_key[0], *members)
