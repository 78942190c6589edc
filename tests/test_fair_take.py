"""Workers share their slots fairly across owners (service/worker/prompt_worker.py TAKE_SCRIPT): each
free slot goes to the oldest due job of the owner with the fewest running, so one user's backlog
never starves another's job. Real Redis, the service's own enqueue."""

from __future__ import annotations

import asyncio
import uuid

from arq.connections import create_pool as create_arq_pool
from arq.worker import func

from service.core.jobs import queue
from service.core.jobs.model import EXTRACT_FUNCTION, EXTRACT_PARTICIPANTS
from service.core.redis import redis_settings
from service.settings import Settings
from service.worker.prompt_worker import PromptWorker


async def test_a_free_slot_goes_to_the_owner_with_the_fewest_jobs_running(redis_url):
    settings = Settings(redis_url=redis_url, extract_queue=f"participants:test-fair-{uuid.uuid4().hex}")
    redis = await create_arq_pool(redis_settings(settings), default_queue_name=settings.extract_queue)
    release = asyncio.Event()
    started: list[str] = []

    async def hold(ctx, job_id: str) -> None:
        started.append(job_id)
        await release.wait()

    a_jobs = [uuid.uuid4() for _ in range(20)]
    b_job = uuid.uuid4()
    worker = PromptWorker(
        functions=[func(hold, name=EXTRACT_FUNCTION)], redis_pool=redis, queue_name=settings.extract_queue,
        max_jobs=10, handle_signals=False, keep_result=0,
    )  # fmt: skip
    try:
        for job in a_jobs:  # user 1's backlog, all queued before user 2's one job
            assert await queue.enqueue(redis, settings, EXTRACT_PARTICIPANTS, job, owner_id=1)
            await asyncio.sleep(0.002)  # a millisecond apart: scores say which is older
        assert await queue.enqueue(redis, settings, EXTRACT_PARTICIPANTS, b_job, owner_id=2)
        await worker._take([], 1)  # both owners run nothing: the oldest job, user 1's first
        await worker._take([], 1)  # user 1 runs one, user 2 none: user 2's job, ahead of 19 older ones
        await worker._take([], 3)  # then user 1's, oldest first
        # The take's order (the tasks are kept in the order their jobs were taken); the jobs of one
        # take start in whichever order their reads from Redis come back.
        expected = [str(a_jobs[0]), str(b_job), *(str(j) for j in a_jobs[1:4])]
        assert list(worker.tasks) == expected
        await asyncio.sleep(0.1)
        assert sorted(started) == sorted(expected)  # each taken job ran
        # An id arq read in its own order is taken too when no owner's line has work left.
        release.set()
        await asyncio.gather(*worker.tasks.values())
        assert worker.job_counter == 0
    finally:
        release.set()
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        await redis.flushdb()
        await redis.aclose()


async def test_ids_in_no_line_are_still_taken_in_arqs_order(redis_url):
    """Webhook deliveries and messages enqueued without an owner: the take falls back to arq's ids."""
    settings = Settings(redis_url=redis_url, extract_queue=f"participants:test-fair-{uuid.uuid4().hex}")
    redis = await create_arq_pool(redis_settings(settings), default_queue_name=settings.extract_queue)
    ran: list[str] = []

    async def record(ctx, job_id: str) -> None:
        ran.append(job_id)

    worker = PromptWorker(
        functions=[func(record, name=EXTRACT_FUNCTION)], redis_pool=redis, queue_name=settings.extract_queue,
        max_jobs=10, handle_signals=False, keep_result=0,
    )  # fmt: skip
    try:
        jobs = [uuid.uuid4() for _ in range(3)]
        for job in jobs:
            assert await queue.enqueue(redis, settings, EXTRACT_PARTICIPANTS, job)  # no owner
        await worker._take([str(j).encode() for j in jobs])
        await asyncio.gather(*worker.tasks.values())
        assert ran == [str(j) for j in jobs]
    finally:
        await redis.flushdb()
        await redis.aclose()
