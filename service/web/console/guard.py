"""What every console request goes through, as the console app's two middlewares: the session
cookie and the signed-in user (who must still exist, not be disabled, and not have had their
credentials changed since the session began), the CSRF token of every
form, the admin flag for the operator pages, and HTML error pages instead of the API's JSON.

Who may use a route is declared beside the route (``Access`` in service/web/console/routes.py), not
in the handler, so one table shows what is public and what needs an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from service.core.accounts import active_user
from service.core.errors import ApiError
from service.web.console.render import console_path, error_page, redirect
from service.web.console.sessions import ACCOUNT, COOKIE_NAME, SESSION, Session, SessionStore
from service.web.logs import route_template
from service.web.middleware import as_api_error, forget_broken_connections
from service.web.resources import DB, SETTINGS

log = logging.getLogger("participants.console")

SESSIONS = web.AppKey("console_sessions", SessionStore)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Access:
    """Who may use a route. ``public``: anyone; the handler reads the (anonymous) session and checks
    a form's token itself (sign-in, sign-out, the OIDC flow, assets). ``csrf=False``: the handler
    checks the token itself (a multipart form, whose token is a part of the body)."""

    public: bool = False
    admin: bool = False
    csrf: bool = True


SIGNED_IN = Access()
PUBLIC = Access(public=True, csrf=False)
OPERATOR = Access(admin=True)
OWN_CSRF = Access(csrf=False)
# Route name -> its Access; a console route missing here needs a signed-in user (fail closed).
ACCESS = web.AppKey("console_access", dict[str, Access])


def is_https(request: web.Request) -> bool:
    return request.secure or request.config_dict[SETTINGS].public_url.startswith("https://")


def set_cookie(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    response.set_cookie(
        COOKIE_NAME, session.token, path=console_path(request) + "/", httponly=True,
        secure=is_https(request), samesite="Lax",
    )  # fmt: skip


def clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE_NAME, path=console_path(request) + "/")


async def current_session(request: web.Request) -> Session | None:
    return await request.config_dict[SESSIONS].load(request.cookies.get(COOKIE_NAME))


async def check_csrf(request: web.Request, session: Session, sent: str | None = None) -> None:
    """A form must carry this session's CSRF token (field ``csrf``); multipart forms pass it in."""
    if sent is None and request.content_type == "application/x-www-form-urlencoded":
        sent = (await request.post()).get("csrf")  # type: ignore[assignment]
    if not session.csrf_matches(sent if isinstance(sent, str) else None):
        log.warning(
            "console form refused: CSRF token missing or wrong", extra={"route": route_template(request)}
        )
        raise ApiError("csrfTokenInvalid")


def _access(request: web.Request) -> Access | None:
    """The matched route's Access; None for a path no route matches (the 404 or 405 is for anyone)."""
    if request.match_info.http_exception is not None:
        return None
    return request.config_dict[ACCESS].get(request.match_info.route.name or "", SIGNED_IN)


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Signed-in users only (a page to the login form, anything else a 401), CSRF on every POST the
    handler does not check itself, operators only where the route says so."""
    access = _access(request)
    if access is None or access.public:
        return await handler(request)
    session = await current_session(request)
    account = None
    if session is not None and session.username:
        account = await active_user(request.config_dict[DB], session.username)
        # Deleted or disabled since signing in, or signed in before the user's credentials last
        # changed (a new password, disable/enable, the admin flag, "sign out everywhere"): the
        # session dies with it.
        if account is not None and account.session_outdated(session.created):
            account = None
        if account is None:
            await request.config_dict[SESSIONS].end(session)
    if account is None or session is None:
        # The page's script polls fragments: it gets the 401 and stops, a reload shows the form.
        if request.method == "GET" and not request.headers.get("X-Console-Fragment"):
            raise redirect(request, "login")
        raise ApiError("unauthenticated")
    request[SESSION] = session
    request[ACCOUNT] = account
    if request.method == "POST" and access.csrf:
        await check_csrf(request, session)
    if access.admin and not account.admin:
        raise ApiError("noSufficientPrivileges")
    return await handler(request)


@web.middleware
async def html_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every console failure is a page. It runs inside the API's JSON error middleware, so that one
    sees a finished page (or a redirect, which both let through to the access log as a 303)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_page(request, as_api_error(request, exc, log))
    except Exception as exc:  # the API's own meaning of each failure, as a page
        await forget_broken_connections(request, exc)
        return error_page(request, as_api_error(request, exc, log))
