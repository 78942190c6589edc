"""Local accounts: argon2id password hashes for the OC4 token endpoint.

Framework-free: functions take an asyncpg connection and plain values. Hashing runs in a thread
(argon2 is deliberately slow and would otherwise stall the event loop for every other request).
Passwords never leave this module except as a hash, and no function logs or raises with one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import argon2
import asyncpg

from service.core import audit
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.roles import check_token_epoch

MIN_PASSWORD_LENGTH = 12
# argon2 is fed the whole password: a cap keeps a megabyte "password" from being a cheap way to
# make the server hash a megabyte.
MAX_PASSWORD_LENGTH = 1024

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile (t=3, m=64 MiB, p=4).
_HASHER = argon2.PasswordHasher()
# Each argon2 computation holds 64 MiB while it runs: at most this many at once per process, so a
# burst of sign-ins queues instead of multiplying memory (and they are CPU-bound anyway).
MAX_CONCURRENT_HASHES = 2
_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)
# Verifications a process holds at most (running, or waiting for one of the MAX_CONCURRENT_HASHES
# slots): past them a sign-in is 503 with Retry-After at once, and its throttle attempt given
# back, instead of queueing without bound.
MAX_HELD_HASHES = MAX_CONCURRENT_HASHES + 16
# One client address holds at most this many of them; its further sign-ins wait their turn in its
# own line (at most LINE_LENGTH of them, then 503), so a spray from one place never fills the
# process and a colleague's sign-in from elsewhere meanwhile finds a slot at once.
MAX_HASHES_PER_ADDRESS = 2
LINE_LENGTH = 32


class _Line:
    def __init__(self, slots: int) -> None:
        self.turn = asyncio.Semaphore(slots)  # wakes its waiters in order of arrival
        self.users = 0  # holding or waiting


class _HashQueue:
    """The verifications this process holds, in all and per client address."""

    def __init__(self, cap: int, per_address: int, line_length: int) -> None:
        self.cap, self.per_address, self.line_length = cap, per_address, line_length
        self.held = 0
        self.lines: dict[str | None, _Line] = {}

    @contextlib.asynccontextmanager
    async def admit(self, address: str | None = None) -> AsyncIterator[None]:
        line = self.lines.get(address)
        if line is None:
            line = self.lines[address] = _Line(self.per_address)
        if line.users >= self.per_address + self.line_length:
            raise _busy()
        line.users += 1
        try:
            async with line.turn:
                if self.held >= self.cap:
                    raise _busy()
                self.held += 1
                try:
                    yield
                finally:
                    self.held -= 1
        finally:
            line.users -= 1
            if not line.users:
                del self.lines[address]


def _busy() -> ApiError:
    return ApiError("serviceUnavailable", {"reason": "signInsBusy"}, headers={"Retry-After": "1"})


HASHES = _HashQueue(MAX_HELD_HASHES, MAX_HASHES_PER_ADDRESS, LINE_LENGTH)

# Verified against when the username is unknown or has no password, so that a wrong username costs
# as much time as a wrong password and timing does not tell which usernames exist.
_DUMMY_HASH = _HASHER.hash("no such user: this hash only burns the same time")


def check_password_rules(password: str) -> None:
    """Raise ``passwordTooShort`` / ``passwordTooLong`` (400) for a password we will not store."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError("passwordTooShort", {"minLength": MIN_PASSWORD_LENGTH})
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ApiError("passwordTooLong", {"maxLength": MAX_PASSWORD_LENGTH})


def hash_password(password: str) -> str:
    """The argon2id PHC string for ``password`` (rules checked first)."""
    check_password_rules(password)
    return _hash(password)


def _hash(password: str) -> str:
    with _SLOTS:
        return _HASHER.hash(password)


def _matches(stored: str, password: str) -> bool:
    try:
        with _SLOTS:
            return _HASHER.verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


async def set_password(conn: asyncpg.Connection, username: str, password: str) -> None:
    """Store ``password`` for ``username``; ``userNotFound`` (404) when there is no such user.
    Ends the user's console sessions and refuses the tokens issued before (the credentials epoch)."""
    await _store_hash(conn, username, await asyncio.to_thread(hash_password, password))


async def change_password(
    db: asyncpg.Pool | asyncpg.Connection, actor: Actor, username: str, password: str
) -> None:
    """An operator sets ``username``'s password (the admin API, ``participants set-password``):
    stored with its audit row ``admin.password.set`` in one transaction. The hash is made first,
    with no connection held (argon2 takes a while and holds 64 MiB)."""
    hashed = await asyncio.to_thread(hash_password, password)
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(db.acquire()) if isinstance(db, asyncpg.Pool) else db
        async with conn.transaction():
            await _store_hash(conn, username, hashed)
            await audit.record_by(conn, actor, "admin.password.set", {"user": username})


