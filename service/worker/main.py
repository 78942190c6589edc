"""The arq workers: one per queue, each a plain ``arq.Worker`` built from ``Settings``.

Queues:
- ``extract_queue``: extract jobs only, with a short job timeout (the longest extract);
- ``default_queue``: everything else (bulk uploads, webhook deliveries, cron maintenance).
Jobs are safe to run more than once: each claims its attempt in the job row in Postgres first. A
killed worker's jobs run again once the sweeper sees their heartbeat stop (worker/maintenance.py),
not when arq's in-progress key expires.
"""

from __future__ import annotations

from typing import Any

from arq import Worker

from service.core import worker_beats
from service.core.links import Links
from service.core.redis import redis_settings
from service.settings import Settings
from service.worker import context, tasks
from service.worker.prompt_worker import PromptWorker


def build_worker(settings: Settings, queue: str, links: Links | None = None, **overrides: Any) -> Worker:
    """``links``: the process's record of its connections (kept across the worker's restarts, so a
    change of Postgres primary or Redis master is noticed and logged)."""
    is_extract = queue == settings.extract_queue
    links = links or Links()
    seen = {"redis_link": links.redis, "db_link": links.postgres}
    kwargs: dict[str, Any] = {
        "functions": tasks.EXTRACT_FUNCTIONS if is_extract else tasks.DEFAULT_FUNCTIONS,
        "cron_jobs": [] if is_extract else tasks.CRON_JOBS,
        "redis_settings": redis_settings(settings),
        "queue_name": queue,
        "on_startup": context.startup,
        "on_shutdown": context.shutdown,
        # The default queue's workers deliver webhooks, so they also listen for new outbox rows
        # (on a connection of their own, as the heartbeat). Every job, cron jobs included, holds
        # one pooled connection at a time: one more for a job's short second query.
        "ctx": {
            "settings": settings,
            "listen_outbox": True,
            "db_pool_max": settings.default_max_jobs + 1,
            **seen,
        },
        "max_jobs": settings.default_max_jobs,
        "poll_delay": settings.worker_poll_delay,
        "job_timeout": settings.extract_job_timeout_seconds
        if is_extract
        else settings.default_job_timeout_seconds,
        "max_tries": 5,
        # A key per process, refreshed often: a stuck or dead worker reads unhealthy within one
        # interval (arq's default is an hour), and replicas never share (or delete) one key.
        "health_check_key": worker_beats.beat_key(queue),
        "health_check_interval": settings.worker_health_interval_seconds,
        "handle_signals": False,
    }
    if is_extract:
        # Postgres counts the attempts (job_max_attempts); arq's own count must never stop a re-run
        # first. No results kept in Redis, so the sweeper can enqueue the same UUID again. Each
        # extract holds one connection, and a long one briefly a second for its row count.
        kwargs.update(
            max_jobs=settings.extract_max_jobs,
            max_tries=1000,
            keep_result=0,
            ctx={"settings": settings, "db_pool_max": settings.extract_max_jobs + 1, **seen},
        )
    kwargs.update(overrides)
    return PromptWorker(**kwargs)
