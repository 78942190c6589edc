"""The arq workers: one per queue, each a plain ``arq.Worker`` built from ``Settings``.

Queues:
- ``extract_queue``: extract jobs only, with a short job timeout so that a job whose worker was
  killed is picked up again quickly (arq re-runs it when its in-progress key expires);
- ``default_queue``: everything else (bulk uploads, webhook deliveries, cron maintenance).
Jobs are safe to run more than once: each checks the job row in Postgres first.
"""

from __future__ import annotations

from typing import Any

from arq import Worker

from service.core.redis import redis_settings
from service.settings import Settings
from service.worker import context, tasks
from service.worker.prompt_worker import PromptWorker


def build_worker(settings: Settings, queue: str, **overrides: Any) -> Worker:
    is_extract = queue == settings.extract_queue
    kwargs: dict[str, Any] = dict(
        functions=tasks.EXTRACT_FUNCTIONS if is_extract else tasks.DEFAULT_FUNCTIONS,
        cron_jobs=[] if is_extract else tasks.CRON_JOBS,
        redis_settings=redis_settings(settings),
        queue_name=queue,
        on_startup=context.startup,
        on_shutdown=context.shutdown,
        # The default queue's workers deliver webhooks, so they also listen for new outbox rows.
        # A bulk upload holds two connections (insert + heartbeat), so the pool has room for every
        # job at once plus the outbox listener and the crons: a smaller pool deadlocks, each job
        # holding one connection and waiting for its second.
        ctx={"settings": settings, "listen_outbox": True, "db_pool_max": 2 * settings.default_max_jobs + 2},
        max_jobs=settings.default_max_jobs,
        poll_delay=settings.worker_poll_delay,
        job_timeout=settings.extract_job_timeout_seconds if is_extract else settings.default_job_timeout_seconds,
        max_tries=5,
        health_check_key=f"{queue}:health-check",
        handle_signals=False,
    )
    if is_extract:
        # Postgres counts the attempts (job_max_attempts); arq's own count must never stop a re-run
        # first. No results kept in Redis, so the sweeper can enqueue the same UUID again. Each
        # extract holds two connections (COPY + heartbeat): the pool has room for all of them.
        kwargs.update(
            max_jobs=settings.extract_max_jobs,
            max_tries=1000,
            keep_result=0,
            ctx={"settings": settings, "db_pool_max": 2 * settings.extract_max_jobs + 1},
        )
    kwargs.update(overrides)
    return PromptWorker(**kwargs)
