"""Signing in as OC4 clients do, and setting local passwords.

``POST /user-service/api/oauth/token`` with ``{"username", "password"}`` answers the bearer token as
``text/plain`` (OC4's user-service does exactly this). Two backends, chosen by configuration:
- the identity provider, when ``PARTICIPANTS_OIDC_ISSUER`` and ``PARTICIPANTS_OIDC_CLIENT_ID`` are
  set: the password grant is forwarded to its token endpoint and its access token is the answer;
- else local accounts (argon2id hashes in ``users.password_hash``): the service mints its own
  HS256 token, so ``PARTICIPANTS_JWT_SECRET`` is needed; without it the endpoint is 404.
Both sit behind the login throttle. Attempts are logged with their outcome and a keyed digest of the
username (usernames can be email addresses); the password never reaches a log, an error or Redis.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from service.core import accounts
from service.core.deployment_key import log_digest
from service.core.errors import ApiError
from service.web.apidoc import NO_CONTENT, operation
from service.web.auth import require_admin
from service.web.clients import client_address
from service.web.input import read_json_model
from service.web.oidc import ProviderUnavailable
from service.web.resources import DB, LOGIN_THROTTLE, OIDC, REDIS, SETTINGS, TRUSTED_PROXIES
from service.web.tokens import mint_token

log = logging.getLogger("participants.signin")


class Credentials(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OC4 clients may send more (e.g. a client id)
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=accounts.MAX_PASSWORD_LENGTH)


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The lengths are the password rule's (its own error codes), stated here for clients.
    password: str = Field(
        json_schema_extra={
            "minLength": accounts.MIN_PASSWORD_LENGTH,
            "maxLength": accounts.MAX_PASSWORD_LENGTH,
            "pattern": "^[^\\x00]*$",
        }
    )


async def _read_credentials(request: web.Request) -> Credentials:
    raw = await request.read()
    try:
        data = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ApiError("invalidRequestBody", {"fields": ["username", "password"]})
    # Strings only: a number or an object as a password is a malformed request, not a wrong password.
    fields = sorted(f for f in ("username", "password") if not isinstance(data.get(f), str) or not data[f])
    if fields or "\x00" in data["username"]:
        raise ApiError("invalidRequestBody", {"fields": fields or ["username"]})
    if len(data["username"]) > 255 or len(data["password"]) > accounts.MAX_PASSWORD_LENGTH:
        raise ApiError("invalidCredentials")
    return Credentials.model_validate(data)


@operation(
    "Sign in with a username and password: the bearer token, as text (OC4's user-service)",
    "sign-in",
    body=Credentials,
    ok={200: {"text/plain": {"schema": {"type": "string"}}}},
    public=True,
    errors=(400, 401, 413, 415, 429, 503),
)
async def token(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    oidc = request.app.get(OIDC)
    backend = "oidc" if oidc is not None and s.oidc_client_id else "local" if s.jwt_secret else None
    if backend is None:
        raise ApiError("notFound")
    creds = await _read_credentials(request)
    address = client_address(request, request.app[TRUSTED_PROXIES])
    fields = {"backend": backend, "user": await log_digest(request.config_dict[REDIS], creds.username)}
    issued: str | None = None

    async def verify() -> bool:
        nonlocal issued
        if backend == "oidc":
            assert oidc is not None and s.oidc_client_id
            try:
                granted = await oidc.password_grant(
                    creds.username, creds.password, s.oidc_client_id, s.oidc_client_secret
                )
            except ProviderUnavailable:
                log.warning(
                    "sign-in failed: provider unavailable", extra={**fields, "outcome": "unavailable"}
                )
                raise ApiError("serviceUnavailable", headers={"Retry-After": "5"}) from None
            # The provider said yes: a user unknown or disabled here is refused all the same, at the
            # cost of a wrong password (the provider was asked either way).
            if granted is not None and await accounts.active_user(request.app[DB], creds.username) is None:
                granted = None
            issued = granted
        elif await accounts.verify_password(request.app[DB], creds.username, creds.password, address):
            issued = mint_token(s, creds.username, s.token_ttl_seconds)
        return issued is not None

    try:
        ok = await request.app[LOGIN_THROTTLE].attempt(creds.username, address, verify)
    except ApiError as err:
        if err.code == "tooManyAttempts":
            log.warning("sign-in refused: too many attempts", extra={**fields, "outcome": "throttled"})
        raise
    if not ok or issued is None:
        log.info("sign-in failed", extra={**fields, "outcome": "invalid"})
        raise ApiError("invalidCredentials")
    log.info("sign-in", extra={**fields, "outcome": "ok"})
    return web.Response(text=issued, content_type="text/plain", headers={"Cache-Control": "no-store"})


@operation("Set a user's password (local accounts)", "admin", body=PasswordIn, ok={204: NO_CONTENT})
async def set_password(request: web.Request) -> web.Response:
    """``PUT /admin/api/users/{username}/password`` with ``{"password"}``: 204."""
    actor = (await require_admin(request)).actor
    username = request.match_info["username"]
    body = await read_json_model(request, PasswordIn, {"username": username})
    await accounts.change_password(request.app[DB], actor, username, body.password)
    return web.Response(status=204)
