"""Signing in and out of the console.

Local accounts: the form posts ``username`` and ``password``; the password is checked by
``core.accounts`` (argon2id; disabled users refused) behind the same login throttle as the token
endpoint (one budget per username and per client address, shared in Redis). With
``PARTICIPANTS_OIDC_ISSUER`` and ``PARTICIPANTS_OIDC_CLIENT_ID`` set, "Sign in with your
organisation" runs the authorization code flow with PKCE (``oidc_login``). Either way a new session
is made on success, and the username never appears in a log line, only a keyed digest of it.

The sign-in page stores nothing: its CSRF token is signed with the deployment's key
(``core.deployment_key``: a random nonce, the time, their HMAC) and sent twice, as an ``HttpOnly``
cookie and as the form's ``csrf`` field. A sign-in needs both, equal, with a valid MAC, made less than
``LOGIN_FORM_SECONDS`` ago. A session exists in Redis only once someone has signed in.
"""

from __future__ import annotations

import hmac
import logging
import secrets

from aiohttp import web

from service.core import accounts
from service.core.deployment_key import deployment_key, log_digest, sign, unsign
from service.core.errors import ApiError
from service.web.clients import client_address
from service.web.console.guard import (
    SESSIONS,
    check_csrf,
    clear_cookie,
    current_session,
    is_https,
    set_cookie,
)
from service.web.console.render import console_path, redirect, render
from service.web.console.sessions import SESSION, Session
from service.web.resources import DB, LOGIN_THROTTLE, OIDC, REDIS, SETTINGS, TRUSTED_PROXIES

log = logging.getLogger("participants.signin")

LOGIN_COOKIE = "participants_console_login"
LOGIN_PURPOSE = "console-login-form"
LOGIN_FORM_SECONDS = 15 * 60  # a sign-in form left open longer must be reloaded


def set_signed_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int
) -> None:
    """A short-lived cookie of the console's own (a signed token, never a credential)."""
    response.set_cookie(
        name, value, path=console_path(request) + "/", max_age=max_age, httponly=True,
        secure=is_https(request), samesite="Lax",
    )  # fmt: skip


def clear_signed_cookie(request: web.Request, response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=console_path(request) + "/")


def oidc_enabled(request: web.Request) -> bool:
    return request.config_dict.get(OIDC) is not None and bool(request.config_dict[SETTINGS].oidc_client_id)


async def _login_form(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    """The form, with a fresh signed token in its field and in a cookie; nothing kept here."""
    key = await deployment_key(request.config_dict[REDIS])
    token = sign(key, LOGIN_PURPOSE, secrets.token_urlsafe(18))
    context = {"error": error, "oidc": oidc_enabled(request), "local": True, "csrf": token}
    response = render(request, "login.html", context, status=status)
    set_signed_cookie(request, response, LOGIN_COOKIE, token, LOGIN_FORM_SECONDS)
    return response


async def _check_login_token(request: web.Request, sent: object) -> None:
    """The form's token must be the cookie's, signed by this deployment, and recent."""
    cookie = request.cookies.get(LOGIN_COOKIE)
    key = await deployment_key(request.config_dict[REDIS])
    if (
        not isinstance(sent, str)
        or not cookie
        or not (sent.isascii() and cookie.isascii())
        or not hmac.compare_digest(sent.encode(), cookie.encode())
        or unsign(key, LOGIN_PURPOSE, sent, LOGIN_FORM_SECONDS) is None
    ):
        log.warning("console sign-in refused: CSRF token missing, wrong or expired")
        raise ApiError("csrfTokenInvalid")


async def login_page(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is not None and session.username:
        raise redirect(request, "home")
    return await _login_form(request)


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()  # public route: the form's token is checked here
    await _check_login_token(request, form.get("csrf"))
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        return await _login_form(request, "invalidCredentials", 401)
    if len(username) > 255 or "\x00" in username:
        return await _login_form(request, "invalidCredentials", 401)
    address = client_address(request, request.config_dict[TRUSTED_PROXIES])
    fields = {"backend": "console", "user": await log_digest(request.config_dict[REDIS], username)}

    async def verify() -> bool:  # given the pool: no connection held while hashing
        return await accounts.verify_password(request.config_dict[DB], username, password, address)

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
    return await start_session(request, username, LOGIN_COOKIE)


async def start_session(request: web.Request, username: str, used_cookie: str) -> web.StreamResponse:
    """End the browser's previous session if it has one, make a signed-in one, drop the sign-in's
    own cookie (``used_cookie``), send the browser to the console's home."""
    store = request.config_dict[SESSIONS]
    previous: Session | None = await current_session(request)
    if previous is not None:
        await store.end(previous)
    session = await store.new(username)
    response = redirect(request, "home")
    clear_signed_cookie(request, response, used_cookie)
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
