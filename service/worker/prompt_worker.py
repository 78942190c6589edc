"""An ``arq.Worker`` that starts the next job the moment a slot frees, instead of at the next poll.

arq's poll loop starts at most ``max_jobs`` jobs per poll: once its slots are full it stops reading
and sleeps ``poll_delay`` before looking again, even when the jobs it started took a few
milliseconds. Short jobs (an extract of a 1,000-participant site runs in ~10 ms) then go at
``max_jobs / poll_delay`` per second whatever the machine can do: 40 per second with the defaults,
five times the cost of the work itself. Here, when the slots are full and job ids are still waiting,
the poll iteration waits for a slot to free (at most one ``poll_delay``, so arq's housekeeping
between polls still runs on time) and starts the next id at once.

Nothing else of arq changes: each job is still claimed through arq's own in-progress key, so a job
is never run by two workers at once, and ids another worker took in the meantime are skipped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq import Worker


class PromptWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot_freed = asyncio.Event()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_delay_s
        waiting = list(job_ids)
        while waiting:
            free = self.max_jobs - self.job_counter
            if free <= 0:
                # Cleared and awaited with no await in between: a completion callback cannot slip through.
                self._slot_freed.clear()
                try:
                    await asyncio.wait_for(self._slot_freed.wait(), deadline - loop.time())
                except TimeoutError:
                    return  # back to the poll loop: heartbeat, aborts, then (no sleep left) a fresh read
                continue
            batch, waiting = waiting[:free], waiting[free:]
            await super().start_jobs(batch)
