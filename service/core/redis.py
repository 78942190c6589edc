"""Redis, which carries job messages (arq) and nothing that must survive it: Postgres holds the
truth about every job, and the sweeper re-enqueues what Redis lost."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, cast

from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.typing import EncodableT

from service.settings import Settings


def redis_settings(settings: Settings) -> RedisSettings:
    assert settings.redis_url, "PARTICIPANTS_REDIS_URL must be resolved before the app starts"
    return RedisSettings.from_dsn(settings.redis_url)


async def eval_script(client: Redis, script: str, keys: Sequence[str], *args: EncodableT) -> Any:
    """``EVAL script`` over ``keys`` with ``args``: the script's reply.

    redis-py types every key and argument of ``eval`` as ``str`` and its reply as ``str`` (or an
    awaitable of it), whatever the script takes and returns; the client sends ints and bytes as it
    does for any command, and the asyncio client's reply is always awaited."""
    reply = client.eval(script, len(keys), *keys, *args)  # type: ignore[arg-type]
    return await cast("Awaitable[Any]", reply)
