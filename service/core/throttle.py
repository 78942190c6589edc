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

    def _budgets(self, username: str, address: str | None) -> list[tuple[str, int]]:
        """Each budget's key and limit: the username's, then the address's (when there is one)."""
        # Case-folded: "Admin" and "admin" share one budget whatever the directory thinks.
        budgets = [(self.prefix + "user:" + _digest(username.casefold()), self.max_failures)]
        if address:
            budgets.append((self.prefix + "addr:" + _digest(address), self.address_max_failures))
        return budgets

    async def attempt(
        self, username: str, address: str | None, verify: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Count an attempt (429 ``tooManyAttempts`` if a budget is spent), then ``verify`` it. A
        success forgives the username's failures; a failure stays counted; an attempt whose
        ``verify`` raised (nothing decided) is given back."""
        # Each attempt is a unique member (two in one instant both count) that names the username's
        # digest, so a later success can forgive that username's failures on the address too.
        member = f"{_digest(username.casefold())}:{uuid.uuid4().hex}"
        budgets = self._budgets(username, address)
        keys = [key for key, _ in budgets]
        limits = [limit for _, limit in budgets]
        wait = float(
            await eval_script(self.redis, RESERVE_SCRIPT, keys, time.time(), self.window, member, *limits)
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

    async def clear(self, username: str, address: str | None = None) -> None:
        """After a successful sign-in: forget the username's failures, and on ``address`` only the
        failures for this username (a typo before the right password). Failures for other usernames
        stay: one good account must not reset a client that is guessing at others."""
        (user_key, _), *address_budget = self._budgets(username, address)
        await self.redis.delete(user_key)
        if address_budget:
            addr_key = address_budget[0][0]
            prefix = _digest(username.casefold()).encode() + b":"
            members = [m for m in await self.redis.zrange(addr_key, 0, -1) if m.startswith(prefix)]
            if members:
                await self.redis.zrem(addr_key, *members)
