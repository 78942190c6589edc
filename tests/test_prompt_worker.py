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


async def test_a_cancellation_swallowed_under_the_poll_loop_still_stops_the_worker(redis_url):
    """A stopping process cancels the worker's loop; a call below it that loses the cancellation (as
    Redis clients have done when it lands on a command's timeout) must not leave the loop polling
    forever: the worker ends at its next poll."""
    queue = f"participants:test-cancel-{uuid.uuid4().hex}"
    redis = await create_arq_pool(redis_settings(Settings(redis_url=redis_url)), default_queue_name=queue)
    swallowed = asyncio.Event()

    class LosesACancel(PromptWorker):
        async def record_health(self) -> None:
            if swallowed.is_set():
                return
            asyncio.current_task().cancel()  # the loop's task: the process stopping, now
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                swallowed.set()  # and carries on as if nothing had happened

    async def noop(ctx) -> None:
        pass

    worker = LosesACancel(
        functions=[func(noop, name="noop")],
        redis_pool=redis,
        queue_name=queue,
        handle_signals=False,
        poll_delay=0.01,
        keep_result=0,
    )
    try:
        run = asyncio.create_task(worker.async_run())
        done, _ = await asyncio.wait({run}, timeout=3)
        assert swallowed.is_set()
        assert run in done, "the worker kept polling after its cancellation was lost"
        assert run.cancelled()
    finally:
        if not run.done():
            run.cancel()
        await redis.aclose()
