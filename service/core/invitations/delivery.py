"""One delivery attempt of one invitation: claim, render, send, record.

At least once, never again once accepted:

- the claim moves ``next_attempt_at`` ahead by a lease (longer than any send may take) and counts
  the attempt, in one statement that only takes a QUEUED, due row: two workers never attempt the
  same row at once, and a SENT row is never attempted again;
- the message is rendered from the participant's row as it is now (their current access code),
  and never stored;
- acceptance is recorded in one transaction with the attempt's log row and the participant's move
  from CREATED to INVITED; a failure is recorded only if no later attempt has claimed the row;
- a worker killed between the transport's acceptance and that transaction leaves the row QUEUED:
  the lease runs out and the message goes again, with the same Message-ID (or Idempotency-Key),
  which lets the receiving side drop the repeat. That window is the "at least once".
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from service.core.access_links import access_link
from service.core.errors import ApiError
from service.core.invitations.outbox import check_invitable
from service.core.invitations.templates import Template, render, study_template
from service.core.invitations.transports import (
    SendResult,
    configured,
    email_message,
    send_email,
    sms_provider,
)
from service.core.protection.fields import with_personal
from service.settings import Settings

log = logging.getLogger("participants.invitations")

CLAIM = """
UPDATE invitations SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
WHERE id = $1 AND status = 'QUEUED' AND next_attempt_at <= now()
RETURNING *
"""
PARTICIPANT = """
SELECT p.*, st.participate_enabled, st.name AS study_name
FROM participants p JOIN studies st ON st.id = p.study_id WHERE p.id = $1
"""


def send_deadline(settings: Settings) -> float:
    """The longest one send may take in all (SMTP's timeout is per command: a server answering
    slowly, line by line, would otherwise hold the attempt past its lease)."""
    return 2 * max(settings.smtp_timeout_seconds, settings.sms_timeout_seconds)


def lease_seconds(settings: Settings) -> float:
    """An attempt's claim: past the longest send, so a live attempt is never taken over."""
    return max(settings.invitation_lease_seconds, send_deadline(settings) + 10)


def backoff_seconds(attempt: int, settings: Settings, rand: Callable[[], float] = random.random) -> float:
    """Delay after failed attempt ``attempt`` (1-based): exponential, capped, with ±25% jitter."""
    base: float = settings.invitation_backoff_base_seconds * 2 ** min(attempt - 1, 40)
    return min(base, settings.invitation_backoff_max_seconds) * (0.75 + 0.5 * rand())


def describe(result: SendResult) -> str:
    code = f" ({result.status_code})" if result.status_code is not None else ""
    return f"{result.error or result.outcome}{code}"


async def attempt_invitation(pool: asyncpg.Pool, settings: Settings, invitation_id: int) -> str:
    """One attempt; returns its outcome, or why none was made (``not_due``: sent, failed, not yet
    time, or another attempt holds the lease)."""
    async with pool.acquire() as conn:
        invitation = await conn.fetchrow(CLAIM, invitation_id, lease_seconds(settings))
        if invitation is None:
            return "not_due"
        participant = await with_personal(
            conn, await conn.fetchrow(PARTICIPANT, invitation["participant_id"])
        )
        template = await study_template(conn, invitation["study_id"], invitation["channel"])

    started = time.perf_counter()
    try:
        async with asyncio.timeout(send_deadline(settings)):
            result = await _send(settings, invitation, participant, template)
    except TimeoutError:
        result = SendResult("retry", "timeout")
    except Exception as exc:  # noqa: BLE001 - a bug here still leaves a recorded, retried attempt
        # The type only: an exception's message may quote an address or a name.
        log.error(
            "invitation attempt failed", extra={"invitation_id": invitation_id, "error": type(exc).__name__}
        )
        result = SendResult("retry", f"internal error ({type(exc).__name__})")
    duration_ms = int((time.perf_counter() - started) * 1000)
    final = await _record(pool, settings, invitation, result, duration_ms)
    log.info(
        "invitation attempt",
        extra={
            "invitation_id": invitation_id,
            "channel": invitation["channel"],
            "attempt": invitation["attempts"],
            "outcome": result.outcome,
            "status": final,
            "error": result.error,
            "status_code": result.status_code,
            "ms": duration_ms,
        },
    )
    return result.outcome


