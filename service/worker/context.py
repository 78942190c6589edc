"""What every job finds in ``ctx``: settings, a Postgres pool, object storage, the worker's
heartbeats (and ``redis``, arq's own pool)."""

from __future__ import annotations

from typing import Any

from service.core.audit_seal import Sealer
from service.core.db import create_pool
from service.core.protection.loading import load_keyring, refreshing
from service.core.storage import Storage
from service.settings import Settings
from service.worker import webhooks
from service.worker.heartbeats import Heartbeats


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    assert settings.database_url
    keyring = await load_keyring(settings)  # the jobs decrypt and encrypt personal fields
    ctx["db"] = await create_pool(
        settings.database_url,
        1,
        ctx.get("db_pool_max", 5),
        settings.db_timeout_seconds,
        link=ctx.get("db_link"),
        keyring=keyring,
    )
    ctx["keys_refresh"] = refreshing(ctx["db"], keyring, settings.key_refresh_seconds)
    await ctx["keys_refresh"].__aenter__()
    ctx["storage"] = Storage.from_settings(settings)
    ctx["audit_sealer"] = Sealer()  # kept across the seal cron's runs (worker/maintenance.py)
    ctx["heartbeats"] = Heartbeats(settings)
    await ctx["heartbeats"].start()
    if ctx.get("listen_outbox"):
        # Enqueue webhook deliveries the moment their job commits (the sweeper is the safety net).
        await webhooks.start_outbox_listener(ctx)


async def shutdown(ctx: dict[str, Any]) -> None:
    await webhooks.stop_outbox_listener(ctx)
    if "heartbeats" in ctx:
        await ctx.pop("heartbeats").stop()
    if "keys_refresh" in ctx:
        await ctx.pop("keys_refresh").__aexit__(None, None, None)
    if "db" in ctx:
        await ctx["db"].close()
