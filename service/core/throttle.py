"""Login throttling: too many failed sign-ins for one username or from one client address.

State lives in Redis (one sorted set of failure times per username and per address), so the limit
holds across every API process. A sliding window: a failure counts for ``window_seconds`` after it
happened. Usernames are hashed before they become keys, so Redis holds no account names.

Two budgets: per username (``max_failures``, 5 by default: guessing one account's password) and per
client address (``address_max_failures``, 100 by default: only the volume of guessing from one
place). One person's typos behind a hospital's NAT never refuse a colleague's right password.

An attempt is counted before the password is checked (``attempt``): one Redis script trims the
windows, refuses when a budget is spent and otherwise records the attempt, atomically. So N parallel
guesses check at most the budget's worth of passwords; a success forgives the username's failures,
an attempt that could not be decided (the identity provider down) is given back.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from service.core.errors import ApiError
from service.core.redis import eval_script

DEFAULT_MAX_FAILURES = 5
DEFAULT_ADDRESS_MAX_FAILURES = 100
DEFAULT_WINDOW_SECONDS = 15 * 60
KEY_PREFIX = "participants:login-failures:"

# KEYS: the budgets' sorted sets. ARGV: now, window, the attempt's member, then each key's limit.
# Returns "0" when the attempt is recorded in every set, else the seconds to wait (as text: Lua
# would truncate a number to an integer).
RESERVE_SCRIPT = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local edge = redis.call('ZRANGE', key, -limit, -limit, 'WITHSCORES')
    local w = tonumber(edge[2]) + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return tostring(wait) end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
end
return '0'
"""


def too_many(wait: float) -> ApiError:
    seconds = max(1, math.ceil(wait))
    return ApiError("tooManyAttempts", {"retryAfterSeconds": seconds}, headers={"Retry-After": str(seconds)})


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LoginThrottle:
    def __init__(
        self,
        redis: Redis,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        prefix: str = KEY_PREFIX,
        address_max_failures: int = DEFAULT_ADDRESS_MAX_FAILURES,
    ) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.address_max_failures = address_max_failures
        self.window = float(window_seconds)
        self.prefix = prefix

    def _limits(self, username: str | None, address: str | None) -> list[int]:
        """Each key's limit, in ``_keys`` order."""
        return ([self.max_failures] if username is not None else []) + (
            [self.address_max_failures] if address else []
        )

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
        for key, limit in zip(keys, self._limits(username, address), strict=True):
            pipe.zremrangebyscore(key, "-inf", now - self.window)
            # The failure whose expiry brings the count back under the limit.
            pipe.zrange(key, -limit, -limit, withscores=True)
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
            raise too_many(wait)

    @staticmethod
    def _member(username: str | None) -> str:
        # Each attempt is a unique member (two in one instant both count) that names the username's
        # digest, so a later success can forgive that username's failures on the address too.
        return f"{_digest((username or '').casefold())}:{uuid.uuid4().hex}"

    async def attempt(
        self, username: str, address: str | None, verify: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Count an attempt (429 ``tooManyAttempts`` if a budget is spent), then ``verify`` it. A
        success forgives the username's failures; a failure stays counted; an attempt whose
        ``verify`` raised (nothing decided) is given back."""
        member = self._member(username)
        keys = self._keys(username, address)
        wait = float(
            await eval_script(
                self.redis,
                RESERVE_SCRIPT,
                keys,
                time.time(),
                self.window,
                member,
                *self._limits(username, address),
            )
        )
        if wait > 0:
            raise too_many(wait)
        try:
            ok = await verify()
        except BaseException:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.zrem(key, member)
            await pipe.execute()
            raise
        if ok:
            await self.clear(username, address)
        return ok

    async def record_failure(self, username: str | None, address: str | None) -> None:
        now = time.time()
        member = self._member(username)
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
