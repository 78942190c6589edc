"""``participants worker-health``: did each queue's worker write its arq health-check key lately?

arq refreshes ``{queue}:health-check`` every ``health_check_interval`` seconds with an expiry just
past it, so a present key means a live worker. Every queue is reported; healthy only if all are.
"""

from __future__ import annotations

from service.core.redis import connect_redis
from service.settings import Settings


async def check_health(settings: Settings) -> bool:
    redis = await connect_redis(settings)
    try:
        healthy = True
        for queue in (settings.extract_queue, settings.default_queue):
            value = await redis.get(f"{queue}:health-check")
            depth = await redis.zcard(queue)
            line = value.decode(errors="replace") if value else "no recent heartbeat"
            print(f"{queue}: {line} (queued: {depth})")
            healthy = healthy and value is not None
        return healthy
    finally:
        await redis.aclose()
