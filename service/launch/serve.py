"""One API process: ``participants serve`` (with one process, or as each child of
``serve --processes N``, launch/processes.py) and the API half of ``participants dev``."""

from __future__ import annotations

import asyncio
import gc
import logging

from aiohttp import web

from service.launch.startup import stop_event
from service.settings import Settings

log = logging.getLogger("participants.cli")


async def serve(settings: Settings, stop: asyncio.Event, *, child: bool = False) -> None:
    """One API process. A ``child`` of ``serve --processes N`` shares the port (SO_REUSEPORT) and
    leaves the migrations to its supervisor."""
    from service.core.db import migrate_dsn
    from service.web.app import create_app
    from service.web.server import ApiRunner

    assert settings.database_url
    if not child:
        await migrate_dsn(settings.database_url)
    # ApiRunner: aiohttp's own parse errors answer the JSON error body and log no request bytes.
    runner = ApiRunner(
        create_app(settings),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )
    await runner.setup()
    # What starting made (modules, the app, its pools) lives as long as the process: frozen out of
    # the cyclic garbage collector's sight, its full collections, which hold the event loop, scan
    # only what requests made since (the startup objects alone took 15 to 50 ms a collection).
    gc.collect()
    gc.freeze()
    try:
        await web.TCPSite(
            runner, settings.host, settings.port, backlog=1024, reuse_port=child or None
        ).start()
        # The bound port: the one asked for, or the one the kernel chose for port 0.
        log.info("listening", extra={"host": settings.host, "port": runner.addresses[0][1]})
        await stop.wait()
    finally:
        await runner.cleanup()


async def serve_until_stopped(settings: Settings, child: bool = False) -> None:
    await serve(settings, stop_event(), child=child)
