""" "Sign in with your organisation": the OpenID Connect authorization code flow with PKCE (RFC 7636).

``start`` keeps a fresh ``state``, ``nonce`` and PKCE verifier in the browser's anonymous session
and sends the browser to the provider; ``callback`` checks ``state``, exchanges the code (with the
verifier) at the provider's token endpoint, and verifies the access token exactly as the API
verifies bearer tokens (signature, issuer, audience, expiry), which also names the user through
the configured username claim. The user must exist here and not be disabled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from service.core.accounts import active_user
from service.core.errors import ApiError
from service.web.console.guard import SESSIONS, current_session, set_cookie
from service.web.console.login import oidc_enabled, start_session
from service.web.console.render import page_url
from service.web.console.sessions import SESSION
from service.web.oidc import FETCH_TIMEOUT, ProviderUnavailable
from service.web.resources import DB, OIDC, SETTINGS
from service.web.tokens import TOKEN_VERIFIER

log = logging.getLogger("participants.signin")


def _callback_url(request: web.Request) -> str:
    public = request.config_dict[SETTINGS].public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return public + page_url(request, "oidc_callback")


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def start(request: web.Request) -> web.StreamResponse:
    if not oidc_enabled(request):
        raise ApiError("notFound")
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
    session = await current_session(request)
    store = request.config_dict[SESSIONS]
    if session is None or session.username:
        session = await store.new(data={"oidc": flow})
    else:
        session.data["oidc"] = flow
        await store.save(session)
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
    set_cookie(request, response, session)
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
    session = await current_session(request)
    flow = session.data.get("oidc") if session is not None and not session.username else None
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if session is None or not isinstance(flow, dict) or not code:
        raise ApiError("csrfTokenInvalid")
    request[SESSION] = session
    if not hmac.compare_digest(str(flow["state"]).encode(), state.encode()):
        raise ApiError("csrfTokenInvalid")
    session.data.pop("oidc", None)
    await request.config_dict[SESSIONS].save(session)  # a code is good for one try
    token = await _exchange(request, code, str(flow["verifier"]))
    username = await request.config_dict[TOKEN_VERIFIER].username(token)
    if await active_user(request.config_dict[DB], username) is None:
        log.info("console sign-in refused: unknown or disabled user", extra={"backend": "oidc"})
        raise ApiError("noRoleSetUp")
    log.info("sign-in", extra={"backend": "oidc", "outcome": "ok"})
    return await start_session(request, session, username)
