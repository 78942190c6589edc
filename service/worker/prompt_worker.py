"""An ``arq.Worker`` that starts the next job the moment a slot frees, instead of at the next poll.

arq's poll loop starts at most ``max_jobs`` jobs per poll: once its slots are full it stops reading
and sleeps ``poll_delay`` before looking again, even when the jobs it started took a few
milliseconds. Short jobs (an extract of a 1,000-participant site runs in ~10 ms) then go at
``max_jobs / poll_delay`` per second whatever the machine can do: 40 per second with the defaults,
five times the cost of the work itself. Here, when the slots are full and job ids are still waiting,
the poll iteration waits for a slot to free (at most one ``poll_delay``, so arq's housekeeping
between polls still runs on time) and starts the next id at once.

Taking the ids is one Redis round trip for all the free slots (``TAKE_SCRIPT``), where arq spends
four per job (WATCH, EXISTS, ZSCORE, MULTI/EXEC) one job after another: with short jobs on a busy
event loop, those sequential round trips were what kept slots empty. The rule is arq's, applied
atomically by the script: a job is taken only if it is still queued, due, and has no in-progress
key, and taking it sets that key. So a job is still never run by two workers at once, and ids
another worker took in the meantime are skipped. Everything after the take (``run_job``: reading
the job, counting tries, the result) is arq's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq import Worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from service.core.redis import eval_script

# KEYS: the queue, then the in-progress key of each id; ARGV: now (ms), the in-progress key's
# lifetime (ms), then the ids in the order of their keys. Returns id, score, id, score... taken.
TAKE_SCRIPT = """
local taken = {}
for i = 2, #KEYS do
    local id = ARGV[i + 1]
    local score = redis.call('ZSCORE', KEYS[1], id)
    if score and tonumber(score) <= tonumber(ARGV[1]) and redis.call('EXISTS', KEYS[i]) == 0 then
        redis.call('PSETEX', KEYS[i], ARGV[2], '1')
        taken[#taken + 1] = id
        taken[#taken + 1] = score
    end
end
return taken
"""


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
            await self._take(batch)

    async def _take(self, job_ids: list[bytes]) -> None:
        """Take every id of ``job_ids`` that is free to run (at most the free slots) and start it."""
        ids = [job_id.decode() for job_id in job_ids]
        keys = [self.queue_name, *(in_progress_key_prefix + job_id for job_id in ids)]
        lifetime_ms = int(self.in_progress_timeout_s * 1000)
        taken = await eval_script(self.pool, TAKE_SCRIPT, keys, timestamp_ms(), lifetime_ms, *ids)
        for job_id_b, score in zip(taken[::2], taken[1::2], strict=False):
            job_id = job_id_b.decode()
            await self.sem.acquire()  # never waits: the slots were counted free
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
