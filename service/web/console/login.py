"""Signing in and out of the console.

Local accounts: the form posts ``username`` and ``password``; the password is checked by
``core.accounts`` (argon2id; disabled users refused) behind the same login throttle as the token
endpoint (one budget per username and per client address, shared in Redis). With
``PARTICIPANTS_OIDC_ISSUER`` and ``PARTICIPANTS_OIDC_CLIENT_ID`` set, "Sign in with your
organisation" runs the authorization code flow with PKCE (``oidc_login``). Either way a new session
is made on success (the anonymous one is ended), and the username never appears in a log line, only
a digest of it.
"""

from __future__ import annotations

import hashlib
import logging

from aiohttp import web

from service.core import accounts
from service.core.errors import ApiError
from service.web.clients import client_address
from service.web.console.guard import SESSIONS, check_csrf, clear_cookie, current_session, set_cookie
from service.web.console.render import redirect, render
from service.web.console.sessions import SESSION
from service.web.resources import DB, LOGIN_THROTTLE, OIDC, SETTINGS, TRUSTED_PROXIES

log = logging.getLogger("participants.signin")


def _digest(username: str) -> str:
    return hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def oidc_enabled(request: web.Request) -> bool:
    return request.config_dict.get(OIDC) is not None and bool(request.config_dict[SETTINGS].oidc_client_id)


async def _login_form(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    session = await current_session(request)
    if session is None or session.username:
        session = await request.config_dict[SESSIONS].new()
    request[SESSION] = session
    context = {"error": error, "oidc": oidc_enabled(request), "local": True}
    response = render(request, "login.html", context, status=status)
    set_cookie(request, response, session)
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is not None and session.username:
        raise redirect(request, "home")
    return await _login_form(request)


async def login_submit(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)  # public route: the anonymous session is checked here
    if session is None:
        raise ApiError("csrfTokenInvalid")
    request[SESSION] = session
    await check_csrf(request, session)
    form = await request.post()
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        return await _login_form(request, "invalidCredentials", 401)
    if len(username) > 255 or "\x00" in username:
        return await _login_form(request, "invalidCredentials", 401)
    address = client_address(request, request.config_dict[TRUSTED_PROXIES])
    fields = {"backend": "console", "user": _digest(username)}

    async def verify() -> bool:  # given the pool: no connection held while hashing
        return await accounts.verify_password(request.config_dict[DB], username, password)

    try:
        ok = await request.config_dict[LOGIN_THROTTLE].attempt(username, address, verify)
    except ApiError as err:
        if err.code != "tooManyAttempts":
            raise
        log.warning("sign-in refused: too many attempts", extra={**fields, "outcome": "throttled"})
        response = await _login_form(request, err.code, err.status)
        response.headers.update(err.headers)
        return response
    if not ok:
        log.info("sign-in failed", extra={**fields, "outcome": "invalid"})
        return await _login_form(request, "invalidCredentials", 401)
    log.info("sign-in", extra={**fields, "outcome": "ok"})
    return await start_session(request, session, username)


async def start_session(request: web.Request, anonymous: object, username: str) -> web.StreamResponse:
    """End the anonymous session, make a signed-in one, send the browser to the console's home."""
    store = request.config_dict[SESSIONS]
    if anonymous is not None:
        await store.end(anonymous)  # type: ignore[arg-type]
    session = await store.new(username)
    response = redirect(request, "home")
    set_cookie(request, response, session)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is not None:
        request[SESSION] = session
        await check_csrf(request, session)
        await request.config_dict[SESSIONS].end(session)
    response = redirect(request, "login")
    clear_cookie(request, response)
    raise response
