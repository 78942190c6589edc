"""Browser sessions for the console, kept in Redis.

A session is a random token in an ``HttpOnly`` cookie; Redis holds only the token's SHA-256 digest as
the key (a copy of Redis does not hand out live cookies) and, as the value, the username, the
creation time and the session's CSRF token. The key's TTL is the idle timeout and is renewed on
every request; the creation time enforces the absolute lifetime. Signing in always starts a new
session (no fixation). Nothing is stored before a sign-in: the login form's CSRF token and the
OIDC flow's state are signed cookies (login.py, oidc_login.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson
from aiohttp import web
from redis.asyncio import Redis

from service.core.accounts import User

KEY_PREFIX = "participants:console-session:"
COOKIE_NAME = "participants_console"


def _key(token: str) -> str:
    return KEY_PREFIX + hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    token: str
    csrf: str
    created: float
    # Sessions exist only once someone signed in (the sign-in form's token is stateless: login.py).
    username: str

    def csrf_matches(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), str(sent).encode())


# Where the console keeps, for one request, the session and the signed-in user's row.
SESSION = web.RequestKey("console_session", Session)
ACCOUNT = web.RequestKey("console_account", User)


class SessionStore:
    def __init__(self, redis: Redis, idle_seconds: float, max_seconds: float) -> None:
        self.redis = redis
        self.idle = int(idle_seconds)
        self.max = float(max_seconds)

    async def new(self, username: str) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time(), username)
        await self.save(session)
        return session

    async def save(self, session: Session) -> None:
        value = {"u": session.username, "c": session.created, "x": session.csrf}
        await self.redis.set(_key(session.token), orjson.dumps(value), ex=self.idle)

    async def load(self, token: str | None) -> Session | None:
        """The live session for ``token``, its idle timer renewed; None if unknown, idle or too old."""
        if not token or len(token) > 100 or not token.isascii():  # a cookie we never set
            return None
        key = _key(token)
        raw = await self.redis.get(key)
        if raw is None:
            return None
        value = orjson.loads(raw)
        if time.time() - value["c"] >= self.max:
            await self.redis.delete(key)
            return None
        if not value.get("u"):
            await self.redis.delete(key)  # an anonymous session of an earlier version: nobody's
            return None
        session = Session(token, value["x"], value["c"], value["u"])
        # Never past the absolute end: the key vanishes when the session must.
        remaining = max(1, int(session.created + self.max - time.time()))
        await self.redis.expire(key, min(self.idle, remaining))
        return session

    async def end(self, session: Session) -> None:
        await self.redis.delete(_key(session.token))