async def _store_hash(conn: asyncpg.Connection, username: str, hashed: str) -> None:
    done = await conn.fetchval(
        "UPDATE users SET password_hash = $2, password_changed_at = now(), credentials_changed_at = now()"
        " WHERE username = $1 RETURNING 1",
        username, hashed,
    )  # fmt: skip
    if not done:
        raise ApiError("userNotFound", {"username": username})


async def clear_password(conn: asyncpg.Connection, username: str) -> None:
    """Remove the user's password: they can no longer sign in at the token endpoint, and their
    sessions and earlier tokens end (the credentials epoch)."""
    done = await conn.fetchval(
        "UPDATE users SET password_hash = NULL, password_changed_at = now(), credentials_changed_at = now()"
        " WHERE username = $1 RETURNING 1",
        username,
    )
    if not done:
        raise ApiError("userNotFound", {"username": username})


async def verify_password(
    conn: asyncpg.Connection | asyncpg.Pool, username: str, password: str, address: str | None = None
) -> bool:
    """True only for an existing, enabled user whose stored hash matches ``password``.

    ``address``: the client's, so that one place holds at most ``MAX_HASHES_PER_ADDRESS`` of the
    process's verifications (503 ``signInsBusy`` beyond, as past the process's own cap).

    Given a pool, no connection is held while argon2 runs (a burst of sign-ins would otherwise
    hold the pool's connections waiting for hash slots).

    Unknown users, users without a password and disabled users cost one argon2 verification
    like everyone else and answer False. A hash made with older parameters is upgraded on success.
    """
    async with HASHES.admit(address):
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_LENGTH:
            await asyncio.to_thread(_matches, _DUMMY_HASH, "x")
            return False
        row = await conn.fetchrow("SELECT password_hash, disabled FROM users WHERE username = $1", username)
        stored = row["password_hash"] if row is not None else None
        ok = await asyncio.to_thread(_matches, stored or _DUMMY_HASH, password)
    if not ok or stored is None or row["disabled"]:
        return False
    if _HASHER.check_needs_rehash(stored):
        rehashed = await asyncio.to_thread(_hash, password)
        await conn.execute(
            "UPDATE users SET password_hash = $2 WHERE username = $1 AND password_hash = $3",
            username, rehashed, stored,
        )  # fmt: skip
    return True


async def has_password(conn: asyncpg.Connection, username: str) -> bool:
    sql = "SELECT password_hash IS NOT NULL FROM users WHERE username = $1"
    return bool(await conn.fetchval(sql, username))


@dataclass(frozen=True)
class User:
    """A user who exists here and is not disabled: whom a token or a console session names."""

    id: int
    username: str
    full_name: str
    admin: bool
    # When the user's credentials last changed (Unix seconds): sessions and tokens from before end.
    credentials_changed_at: float = 0.0

    def session_outdated(self, created: float) -> bool:
        """A console session created (``time.time()``) before the last credentials change."""
        return created < self.credentials_changed_at

    @property
    def actor(self) -> Actor:
        return Actor(self.id, self.username)


ACTIVE_USER_SQL = """
SELECT id, username, full_name, admin, date_part('epoch', credentials_changed_at) AS credentials_changed_at
FROM users WHERE username = $1 AND NOT disabled
"""


async def active_user(conn: asyncpg.Connection | asyncpg.Pool, username: str) -> User | None:
    """The one lookup of who is acting: None when the name is unknown here or the user is disabled.
    ``username`` a token's ``Identity`` issued before the user's credentials changed: 401 ``revoked``."""
    row = await conn.fetchrow(ACTIVE_USER_SQL, username)
    if row is None:
        return None
    check_token_epoch(username, row["credentials_changed_at"])
    return User(
        row["id"], row["username"], row["full_name"] or "", row["admin"], row["credentials_changed_at"]
    )


async def revoke_sessions(conn: asyncpg.Connection, username: str) -> None:
    """Sign ``username`` out everywhere: every console session and every token issued before now
    is refused from the next request on. ``userNotFound`` (404) when there is no such user."""
    done = await conn.fetchval(
        "UPDATE users SET credentials_changed_at = now() WHERE username = $1 RETURNING 1", username
    )
    if not done:
        raise ApiError("userNotFound", {"username": username[:255]})
