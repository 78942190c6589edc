"""Real servers for the invitation tests (no tests here): an SMTP server (aiosmtpd, in this event
loop) and a Twilio-compatible SMS API (aiohttp), each recording what it accepted and refusing the
first attempts it is told to refuse."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.smtp import SMTP

SMS_SID = "AC" + "0" * 32
SMS_TOKEN = secrets.token_hex(16)
SMS_FROM = "+15005550006"


@dataclass
class SmtpServer:
    """Accepts every message (``received``) except the replies queued in ``refuse_data`` /
    ``refuse_rcpt``, given to the next DATA / RCPT commands in turn."""

    port: int = 0
    received: list[EmailMessage] = field(default_factory=list)
    envelopes: list[list[str]] = field(default_factory=list)
    refuse_data: list[str] = field(default_factory=list)  # e.g. "451 4.3.0 Try again later"
    refuse_rcpt: list[str] = field(default_factory=list)
    data_delay: float = 0.0  # seconds before answering DATA: a slow server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.data_delay)
        if self.refuse_data:
            return self.refuse_data.pop(0)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append(message)
        self.envelopes.append(list(envelope.rcpt_tos))
        return "250 2.0.0 OK: queued as 1234"


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    handler = SmtpServer()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="localhost"), "127.0.0.1", 0
    )
    handler.port = server.sockets[0].getsockname()[1]
    yield handler
    server.close()
    await server.wait_closed()


@dataclass
class SmsServer:
    """``POST /2010-04-01/Accounts/{sid}/Messages.json``: 201 with a ``sid`` (``received``), or the
    statuses queued in ``fail_with`` for the next requests in turn."""

    url: str = ""
    received: list[dict[str, str]] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)  # every request's form and headers
    fail_with: list[int] = field(default_factory=list)

    async def messages(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{SMS_SID}:{SMS_TOKEN}".encode()).decode()
        if request.match_info["sid"] != SMS_SID or request.headers.get("Authorization") != expected:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        form = dict(await request.post())
        self.requests.append({**{k: str(v) for k, v in form.items()}, **request.headers})
        if self.fail_with:
            status = self.fail_with.pop(0)
            # Twilio's errors quote the number: the service must never keep or log this.
            return web.json_response({"message": f"cannot send to {form.get('To')}"}, status=status)
        sid = "SM" + secrets.token_hex(16)
        self.received.append({k: str(v) for k, v in form.items()} | {"sid": sid})
        return web.json_response({"sid": sid, "status": "queued", "to": form.get("To")}, status=201)


@pytest.fixture
async def sms_server() -> AsyncIterator[SmsServer]:
    handler = SmsServer()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", handler.messages)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    handler.url = str(server.make_url("")).rstrip("/")
    yield handler
    await server.close()