async def _send(
    settings: Settings, invitation: asyncpg.Record, participant: dict[str, Any] | None, template: Template
) -> SendResult:
    channel = invitation["channel"]
    if participant is None:
        return SendResult("failed", "participant deleted")
    try:
        check_invitable(participant, channel)  # still so: the row may have changed since queueing
    except ApiError as exc:
        return SendResult("failed", exc.code)
    if not configured(settings, channel):
        return SendResult("retry", "emailNotConfigured" if channel == "email" else "smsNotConfigured")
    try:
        link = access_link(settings, participant["access_code"])
    except ApiError as exc:
        return SendResult("retry", exc.code)
    values = {
        "firstName": participant["first_name"] or "",
        "studyName": participant["study_name"],
        "accessLink": link.accessLink,
        "accessCode": participant["access_code"],
        "portalUrl": link.host,
    }
    subject, body = render(template, values)
    if channel == "email":
        try:
            message = email_message(
                settings, invitation["message_id"], participant["email"], subject or "", body
            )
        except ValueError:  # a header the email library will not write: never better later
            return SendResult("failed", "unsendable message")
        return await send_email(settings, message)
    return await sms_provider(settings).send(participant["phone"], body, invitation["message_id"])


async def _record(
    pool: asyncpg.Pool, settings: Settings, invitation: asyncpg.Record, result: SendResult, duration_ms: int
) -> str:
    """Log the attempt and move the row on; returns the row's status after it."""
    attempt = invitation["attempts"]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO invitation_attempts (invitation_id, attempt, duration_ms, outcome, status_code, error)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            invitation["id"], attempt, duration_ms, result.outcome, result.status_code, result.error,
        )  # fmt: skip
        if result.outcome == "accepted":
            sent = await conn.fetchval(
                """UPDATE invitations SET status = 'SENT', sent_at = now(), accepted_id = $2, last_error = NULL
                   WHERE id = $1 AND status = 'QUEUED' RETURNING participant_id""",
                invitation["id"], result.accepted_id,
            )  # fmt: skip
            if sent is not None:
                # OC4: "change status only if it was CREATED" (a participant already further on stays).
                await conn.execute(
                    """UPDATE participants SET participate_status = 'INVITED', updated_at = now()
                       WHERE id = $1 AND participate_status = 'CREATED'""",
                    sent,
                )
            return "SENT"
        when = (
            _next_attempt(attempt, invitation["retry_until"], settings) if result.outcome == "retry" else None
        )
        if when is None:
            error = (
                describe(result)
                if result.outcome == "failed"
                else f"gave up after {attempt} attempts: {describe(result)}"
            )
            status = await conn.fetchval(
                """UPDATE invitations SET status = 'FAILED', last_error = $2
                   WHERE id = $1 AND status = 'QUEUED' AND attempts = $3 RETURNING status""",
                invitation["id"], error, attempt,
            )  # fmt: skip
        else:
            status = await conn.fetchval(
                """UPDATE invitations SET next_attempt_at = $2, last_error = $3
                   WHERE id = $1 AND status = 'QUEUED' AND attempts = $4 RETURNING status""",
                invitation["id"], when, describe(result), attempt,
            )  # fmt: skip
        return str(status or "superseded")


def _next_attempt(attempt: int, retry_until: datetime, settings: Settings) -> datetime | None:
    """When to try again; None once the window is over (the last try is at its end, not skipped)."""
    now = datetime.now(retry_until.tzinfo)
    if now >= retry_until:
        return None
    return min(now + timedelta(seconds=backoff_seconds(attempt, settings)), retry_until)
