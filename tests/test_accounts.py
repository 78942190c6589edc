"""Local accounts and login throttling, against real Postgres and Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from service.core import accounts
from service.core.errors import ApiError
from service.core.throttle import LoginThrottle

PASSWORD = "correct horse battery"


async def test_set_and_verify_password(pool, world):
    await world.user("alice")
    async with pool.acquire() as conn:
        assert not await accounts.has_password(conn, "alice")
        assert not await accounts.verify_password(conn, "alice", PASSWORD)  # no password yet
        await accounts.set_password(conn, "alice", PASSWORD)
        assert await accounts.has_password(conn, "alice")
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE username = 'alice'")
        assert stored.startswith("$argon2id$") and PASSWORD not in stored
        assert await accounts.verify_password(conn, "alice", PASSWORD)
        assert not await accounts.verify_password(conn, "alice", PASSWORD + "!")
        assert not await accounts.verify_password(conn, "alice", "")
        assert not await accounts.verify_password(conn, "Alice", PASSWORD)  # usernames are exact
        assert not await accounts.verify_password(conn, "nobody", PASSWORD)
        await accounts.clear_password(conn, "alice")
        assert not await accounts.verify_password(conn, "alice", PASSWORD)


async def test_password_rules(pool, world):
    await world.user("bob")
    async with pool.acquire() as conn:
        with pytest.raises(ApiError) as err:
            await accounts.set_password(conn, "bob", "eleven-char")
        assert err.value.code == "passwordTooShort" and err.value.status == 400
        with pytest.raises(ApiError) as err:
            await accounts.set_password(conn, "bob", "x" * (accounts.MAX_PASSWORD_LENGTH + 1))
        assert err.value.code == "passwordTooLong"
        with pytest.raises(ApiError) as err:
            await accounts.set_password(conn, "nobody", PASSWORD)
        assert err.value.code == "userNotFound" and err.value.status == 404
        await accounts.set_password(conn, "bob", "twelve-chars")  # exactly the minimum
        assert await accounts.verify_password(conn, "bob", "twelve-chars")


async def test_a_disabled_user_cannot_sign_in(pool, world):
    await world.user("carol")
    async with pool.acquire() as conn:
        await accounts.set_password(conn, "carol", PASSWORD)
        has_column = await conn.fetchval(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'disabled'"
        )
        if not has_column:  # user administration not migrated in: emulate its column in this transaction
            tr = conn.transaction()
            await tr.start()
            await conn.execute("ALTER TABLE users ADD COLUMN disabled boolean NOT NULL DEFAULT false")
        try:
            await conn.execute("UPDATE users SET disabled = true WHERE username = 'carol'")
            assert not await accounts.verify_password(conn, "carol", PASSWORD)
            await conn.execute("UPDATE users SET disabled = false WHERE username = 'carol'")
            assert await accounts.verify_password(conn, "carol", PASSWORD)
        finally:
            if not has_column:
                await tr.rollback()


async def test_an_old_hash_is_upgraded_on_sign_in(pool, world):
    import argon2

    await world.user("dave")
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE users SET password_hash = $1 WHERE username = 'dave'", weak)
        assert await accounts.verify_password(conn, "dave", PASSWORD)
        upgraded = await conn.fetchval("SELECT password_hash FROM users WHERE username = 'dave'")
        assert upgraded != weak and "m=65536" in upgraded


@pytest.fixture
async def redis(redis_url, pool):  # `pool` makes the autouse fixture flush Redis first
    r = Redis.from_url(redis_url)
    yield r
    await r.aclose()


class Undecided(Exception):
    """Raised by a verify: the attempt was allowed, and is given back."""


async def _wrong(t: LoginThrottle, username: str, address: str | None) -> None:
    async def no() -> bool:
        return False

    assert not await t.attempt(username, address, no)


async def _allowed(t: LoginThrottle, username: str, address: str | None) -> bool:
    """Whether an attempt would be checked now (it is given back, so asking changes nothing)."""

    async def undecided() -> bool:
        raise Undecided

    try:
        await t.attempt(username, address, undecided)
    except Undecided:
        return True
    except ApiError as err:
        assert err.status == 429 and err.code == "tooManyAttempts"
        return False
    raise AssertionError("verify was not called")


async def _right(t: LoginThrottle, username: str, address: str | None) -> None:
    async def yes() -> bool:
        return True

    assert await t.attempt(username, address, yes)


async def test_throttle_by_username_and_by_address(redis):
    # The address budget is its own (100 by default); five here, to see it work.
    t = LoginThrottle(redis, max_failures=5, window_seconds=900, address_max_failures=5)
    for _ in range(4):
        await _wrong(t, "erin", "10.0.0.1")
    assert await _allowed(t, "erin", "10.0.0.1")  # four failures: still allowed
    await _wrong(t, "erin", "10.0.0.2")  # fifth for erin, from another address
    with pytest.raises(ApiError) as err:
        await _wrong(t, "erin", "10.0.0.3")
    assert err.value.status == 429 and err.value.code == "tooManyAttempts"
    assert 890 <= int(err.value.headers["Retry-After"]) <= 900
    assert await _allowed(t, "frank", "10.0.0.2")  # other users from those addresses are fine
    # The address budget: five failures from one address over different usernames.
    for name in ("u1", "u2", "u3", "u4", "u5"):
        await _wrong(t, name, "10.0.0.9")
    assert not await _allowed(t, "someone-else", "10.0.0.9")
    # No username or address in the keys.
    keys = [k.decode() for k in await redis.keys("*")]
    assert keys and not [k for k in keys if "erin" in k or "10.0.0" in k]


async def test_success_clears_the_username_and_its_failures_on_the_address(redis):
    t = LoginThrottle(redis, max_failures=2, window_seconds=900, address_max_failures=3)
    await _wrong(t, "gina", "10.1.0.1")
    await _wrong(t, "gina", "10.1.0.1")
    assert not await _allowed(t, "gina", "10.1.0.2")  # gina's budget is spent wherever she is
    await t.clear("gina", "10.1.0.1")  # what a success does: her failures go, on the address too
    assert await _allowed(t, "gina", "10.1.0.2")
    # Another user's failures on the address survive gina's success there.
    await _wrong(t, "ivan", "10.1.0.1")
    await _wrong(t, "gina", "10.1.0.1")
    await _right(t, "gina", "10.1.0.1")
    await _wrong(t, "jo", "10.1.0.1")
    assert await _allowed(t, "kim", "10.1.0.1")  # ivan's and jo's: two of three
    await _wrong(t, "lee", "10.1.0.1")
    assert not await _allowed(t, "kim", "10.1.0.1")  # ivan's was kept: three


async def test_failures_expire_after_the_window(redis):
    t = LoginThrottle(redis, max_failures=1, window_seconds=1)
    await _wrong(t, "hal", None)
    assert not await _allowed(t, "hal", None)
    await asyncio.sleep(1.2)
    assert await _allowed(t, "hal", None)
