"""Rendering console pages: Jinja2 templates shipped in the package, HTML autoescaped, and the
headers every console answer carries (a strict Content-Security-Policy: scripts, styles and images
from this origin only, nothing inline, no framing).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from service.core.errors import ApiError
from service.core.roles import role_name
from service.web.console.audit_view import change_rows
from service.web.console.sessions import ACCOUNT, SESSION
from service.web.console.times import when
from service.web.resources import SETTINGS

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# errorCode -> what it means, in words, for people reading a page.
EXPLAINED = {
    "participantIDEmpty": "The participant ID is empty.",
    "participantIDContainsUnsupportedHTMLCharacter": "The participant ID contains < or > or another HTML character.",
    "participantIDLongerThan30Characters": "The participant ID is longer than 30 characters.",
    "participantIDContainsUnsupportedCharacter": "The participant ID contains a character that is not allowed.",
    "participantIDNotUnique": "This participant ID is already used in the study.",
    "participantIDDuplicatedInFile": "This participant ID is on an earlier row of the same file.",
    "webhookUrlNotAllowed": "The URL must be http or https, without a user name or password.",
    "webhookAddressNotAllowed": "That address is private or reserved: webhooks may not call it here.",
    "participateUrlNotConfigured": "No Participate portal is configured (PARTICIPANTS_PARTICIPATE_URL).",
    "participantNotRegistered": "This participant is not registered for Participate yet.",
    "emailNotConfigured": "No mail server is configured for invitations.",
    "smsNotConfigured": "No SMS provider is configured for invitations.",
    "participantHasNoEmail": "This participant has no email address.",
    "participantHasNoPhone": "This participant has no mobile number.",
    "participantIDGenerationFailed": "No participant ID could be generated.",
    "firstNameTooLong": "The first name is too long.",
    "firstNameContainsUnsupportedCharacter": "The first name contains a character that is not allowed.",
    "lastNameTooLong": "The last name is too long.",
    "lastNameContainsUnsupportedCharacter": "The last name contains a character that is not allowed.",
    "identifierTooLong": "The secondary identifier is too long.",
    "identifierContainsUnsupportedCharacter": "The secondary identifier contains a character that is not allowed.",
    "emailAddressTooLong": "The email address is too long.",
    "invalidEmailAddress": "This is not a valid email address.",
    "phoneNumberTooLong": "The phone number is too long.",
    "invalidPhoneNumber": "This is not a valid phone number (+country code, then digits).",
    "studyLevelParticipantContactNotAllowed": "Contact details can only be kept for participants at a site.",
    "participantsEnrollmentCapReached": "The study has reached its expected total enrollment.",
    "participantSiteToStudyReassignmentNotAllowed": "A participant at a site cannot be moved to the study level.",
    "participantNotAvailable": "This participant has been removed.",
    "participantErased": "This participant's personal data were erased: it cannot be restored.",
    "participateNotEnabled": "Participate is not enabled for this study.",
    "notSupportedFileFormat": "The file is not a CSV file this service can read.",
    "blankFile": "The file is empty.",
    "missingParticipantIDHeader": "The file has no ParticipantID column.",
    "duplicateColumnHeader": "The file names a column twice.",
    "fileTooLarge": "The file is too large.",
    "rowTooLarge": "A line of the file is too long (over 1 MiB).",
    "cellTooLarge": "A value in this row is too long.",
    "bulkUploadNotSupportSystemGeneratedSetting": "This study generates participant IDs: bulk upload is not possible.",
    "noRoleSetUp": "You have no role here.",
    "noSufficientPrivileges": "Your role does not allow this.",
    "studyNotExist": "There is no such study.",
    "siteNotExist": "There is no such site in this study.",
    "studyNotAvailable": "The study is not available for changes.",
    "siteNotAvailable": "The site is not available for changes.",
    "invalidUuid": "There is no such job (or it is not yours).",
    "jobInProgress": "The job is still running.",
    "jobFailed": "The job failed: it has no file.",
    "fileExpired": "The file has expired or was deleted.",
    "jobNotRetryable": "Only a failed extract job can be retried.",
    "jobNotCancellable": "Only a job that has not finished can be cancelled.",
    "webhookNotFound": "There is no such webhook endpoint or delivery.",
    "invalidParameter": "A filter value is not valid.",
    "invalidCredentials": "Wrong username or password.",
    "tooManyAttempts": "Too many failed sign-ins: wait a while and try again.",
    "tooManyJobs": "You have too many jobs running or waiting: wait for one to finish.",
    "serviceUnavailable": "The service is unavailable right now: try again in a moment.",
    "csrfTokenInvalid": "The form had expired or did not come from this console: reload the page and try again.",
    "invalidRequestBody": "Some of the values are not valid.",
    "notFound": "There is no such page.",
    "methodNotAllowed": "This page cannot be used that way.",
    "unauthenticated": "You are not signed in (or your session has ended): reload the page to sign in.",
    "internalError": "Something went wrong on our side: try again, and tell an operator if it persists.",
}


def duration(seconds: float) -> str:
    """A time left, as people say it: "4 s", "2 min 5 s", "1 h 3 min"."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def explain(code: str) -> str:
    code = code.removeprefix("errorCode.")
    return EXPLAINED.get(code, code)


