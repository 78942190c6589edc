"""``participants worker`` and the worker half of ``participants dev``: one arq worker per queue,
each started again when it stops by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from service.core.links import Links
from service.core.protection.kek import KeySourceError
from service.launch.startup import stop_event
from service.settings import Settings

log = logging.getLogger("participants.cli")


async def workers(settings: Settings, queues: Sequence[str], stop: asyncio.Event) -> None:
    """One supervised arq worker per queue until ``stop``."""
    links = Links()  # the process's: a new primary or master is noticed across the workers' restarts
    # A task group, not gather: a wrong key-encryption key stops every queue's worker at its start,
    # and each of their errors is collected (gather leaves all but the first unretrieved, which
    # asyncio then prints with a traceback at exit); the process reports one, as every command does.
    try:
        async with asyncio.TaskGroup() as group:
            for queue in queues:
                group.create_task(_supervised_worker(settings, queue, stop, links))
    except* KeySourceError as errors:
        raise errors.exceptions[0] from None


# A worker that stopped by itself is started again after this long, doubling up to the maximum;
# one that ran a while before it stopped starts from the minimum again.
RESTART_MIN_SECONDS = 0.5
RESTART_MAX_SECONDS = 10.0
HEALTHY_RUN_SECONDS = 60.0


async def _supervised_worker(settings: Settings, queue: str, stop: asyncio.Event, links: Links) -> None:
    """Run the queue's worker; when it stops by itself (arq's poll loop ends on a Redis error, its
    startup fails while Postgres is away), start a new one, so the process never sits alive and idle.
    Jobs lost meanwhile are re-enqueued by the sweeper from Postgres."""
    from service.worker.main import build_worker

    delay = RESTART_MIN_SECONDS
    while not stop.is_set():
        try:
            worker = build_worker(settings, queue, links)
        except RuntimeError as exc:  # a queue with nothing registered
            log.warning("no worker for %s: %s", queue, exc)
            return
        started = time.monotonic()
        run = asyncio.create_task(worker.async_run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            run.cancel()
        with contextlib.suppress(BaseException):
            await run
        error = None if run.cancelled() else run.exception()
        with contextlib.suppress(Exception):
            await worker.close()
        if stop.is_set():
            return
        if isinstance(error, KeySourceError):  # a wrong key-encryption key stays wrong: no restart
            raise error
        if time.monotonic() - started > HEALTHY_RUN_SECONDS:
            delay = RESTART_MIN_SECONDS
        kind = type(error).__name__ if error else None
        log.error(
            "worker stopped by itself (%s); starting it again",
            kind,
            extra={"queue": queue, "error": kind, "retry_in": delay},
            exc_info=error,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RESTART_MAX_SECONDS)


async def workers_until_stopped(settings: Settings, queues: Sequence[str]) -> None:
    await workers(settings, queues, stop_event())


def queues(settings: Settings, which: str) -> list[str]:
    return {
        "extract": [settings.extract_queue],
        "default": [settings.default_queue],
        "all": [settings.extract_queue, settings.default_queue],
    }[which]
