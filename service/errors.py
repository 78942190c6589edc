"""The one error vocabulary: ``errorCode.*`` names mapped to HTTP statuses, and the middleware
that turns every failure into ``{"message": "errorCode.X", "params": {...}}``.

No input may produce a 500 with a traceback: unexpected exceptions are logged (without request
bodies, which can hold personal data) and answered with a bare ``errorCode.internalError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

log = logging.getLogger("participants.errors")

STATUS_BY_CODE: dict[str, int] = {
    # 400: the request itself is wrong
    "invalidRequestBody": 400,
    "invalidRegisterParameter": 400,
    "invalidParameter": 400,
    "participantIDEmpty": 400,
    "participantIDContainsUnsupportedHTMLCharacter": 400,
    "participantIDLongerThan30Characters": 400,
    "firstNameTooLong": 400,
    "lastNameTooLong": 400,
    "identifierTooLong": 400,
    "participantIDContainsUnsupportedCharacter": 400,
    "firstNameContainsUnsupportedCharacter": 400,
    "lastNameContainsUnsupportedCharacter": 400,
    "identifierContainsUnsupportedCharacter": 400,
    "emailAddressTooLong": 400,
    "invalidEmailAddress": 400,
    "phoneNumberTooLong": 400,
    "invalidPhoneNumber": 400,
    "studyLevelParticipantContactNotAllowed": 400,
    "notSupportedFileFormat": 400,
    "webhookUrlNotAllowed": 400,
    "blankFile": 400,
    "missingParticipantIDHeader": 400,
    "duplicateColumnHeader": 400,
    # 401 / 403
    "unauthenticated": 401,
    "noRoleSetUp": 403,
    "noSufficientPrivileges": 403,
    # 404
    "notFound": 404,
    "studyNotExist": 404,
    "siteNotExist": 404,
    "invalidUuid": 404,
    "participantNotFound": 404,
    "userNotFound": 404,
    "roleNotFound": 404,
    "webhookNotFound": 404,
    "methodNotAllowed": 405,
    # 409: the request is fine, the state of things forbids it
    "studyNotAvailable": 409,
    "siteNotAvailable": 409,
    "participateNotEnabled": 409,
    "participantsEnrollmentCapReached": 409,
    "participantIDNotUnique": 409,
    "bulkUploadNotSupportSystemGeneratedSetting": 409,
    "jobInProgress": 409,
    "jobFailed": 409,
    "jobNotRetryable": 409,
    "jobNotCancellable": 409,
    "participantNotAvailable": 409,
    "participantSiteToStudyReassignmentNotAllowed": 409,
    "alreadyExists": 409,
    "participantIDGenerationFailed": 409,
    # 410, 413, 415, 416
    "fileExpired": 410,
    "fileTooLarge": 413,
    "unsupportedMediaType": 415,
    "rangeNotSatisfiable": 416,
    # 5xx: only for our own or our dependencies' failures, never for input
    "internalError": 500,
    "serviceUnavailable": 503,
}


class ApiError(Exception):
    """A failure with an ``errorCode``; its HTTP status comes from ``STATUS_BY_CODE``."""

    def __init__(
        self,
        code: str,
        params: Mapping[str, Any] | None = None,
        *,
        errors: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        if code not in STATUS_BY_CODE and status is None:
            raise ValueError(f"unknown error code {code}")
        super().__init__(code)
        self.code = code
        self.params = dict(params or {})
        self.errors = errors
        self.headers = dict(headers or {})
        self.status = status or STATUS_BY_CODE[code]

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": f"errorCode.{self.code}", "params": self.params}
        if self.errors and len(self.errors) > 1:
            body["errors"] = [f"errorCode.{e}" for e in self.errors]
        return body


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(err: ApiError) -> web.Response:
    headers = dict(err.headers)
    if err.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return json_response(err.body(), status=err.status, headers=headers)


# Failures of Postgres or Redis being unreachable: the service is unavailable, the input is fine.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    TimeoutError,
)
try:  # redis is a dependency of arq
    import redis.exceptions as _redis_exc

    _UNAVAILABLE += (_redis_exc.ConnectionError, _redis_exc.TimeoutError)
except ImportError:  # pragma: no cover
    pass


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except RequestPayloadError:
        # The body could not be read as sent (a Content-Encoding that does not decode).
        return error_response(ApiError("invalidRequestBody"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {
            404: "notFound",
            405: "methodNotAllowed",
            413: "fileTooLarge",
            415: "unsupportedMediaType",
        }.get(exc.status, "invalidRequestBody" if exc.status < 500 else "internalError")
        return error_response(ApiError(code, status=exc.status))
    except _UNAVAILABLE as exc:
        log.warning("dependency unavailable: %s", type(exc).__name__)
        return error_response(ApiError("serviceUnavailable", headers={"Retry-After": "5"}))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, _route_name(request))
        return error_response(ApiError("internalError"))


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"
