"""What every console handler goes through: the session cookie, the signed-in user (who must still
exist and not be disabled), the CSRF token of every form, and HTML error pages instead of JSON.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.core.accounts import active_user
from service.core.errors import UNAVAILABLE, ApiError
from service.web.console.render import console_path, error_page, redirect
from service.web.console.sessions import ACCOUNT, COOKIE_NAME, SESSION, Session, SessionStore
from service.web.logs import route_template
from service.web.resources import DB, SETTINGS

log = logging.getLogger("participants.console")

SESSIONS = web.AppKey("console_sessions", SessionStore)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_https(request: web.Request) -> bool:
    return request.secure or request.app[SETTINGS].public_url.startswith("https://")


def set_cookie(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    response.set_cookie(
        COOKIE_NAME, session.token, path=console_path(request) + "/", httponly=True,
        secure=is_https(request), samesite="Lax",
    )  # fmt: skip


def clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE_NAME, path=console_path(request) + "/")


async def current_session(request: web.Request) -> Session | None:
    return await request.app[SESSIONS].load(request.cookies.get(COOKIE_NAME))


async def check_csrf(request: web.Request, session: Session, sent: str | None = None) -> None:
    """A form must carry this session's CSRF token (field ``csrf``); multipart forms pass it in."""
    if sent is None and request.content_type == "application/x-www-form-urlencoded":
        sent = (await request.post()).get("csrf")  # type: ignore[assignment]
    if not session.csrf_matches(sent if isinstance(sent, str) else None):
        log.warning(
            "console form refused: CSRF token missing or wrong", extra={"route": route_template(request)}
        )
        raise ApiError("csrfTokenInvalid")


def page(*, admin: bool = False, csrf: bool = True) -> Callable[[Handler], Handler]:
    """Wrap a console handler: signed-in users only (else to the login page), admins only when
    ``admin``, CSRF checked on every POST unless the handler checks it itself (``csrf=False``)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                session = await current_session(request)
                account = None
                if session is not None and session.username:
                    account = await active_user(request.app[DB], session.username)
                    if account is None:
                        await request.app[SESSIONS].end(session)
                        account = None
                if account is None or session is None:
                    if request.method == "GET" and not request.headers.get("X-Console-Fragment"):
                        raise redirect(request, "/login")
                    raise ApiError("unauthenticated")
                request[SESSION] = session
                request[ACCOUNT] = account
                if request.method == "POST" and csrf:
                    await check_csrf(request, session)
                if admin and not account.admin:
                    raise ApiError("noSufficientPrivileges")
                return await handler(request)
            except ApiError as err:
                return error_page(request, err)
            except UNAVAILABLE as exc:
                log.warning("console: dependency unavailable: %s", type(exc).__name__)
                return error_page(request, ApiError("serviceUnavailable", headers={"Retry-After": "5"}))
            except web.HTTPException:
                raise  # redirects
            except Exception:
                log.exception("console: unhandled error on %s %s", request.method, route_template(request))
                return error_page(request, ApiError("internalError"))

        return guarded

    return wrap
