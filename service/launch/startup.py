"""What the commands and ``participants dev`` share at start: the refusal to start without safe token
verification, the stop event a long-running command waits on, and one Postgres connection for a
command's work."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from service.settings import Settings

T = TypeVar("T")

log = logging.getLogger("participants.cli")


def require_verification(settings: Settings) -> None:
    """Exit 2 unless tokens can be verified safely: never start a service anyone can mint tokens for."""
    from service.core.auth_config import startup_problem

    problem = startup_problem(settings.jwt_secret, settings.oidc_issuer, settings.jwks_url)
    if problem:
        print(f"participants: refusing to start: {problem}", file=sys.stderr)
        sys.exit(2)
    if settings.oidc_issuer and not settings.oidc_expected_audience:
        log.warning("no OIDC audience configured: tokens the provider issued to any client are accepted")


async def with_conn(settings: Settings, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    from service.core.db import connect

    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    try:
        return await fn(conn)
    finally:
        await conn.close()


def stop_event() -> asyncio.Event:
    """Set on SIGINT or SIGTERM: every long-running command stops cleanly and exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
