"""A process's keyring: loaded once at start from the configured key-encryption key and the
database's wrapped data keys, then kept current by a background refresh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from service.core.protection.kek import KeySourceError, kek_from_settings
from service.core.protection.keyring import Keyring
from service.settings import Settings

log = logging.getLogger("participants.keys")


async def load_keyring(settings: Settings) -> Keyring:
    """The keys of ``settings.database_url``'s database (made there if it has none yet). Raises
    ``KeySourceError`` when no KEK is configured or it is not the one that wrapped them."""
    kek = kek_from_settings(settings)
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await Keyring.load(conn, kek)
    finally:
        await conn.close()


async def _refresh_forever(pool: asyncpg.Pool, ring: Keyring, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            async with pool.acquire() as conn:
                if await ring.refresh(conn):
                    log.info("data keys changed: field key %d is now the active one", ring.active_field_key)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:  # an outage: try again next time
            log.warning("could not re-read the data keys: %s", type(exc).__name__)
        except KeySourceError as exc:  # rotate-kek ran: the keys held stay usable until a restart
            log.error("could not take the changed data keys: %s; restart with the new KEK", exc)


@contextlib.asynccontextmanager
async def refreshing(pool: asyncpg.Pool, ring: Keyring, every: float) -> AsyncIterator[None]:
    """Keep ``ring`` current while the block runs."""
    task = asyncio.create_task(_refresh_forever(pool, ring, every))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
