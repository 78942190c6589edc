""" "Sign in with your organisation": the OpenID Connect authorization code flow with PKCE (RFC 7636).

``start`` puts a fresh ``state``, ``nonce`` and PKCE verifier in a cookie signed with the
deployment's key (``core.deployment_key``; ``HttpOnly``, ``SameSite=Lax`` so that it comes back on the
provider's redirect, valid ``FLOW_SECONDS``) and sends the browser to the provider: nothing is kept
in Redis for a visitor who has not signed in. ``callback`` checks the cookie's signature and age and
its ``state`` against the query's, drops the cookie (a flow is good for one try), exchanges the code
(with the verifier) at the provider's token endpoint, and verifies the access token exactly as the API
verifies bearer tokens (signature, issuer, audience, expiry), which also names the user through
the configured username claim. The user must exist here and not be disabled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from typing import NoReturn
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from service.core.accounts import active_user
from service.core.deployment_key import deployment_key, sign, unsign
from service.core.errors import ApiError
from service.web.console.guard import current_session
from service.web.console.login import (
    clear_signed_cookie,
    oidc_enabled,
    set_signed_cookie,
    start_session,
)
from service.web.console.render import error_page, page_url, redirect
from service.web.oidc import FETCH_TIMEOUT, ProviderUnavailable
from service.web.resources import DB, OIDC, REDIS, SETTINGS
from service.web.tokens import TOKEN_VERIFIER

log = logging.getLogger("participants.signin")

FLOW_COOKIE = "participants_console_oidc"
FLOW_PURPOSE = "console-oidc-flow"
FLOW_SECONDS = 15 * 60  # a trip to the identity provider that takes longer starts again


def _callback_url(request: web.Request) -> str:
    public = request.config_dict[SETTINGS].public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return public + page_url(request, "oidc_callback")


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def start(request: web.Request) -> web.StreamResponse:
    if not oidc_enabled(request):
        raise ApiError("notFound")
    session = await current_session(request)
    if session is not None and session.username:
        raise redirect(request, "home")  # signed in already: nothing to do, nothing ended
    # ProviderUnavailable, here or in the callback, is the console's 503 page (guard.py).
    metadata = await request.config_dict[OIDC].metadata()
    endpoint = metadata.get("authorization_endpoint")
    if not isinstance(endpoint, str):
        raise ProviderUnavailable("the discovery document has no authorization_endpoint")
    flow = {
        "state": secrets.token_urlsafe(24),
        "nonce": secrets.token_urlsafe(24),
        "verifier": secrets.token_urlsafe(48),
    }
    key = await deployment_key(request.config_dict[REDIS])
    cookie = sign(key, FLOW_PURPOSE, "~".join((flow["state"], flow["nonce"], flow["verifier"])))
    query = {
        "response_type": "code",
        "client_id": request.config_dict[SETTINGS].oidc_client_id or "",
        "redirect_uri": _callback_url(request),
        "scope": "openid",
        "state": flow["state"],
        "nonce": flow["nonce"],
        "code_challenge": _challenge(flow["verifier"]),
        "code_challenge_method": "S256",
    }
    response = web.HTTPFound(endpoint + ("&" if "?" in endpoint else "?") + urlencode(query))
    set_signed_cookie(request, response, FLOW_COOKIE, cookie, FLOW_SECONDS)
    raise response


async def _exchange(request: web.Request, code: str, verifier: str) -> str:
    s = request.config_dict[SETTINGS]
    endpoint = (await request.config_dict[OIDC].metadata())["token_endpoint"]
    form = {
        "grant_type": "authorization_code", "code": code, "redirect_uri": _callback_url(request),
        "client_id": s.oidc_client_id or "", "code_verifier": verifier,
    }  # fmt: skip
    if s.oidc_client_secret:
        form["client_secret"] = s.oidc_client_secret
    try:
        post = request.config_dict[OIDC].session.post(
            endpoint, data=form, timeout=FETCH_TIMEOUT, allow_redirects=False
        )
        async with post as resp:
            body = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ProviderUnavailable(f"token endpoint: {type(exc).__name__}") from None
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        log.warning("console sign-in: the code was refused (status %s)", status)
        raise ApiError("invalidCredentials")
    return body["access_token"]


async def callback(request: web.Request) -> web.StreamResponse:
    try:
        return await _callback(request)
    except ApiError as err:  # the flow is over either way: its cookie goes with the error page
        response = error_page(request, err)
        clear_signed_cookie(request, response, FLOW_COOKIE)
        return response


def _refused() -> NoReturn:
    raise ApiError("csrfTokenInvalid")


async def _callback(request: web.Request) -> web.StreamResponse:
    key = await deployment_key(request.config_dict[REDIS])
    payload = unsign(key, FLOW_PURPOSE, request.cookies.get(FLOW_COOKIE), FLOW_SECONDS)
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if payload is None or not code:
        _refused()
    parts = payload.split("~")
    if len(parts) != 3:
        _refused()
    expected, _nonce, verifier = parts
    if not hmac.compare_digest(expected.encode(), state.encode()):
        _refused()
    token = await _exchange(request, code, verifier)
    username = await request.config_dict[TOKEN_VERIFIER].username(token)
    if await active_user(request.config_dict[DB], username) is None:
        log.info("console sign-in refused: unknown or disabled user", extra={"backend": "oidc"})
        raise ApiError("noRoleSetUp")
    log.info("sign-in", extra={"backend": "oidc", "outcome": "ok"})
    return await start_session(request, username, FLOW_COOKIE)
