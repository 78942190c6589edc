"""The worker's one-round-trip take (service/worker/prompt_worker.py) keeps arq's rule: a job is
taken only while queued, due and not in progress, and two workers never take the same one."""

from __future__ import annotations

import asyncio
import uuid

from arq.connections import create_pool as create_arq_pool
from arq.constants import in_progress_key_prefix
from arq.worker import func

from service.core.redis import redis_settings
from service.settings import Settings
from service.worker.prompt_worker import PromptWorker


async def test_two_workers_racing_for_the_same_ids_take_each_due_job_once(redis_url):
    queue = f"participants:test-take-{uuid.uuid4().hex}"
    redis = await create_arq_pool(redis_settings(Settings(redis_url=redis_url)), default_queue_name=queue)
    ran: list[str] = []

    async def record(ctx, name: str) -> None:
        ran.append(name)

    try:
        ids = [f"take-{uuid.uuid4().hex}" for _ in range(8)]
        for n, job_id in enumerate(ids):
            defer = 60 if n == 7 else None  # not due yet: never taken
            assert await redis.enqueue_job("record", job_id, _job_id=job_id, _defer_by=defer) is not None
        await redis.set(in_progress_key_prefix + ids[6], b"1")  # running elsewhere: never taken
        workers = [
            PromptWorker(
                functions=[func(record, name="record")],
                redis_pool=redis,
                queue_name=queue,
                max_jobs=20,
                handle_signals=False,
                keep_result=0,
            )
            for _ in range(2)
        ]
        raw = [job_id.encode() for job_id in ids]
        await asyncio.gather(*(w._take(raw) for w in workers))
        taken = [set(w.tasks) for w in workers]
        assert not taken[0] & taken[1]
        assert taken[0] | taken[1] == set(ids[:6])
        await asyncio.gather(*(t for w in workers for t in w.tasks.values()))
        assert sorted(ran) == sorted(ids[:6])  # each due job ran exactly once
        assert all(w.job_counter == 0 for w in workers)  # every slot given back
    finally:
        await redis.delete(queue, *(in_progress_key_prefix + i for i in ids))
        await redis.aclose()
