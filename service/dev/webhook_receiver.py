"""``participants webhook-receiver``: a receiver to try webhooks with, printing every delivery.

Listens on loopback (``participants dev`` allows webhooks to this machine), checks each delivery's
Standard Webhooks v1 signature as a receiver must (HMAC-SHA256 of ``id.timestamp.body`` with the
endpoint's secret, any of the space-separated signatures, a timestamp within five minutes), prints
one line per delivery and the body, and answers 204, or 401 when the signature does not verify (the
delivery is then retried, as a real receiver's refusal would make it). Payloads carry job metadata
only, never personal data, so printing them is safe. Development only.
"""

from __future__ import annotations

import hmac
import json
import os
import sys
import time
from typing import Any

from aiohttp import web

from service.core.webhooks.rules import sign

TOLERANCE_SECONDS = 5 * 60
SECRET_VARIABLE = "PARTICIPANTS_WEBHOOK_RECEIVER_SECRET"


def add_receiver_parser(sub: Any) -> None:
    r = sub.add_parser(
        "webhook-receiver", help="print webhook deliveries and check their signatures (development)"
    )
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=9000)
    r.add_argument(
        "--secret",
        default=os.environ.get(SECRET_VARIABLE),
        help=f"the endpoint's whsec_ secret (or {SECRET_VARIABLE}); without it signatures are not checked",
    )


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> str | None:
    """None when the delivery is signed with ``secret``; otherwise why not."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "").split()
    if not msg_id or not stamp.isdigit() or not signatures:
        return "webhook-id, webhook-timestamp or webhook-signature missing"
    if abs((now or time.time()) - int(stamp)) > TOLERANCE_SECONDS:
        return "timestamp more than five minutes away"
    try:
        expected = sign(secret, msg_id, int(stamp), body)
    except ValueError:
        return "the secret is not a whsec_ secret"
    if any(hmac.compare_digest(expected, s) for s in signatures):
        return None
    return "no signature matches the secret"


def build_receiver(secret: str | None, out: Any = None) -> web.Application:
    """The receiver as an aiohttp app (every path takes deliveries); lines go to ``out`` (stdout)."""

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = verify(secret, headers, body) if secret else None
        check = (
            "not checked (no --secret)"
            if not secret
            else ("verified" if problem is None else f"REFUSED: {problem}")
        )
        try:
            event = json.loads(body)
            summary = f"{event.get('type')} job {event.get('data', {}).get('jobUuid')} {event.get('data', {}).get('status')}"
            pretty = json.dumps(event, indent=2, ensure_ascii=False)
        except (ValueError, AttributeError):
            summary, pretty = "not JSON", body[:500].decode(errors="replace")
        stream = out or sys.stdout
        print(
            f"{time.strftime('%H:%M:%S')} {headers.get('webhook-id', '-')} {summary}; signature {check}",
            file=stream,
        )
        print(pretty, file=stream, flush=True)
        return web.Response(status=401 if problem else 204)

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", deliver)
    return app
