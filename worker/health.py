"""``participants worker-health``: did each queue's worker write its arq health-check key lately?"""

from __future__ import annotations

from arq import create_pool

from service.resources import redis_settings
from service.settings import Settings


async def check_health(settings: Settings) -> bool:
    redis = await create_pool(redis_settings(settings))
    try:
        for queue in (settings.extract_queue, settings.default_queue):
            value = await redis.get(f"{queue}:health-check")
            print(f"{queue}: {value.decode() if value else 'no recent heartbeat'}")
            if not value:
                return False
        return True
    finally:
        await redis.aclose()
