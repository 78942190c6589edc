"""The transports an invitation goes out through: email over SMTP (aiosmtplib) and SMS behind a small
provider interface, whose one implementation speaks Twilio's Messages API (any compatible
provider: the base URL is a setting).

A send never raises for what the server or the network does: it answers a ``SendResult`` that says
whether the message was accepted, whether another attempt may succeed, and the kind of failure.
The kind is ours (``"smtp refused"``, ``"http error"``...) with at most a status code: a server's
own words may quote the address or the number, and they are never kept or logged.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Literal, Protocol

import aiohttp
import aiosmtplib

from service.core.invitations.model import Channel
from service.settings import Settings

Outcome = Literal["accepted", "retry", "failed"]
USER_AGENT = "participants-invitations/1"
# A provider's message id is kept only when it looks like one (Twilio's: "SM" and 32 hex digits).
_PROVIDER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    error: str | None = None  # the kind of failure, no personal data
    status_code: int | None = None
    accepted_id: str | None = None

    @classmethod
    def accepted(cls, accepted_id: str, status_code: int | None = None) -> SendResult:
        return cls("accepted", status_code=status_code, accepted_id=accepted_id)


def email_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host and settings.mail_from)


def sms_configured(settings: Settings) -> bool:
    return bool(settings.sms_account_sid and settings.sms_auth_token and settings.sms_from)


def configured(settings: Settings, channel: Channel) -> bool:
    return email_configured(settings) if channel == "email" else sms_configured(settings)


# --- Email --------------------------------------------------------------------------------------


def rfc5322_message_id(message_id: str, settings: Settings) -> str:
    """The Message-ID header of every attempt of one invitation: the same, so that a mail system
    that saw it already may drop a repeat."""
    domain = parseaddr(settings.mail_from or "")[1].rpartition("@")[2] or "participants.invalid"
    return f"<{message_id}@{domain}>"


def email_message(settings: Settings, message_id: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from or ""
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = rfc5322_message_id(message_id, settings)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(body)  # text/plain, UTF-8: no markup to inject a name into
    return message


async def send_email(settings: Settings, message: EmailMessage) -> SendResult:
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user,
            password=settings.smtp_password,
            use_tls=settings.smtp_security == "tls",
            start_tls=settings.smtp_security == "starttls",
            timeout=settings.smtp_timeout_seconds,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        # 5xx to RCPT: the server will never take this address; 4xx: maybe later.
        if codes and all(500 <= c < 600 for c in codes):
            return SendResult("failed", "recipient refused", codes[0])
        return SendResult("retry", "recipient deferred", codes[0] if codes else None)
    except aiosmtplib.SMTPAuthenticationError as exc:
        return SendResult("retry", "smtp authentication failed", exc.code)
    except aiosmtplib.SMTPResponseException as exc:
        return SendResult("retry", "smtp refused", exc.code)
    except aiosmtplib.SMTPNotSupported:
        return SendResult("retry", "smtp feature not supported (STARTTLS or AUTH)")
    except (aiosmtplib.SMTPTimeoutError, TimeoutError):
        return SendResult("retry", "timeout")
    except (aiosmtplib.SMTPException, OSError) as exc:
        return SendResult("retry", f"connection error ({type(exc).__name__})")
    except ValueError:  # a header the email library will not write when sending
        return SendResult("failed", "unsendable message")
    return SendResult.accepted(str(message["Message-ID"]))


# --- SMS ----------------------------------------------------------------------------------------


class SmsProvider(Protocol):
    async def send(self, to: str, body: str, idempotency_key: str) -> SendResult: ...


def e164(phone: str) -> str:
    """A stored number as providers take it: the separators people type removed (as OC4 did)."""
    return re.sub(r"[\s().-]", "", phone)


class TwilioCompatible:
    """``POST {base}/2010-04-01/Accounts/{sid}/Messages.json`` with To, From and Body, basic auth."""

    def __init__(self, settings: Settings) -> None:
        assert settings.sms_account_sid and settings.sms_auth_token and settings.sms_from
        self.url = f"{settings.sms_base_url.rstrip('/')}/2010-04-01/Accounts/{settings.sms_account_sid}/Messages.json"
        credentials = f"{settings.sms_account_sid}:{settings.sms_auth_token}".encode()
        self.authorization = "Basic " + base64.b64encode(credentials).decode()
        self.sender = settings.sms_from
        self.timeout = aiohttp.ClientTimeout(total=settings.sms_timeout_seconds)

    async def send(self, to: str, body: str, idempotency_key: str) -> SendResult:
        form = {"To": e164(to), "From": self.sender, "Body": body}
        # Twilio ignores the header; providers that honour it drop a repeat of the same invitation.
        headers = {
            "Authorization": self.authorization,
            "Idempotency-Key": idempotency_key,
            "User-Agent": USER_AGENT,
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.post(self.url, data=form, headers=headers, allow_redirects=False) as resp,
            ):
                if 200 <= resp.status < 300:
                    return SendResult.accepted(await _provider_id(resp, idempotency_key), resp.status)
                await resp.read()  # the answer may quote the number: read, never kept
                if resp.status == 400:
                    # Twilio's 400: a number it will not send to (21211, 21614...); never better later.
                    return SendResult("failed", "recipient refused", resp.status)
                return SendResult("retry", "http error", resp.status)
        except TimeoutError:
            return SendResult("retry", "timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return SendResult("retry", f"connection error ({type(exc).__name__})")


async def _provider_id(resp: aiohttp.ClientResponse, fallback: str) -> str:
    try:
        sid = (await resp.json(content_type=None)).get("sid")
    except (ValueError, AttributeError, aiohttp.ClientError):
        return fallback
    return sid if isinstance(sid, str) and _PROVIDER_ID.match(sid) else fallback


def sms_provider(settings: Settings) -> SmsProvider:
    return TwilioCompatible(settings)
