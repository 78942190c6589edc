"""``participants worker-health [--queue Q]``: is a worker process of each queue alive on this host?

Run inside a worker's container as its health check: each worker process writes a heartbeat key
of its own (core/worker_beats.py), so the check looks only at the workers of its own host (the
container's hostname), and a replica elsewhere can neither make it pass nor, by stopping, fail it.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.core import worker_beats
from service.core.redis import connect_redis
from service.settings import Settings


async def check_health(settings: Settings, queues: Sequence[str]) -> bool:
    """Print each queue's live workers on this host; True if every queue has at least one."""
    host = worker_beats.this_host()
    redis = await connect_redis(settings)
    try:
        beats = await worker_beats.live_beats(redis, tuple(queues), host=host)
        healthy = True
        for queue in queues:
            depth = await redis.zcard(queue)
            for beat in beats[queue]:
                print(f"{queue}: pid {beat.pid}: {beat.line}")
            if not beats[queue]:
                print(f"{queue}: no worker on {host} with a recent heartbeat (queued: {depth})")
                healthy = False
        return healthy
    finally:
        await redis.aclose()
