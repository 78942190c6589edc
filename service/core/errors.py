"""The one error vocabulary: ``errorCode.*`` names mapped to HTTP statuses, and ``ApiError``, the
failure every rule raises. The web side turns it into ``{"message": "errorCode.X", "params": {...}}``
(service/web/middleware.py); the worker records its code as a job's failure reason.

``UNAVAILABLE`` names the exceptions that mean a dependency (Postgres, Redis) is unreachable: the
input was fine, the answer is 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from service.core.storage import StorageUnavailable

STATUS_BY_CODE: dict[str, int] = {
    # 400: the request itself is wrong
    "invalidRequest": 400,  # refused by the HTTP parser: a malformed request line or header
    "invalidRequestBody": 400,
    "invalidRegisterParameter": 400,
    "invalidParameter": 400,
    "invalidIdempotencyKey": 400,  # empty, over 255 characters, or a control character
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
    "rowTooLarge": 400,  # a bulk CSV record over 1 MiB (file-level); ``cellTooLarge`` fails one row
    "passwordTooShort": 400,
    "passwordTooLong": 400,
    "invalidPageNumberParameter": 400,
    "invalidPageSizeParameter": 400,
    # 401 / 403
    "unauthenticated": 401,
    "invalidCredentials": 401,
    "noRoleSetUp": 403,
    "noSufficientPrivileges": 403,
    "csrfTokenInvalid": 403,  # a console form without this session's CSRF token
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
    # A bulk row whose ID an earlier row of the same file has (OC4 has no code of its own for it).
    "participantIDDuplicatedInFile": 409,
    "bulkUploadNotSupportSystemGeneratedSetting": 409,
    "jobInProgress": 409,
    "requestInProgress": 409,  # the first request with this Idempotency-Key is still being worked on
    "jobFailed": 409,
    "jobNotRetryable": 409,
    "jobNotCancellable": 409,
    "participantNotAvailable": 409,
    "participantErased": 409,  # its personal data were erased: it cannot be restored
    "participantSiteToStudyReassignmentNotAllowed": 409,
    "alreadyExists": 409,
    "participantIDGenerationFailed": 409,
    "participateUrlNotConfigured": 409,
    # a well-formed webhook URL whose address the deployment's policy refuses (PARTICIPANTS_WEBHOOK_*):
    # the request is fine, the policy (and DNS) decide
    "webhookAddressNotAllowed": 409,  # no PARTICIPANTS_PARTICIPATE_URL: no access link can be built
    "participantNotRegistered": 409,  # no access code yet: register the participant first
    # Invitations (core/invitations): what the participant lacks, what the service lacks, a bad template
    "participantHasNoEmail": 409,
    "participantHasNoPhone": 409,
    "emailNotConfigured": 409,  # no PARTICIPANTS_SMTP_HOST / PARTICIPANTS_MAIL_FROM
    "smsNotConfigured": 409,  # no PARTICIPANTS_SMS_ACCOUNT_SID / _AUTH_TOKEN / _FROM
    "unknownTemplatePlaceholder": 400,
    "invalidTemplate": 400,
    # 410, 413, 414, 415, 416, 422, 429, 431
    "fileExpired": 410,
    "fileTooLarge": 413,
    "urlTooLong": 414,  # the request line past the HTTP parser's limit
    "unsupportedMediaType": 415,
    "rangeNotSatisfiable": 416,
    "idempotencyKeyReused": 422,  # the same Idempotency-Key came with a different request
    "tooManyAttempts": 429,
    "tooManyJobs": 429,
    "headersTooLarge": 431,  # a header line past the parser's limit, or too many headers
    # 5xx: only for our own or our dependencies' failures, never for input
    "internalError": 500,
    # Stored personal data that does not open under its key and row: edited or moved by SQL. Not
    # the caller's input, and never retried into a success: a 500 that says what happened.
    "unreadableData": 500,
    "serviceUnavailable": 503,
}


class ErrorBody(BaseModel):
    """Every error answer's shape (the web side writes it, the OpenAPI document declares it)."""

    message: str = Field(pattern=r"^errorCode\.", examples=["errorCode.studyNotExist"])
    params: dict[str, Any]
    errors: list[str] | None = None


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
        errors = [f"errorCode.{e}" for e in self.errors] if self.errors and len(self.errors) > 1 else None
        body = ErrorBody(message=f"errorCode.{self.code}", params=self.params, errors=errors)
        return body.model_dump(mode="json", exclude_none=True)


# Failures of a dependency, by kind: the service is unavailable, the input is fine (503, never
# 500). Postgres: unreachable, shutting down, the connection lost mid-statement (asyncpg then says
# "another operation is in progress" or that the connection is closed), the pool closing or
# exhausted (TimeoutError from acquire). Redis: unreachable, loading, or a read-only replica after a
# failover. Postgres during a failover: no host of the DSN is the primary yet
# (``TargetServerAttributeNotMatched``, an ``InternalClientError``), or a write reached a read-only
# server. Object storage: ``StorageUnavailable`` (the storage module maps obstore's errors).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,  # connection closed, pool closing
    asyncpg.exceptions.InternalClientError,  # a lost connection's protocol state; no host is primary
    # A write reached a server that is read-only: a primary demoted, or a standby during a failover.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    StorageUnavailable,
)
try:  # redis is a dependency of arq
    import redis.exceptions

    UNAVAILABLE += (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.ReadOnlyError,
    )
except ImportError:  # pragma: no cover
    pass