# Every console route is named with this prefix: the OpenAPI document of the API leaves routes so
# named out (service/web/openapi.py), and they are HTML pages, not API operations.
ROUTE_NAME_PREFIX = "console."

# The console app's own Jinja environment (templates, filters, the ``url`` global), made per app.
JINJA = web.AppKey("console_jinja", jinja2.Environment)


def console_url(router: web.UrlDispatcher, name: str, /, **parts: object) -> str:
    """The path of the console route ``name`` with ``parts`` filled in, each one percent-encoded by
    the router (so an OID or id can never change which page the link names). ``name`` is
    positional-only: a route may have a part called ``name`` (the assets' route does)."""
    return str(router[ROUTE_NAME_PREFIX + name].url_for(**{k: str(v) for k, v in parts.items()}))


def page_url(request: web.Request, name: str, /, **parts: object) -> str:
    """``console_url`` for a console handler (whose ``request.app`` is the console app)."""
    return console_url(request.app.router, name, **parts)


def build_environment(router: web.UrlDispatcher) -> jinja2.Environment:
    """Templates shipped in the package, HTML autoescaped; ``url(name, **parts)`` builds links from
    ``router`` (the console app's), so templates never glue paths together."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["explain"] = explain
    env.filters["when"] = when
    env.globals["role_name"] = role_name
    env.filters["duration"] = duration
    env.globals["change_rows"] = change_rows
    env.globals["url"] = functools.partial(console_url, router)
    return env


def console_path(request: web.Request, path: str = "") -> str:
    """``/console...`` under the configured path prefix (the session cookie's path is this plus ``/``)."""
    return request.config_dict[SETTINGS].path_prefix.rstrip("/") + "/console" + path


def render(
    request: web.Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> web.Response:
    session = request.get(SESSION)
    page = {
        "user": request.get(ACCOUNT),
        "csrf": session.csrf if session is not None else "",
        **(context or {}),
    }
    html = request.config_dict[JINJA].get_template(template).render(page)
    return web.Response(text=html, status=status, content_type="text/html")  # + add_security_headers


def error_page(request: web.Request, err: ApiError) -> web.Response:
    """The error in words; where in a file it is (row, column) and how to fix it when the error says;
    a way back to the site the request was about, else home."""
    params = err.params or {}
    context = {
        "code": err.code,
        "row": params.get("rowNumber"),
        "column": params.get("column"),
        "how_to_fix": params.get("howToFix"),
        "site": (request.match_info.get("studyOID"), request.match_info.get("siteOID")),
    }
    response = render(request, "error.html", context, status=err.status)
    for name, value in err.headers.items():
        if name.lower() in ("retry-after", "allow"):
            response.headers[name] = value
    return response


def redirect(request: web.Request, name: str, /, query: str = "", **parts: object) -> web.HTTPSeeOther:
    """A 303 to the console route ``name`` (``query`` appended as is), to raise from a handler."""
    location = page_url(request, name, **parts) + (f"?{query}" if query else "")
    return web.HTTPSeeOther(location)  # add_security_headers adds them


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: whatever a console answer is (a page, a redirect, a file, an error made
    by aiohttp itself), it carries the security headers; one it set itself (an asset's caching) stays."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
