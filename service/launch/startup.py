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


def require_key_source(settings: Settings) -> None:
    """Exit 2 unless a key-encryption key is configured: personal fields are never written in clear."""
    from service.core.protection.kek import KeySourceError, kek_from_settings

    try:
        kek_from_settings(settings)
    except KeySourceError as exc:
        print(f"participants: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)


async def with_conn(
    settings: Settings, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, keys: bool = False
) -> T:
    """``fn`` over one connection; with ``keys``, the connection carries the database's keyring
    (for a command that reads or writes personal fields)."""
    from service.core.db import connect
    from service.core.protection.loading import load_keyring

    keyring = await load_keyring(settings) if keys else None
    conn = await connect(settings.database_url, keyring)  # type: ignore[arg-type]
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
