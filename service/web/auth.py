"""Who is calling: the name a request's bearer token carries (web/tokens.py verifies it), and the
user behind it, looked up once through ``core.accounts.active_user`` whichever face asks: the job
endpoints' ``current_actor``, every admin endpoint's ``require_admin``. The participant endpoints
read the user with their scope instead (core/roles.py ``load_scope``: one query for both). The name
is an ``Identity`` (it knows when its token was issued), so that one lookup also refuses a token
issued before the user's credentials last changed (401, ``params.reason`` ``revoked``).
"""

from __future__ import annotations

from aiohttp import web

from service.core.accounts import User, active_user
from service.core.audit import Actor
from service.core.errors import ApiError
from service.core.roles import Identity
from service.web.input import accept_query
from service.web.resources import DB
from service.web.tokens import TOKEN_VERIFIER


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>``; the scheme is case-insensitive (seeds write ``bearer``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    # A JWT is ASCII: anything else (a byte aiohttp could not decode) is no token, not a 500.
    if scheme.lower() != "bearer" or not token or len(token) > 16384 or not token.isascii():
        raise ApiError("unauthenticated")
    return token


async def authenticated_username(request: web.Request) -> Identity:
    """The name the request's bearer token carries, with its issue time (401 without a valid one:
    no token at all is a plain ``WWW-Authenticate: Bearer``, a refused one says why)."""
    return await request.config_dict[TOKEN_VERIFIER].username(bearer_token(request))


async def current_actor(request: web.Request) -> Actor:
    """The caller as an actor on their own jobs: the id is None for a name unknown here or a
    disabled user, who then owns nothing (their job lookups answer as for unknown jobs)."""
    username = await authenticated_username(request)
    user = await active_user(request.config_dict[DB], username)
    return Actor(user.id if user else None, username)


async def require_admin(request: web.Request) -> User:
    """The caller, if the caller is an admin; 401/403 otherwise. The admin API's query strings
    are checked here too, once the caller may act (OC4's order: who before what)."""
    user = await active_user(request.config_dict[DB], await authenticated_username(request))
    if user is None:
        raise ApiError("noRoleSetUp")
    if not user.admin:
        raise ApiError("noSufficientPrivileges")
    accept_query(request)
    return user
