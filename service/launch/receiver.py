"""``participants webhook-receiver``: the development receiver (service/dev/webhook_receiver.py)
served on loopback until Ctrl-C."""

from __future__ import annotations

from aiohttp import web

from service.dev.webhook_receiver import build_receiver
from service.launch.startup import stop_event


async def receive_webhooks(host: str, port: int, secret: str | None) -> None:
    runner = web.AppRunner(build_receiver(secret), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    check = "checking signatures" if secret else "not checking signatures (give --secret whsec_...)"
    print(f"Receiving webhooks on http://{host}:{port}/ ({check}). Ctrl-C stops.", flush=True)
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        print("Stopped the webhook receiver.", flush=True)
