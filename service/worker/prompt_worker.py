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

Fair across owners: a submitted job also joins its owner's line (core/jobs/queue.py), and the take
serves the lines before arq's own order: each free slot goes to the oldest due job of the owner
with the fewest jobs running, so one user's backlog of 500 extracts never starves another user's
one. "Running" is counted from arq's in-progress keys (which end with the job, or expire after a
crash), so a worker that died leaves no count behind. Ids in no line (webhook deliveries, messages
enqueued before lines existed) are then taken in arq's order, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import redis.exceptions
from arq import Worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from service.core import worker_beats
from service.core.jobs.queue import fair_prefix
from service.core.redis import connect_redis, eval_script, forget_connections
from service.settings import Settings

log = logging.getLogger("participants.worker")

# Redis failing under the poll loop: unreachable, timed out, or a demoted master refusing writes.
REDIS_OUTAGE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    OSError,
    TimeoutError,
)

# KEYS: the queue. ARGV: now (ms), the in-progress key's lifetime (ms), the free slots, the queue's
# fairness prefix, arq's in-progress key prefix, then arq's due ids in its order (taken after the
# owners' lines). Returns id, score, id, score... taken. The owners' keys are named from the prefix
# (one Redis server, as arq's own keys: no cluster slots to declare).
TAKE_SCRIPT = """
local queue, now, life, free = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local prefix, inprogress = ARGV[4], ARGV[5]
local owners = prefix .. 'owners'
local taken = {}

local function take(id)
  local score = redis.call('ZSCORE', queue, id)
  if score and tonumber(score) <= now and redis.call('EXISTS', inprogress .. id) == 0 then
    redis.call('PSETEX', inprogress .. id, life, '1')
    taken[#taken + 1] = id
    taken[#taken + 1] = score
    return true
  end
  return false
end

-- Jobs running per owner with queued work: the taken ids whose in-progress key still exists.
local running = {}
for _, owner in ipairs(redis.call('SMEMBERS', owners)) do
  local key, n = prefix .. 'r:' .. owner, 0
  for _, id in ipairs(redis.call('SMEMBERS', key)) do
    if redis.call('EXISTS', inprogress .. id) == 1 then n = n + 1 else redis.call('SREM', key, id) end
  end
  running[owner] = n
end

while free > 0 do
  local best, best_id, best_score = nil, nil, nil
  for owner, n in pairs(running) do
    local line = prefix .. 'q:' .. owner
    while true do
      local head = redis.call('ZRANGE', line, 0, 0, 'WITHSCORES')
      if #head == 0 then
        redis.call('SREM', owners, owner)
        running[owner] = nil
        break
      end
      local id, at = head[1], tonumber(head[2])
      if redis.call('ZSCORE', queue, id) and redis.call('EXISTS', inprogress .. id) == 0 then
        if at <= now and (best == nil or n < running[best] or (n == running[best] and at < best_score)) then
          best, best_id, best_score = owner, id, at
        end
        break
      end
      redis.call('ZREM', line, id)  -- finished, or taken in arq's order: no longer waiting
    end
  end
  if best == nil then break end
  redis.call('ZREM', prefix .. 'q:' .. best, best_id)
  if take(best_id) then
    redis.call('SADD', prefix .. 'r:' .. best, best_id)
    redis.call('PEXPIRE', prefix .. 'r:' .. best, life)
    running[best] = running[best] + 1
    free = free - 1
  end
end

for i = 6, #ARGV do
  if free <= 0 then break end
  if take(ARGV[i]) then free = free - 1 end
end
return taken
"""


class PromptWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot_freed = asyncio.Event()
        self._redis_lost_at: float | None = None

    async def main(self) -> None:
        # The service's Redis client (timeouts, retries, Sentinel) instead of arq's own, which has
        # no read timeout and does not follow a Sentinel failover's timeouts.
        if self._pool is None:
            settings: Settings = self.ctx["settings"]
            self._pool = await connect_redis(
                settings, default_queue_name=self.queue_name, link=self.ctx.get("redis_link")
            )
        await super().main()

    async def _poll_iteration(self) -> None:
        """arq's poll, outliving a Redis outage: arq ends its worker on the first Redis error, and
        ending it cancels the jobs running, which need only Postgres and storage. Here the error is
        logged once, the jobs carry on, and the next poll tries again (through Sentinel, the new
        master once it is promoted).

        A cancellation of the loop (the process stopping) that something below swallowed, as Redis
        clients have done when a cancel lands on a command's timeout, would leave the loop polling
        forever and the process never exiting: the task still counts the request, so it is raised
        again here."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        try:
            await super()._poll_iteration()
        except REDIS_OUTAGE as exc:
            await forget_connections(self.pool, exc)
            if self._redis_lost_at is None:
                self._redis_lost_at = time.monotonic()
                log.warning(
                    "redis unreachable; running jobs carry on",
                    extra={"queue": self.queue_name, "error": type(exc).__name__, "running": len(self.tasks)},
                )
            return
        if self._redis_lost_at is not None:
            log.warning(
                "redis reachable again",
                extra={
                    "queue": self.queue_name,
                    "after_seconds": round(time.monotonic() - self._redis_lost_at, 2),
                },
            )
            self._redis_lost_at = None

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's run, but a Redis error around the job (reading its message, recording its end) is
        not the poll loop's: the job's truth is its row in Postgres, and a message left behind is
        delivered again later or swept, then finds its job finished."""
        try:
            await super().run_job(job_id, score)
        except REDIS_OUTAGE as exc:
            log.warning(
                "redis unreachable around a job", extra={"job_id": job_id, "error": type(exc).__name__}
            )

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def record_health(self) -> None:
        """arq's health line, under this process's own key (core/worker_beats.py), not the queue's
        one shared key: replicas of a queue then never hide each other."""
        now = time.time()
        if now - self._last_health_check < self.health_check_interval:
            return
        self._last_health_check = now
        ongoing = sum(not t.done() for t in self.tasks.values())
        queued = await self.pool.zcard(self.queue_name)
        line = (
            f"{datetime.now():%b-%d %H:%M:%S} j_complete={self.jobs_complete} j_failed={self.jobs_failed} "
            f"j_retried={self.jobs_retried} j_ongoing={ongoing} queued={queued}"
        )
        lifetime = self.health_check_interval + 1
        await worker_beats.record(self.pool, self.queue_name, self.health_check_key, line, lifetime)

    async def close(self) -> None:
        if self._pool is not None:
            # Only this process's own key: a replica stopping says nothing about the others.
            with contextlib.suppress(Exception):
                await worker_beats.forget(self.pool, self.queue_name, self.health_check_key)
        await super().close()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_delay_s
        waiting = list(job_ids)
        while waiting:
            free = self.max_jobs - self.job_counter
            if free <= 0:
                # Cleared and awaited with no await in between: a completion callback cannot slip through.
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result, losing the
                # cancellation, when a slot frees just as the process stops.
                self._slot_freed.clear()
                try:
                    async with asyncio.timeout(deadline - loop.time()):
                        await self._slot_freed.wait()
                except TimeoutError:
                    return  # back to the poll loop: heartbeat, aborts, then (no sleep left) a fresh read
                continue
            batch, waiting = waiting[:free], waiting[free:]
            await self._take(batch, free)

    async def _take(self, job_ids: list[bytes], free: int | None = None) -> None:
        """Take up to ``free`` jobs (default: as many as ``job_ids``), the owners' lines first, then
        those of ``job_ids`` that are free to run, and start them."""
        ids = [job_id.decode() for job_id in job_ids]
        lifetime_ms = int(self.in_progress_timeout_s * 1000)
        taken = await eval_script(
            self.pool, TAKE_SCRIPT, [self.queue_name], timestamp_ms(), lifetime_ms,
            len(ids) if free is None else free, fair_prefix(self.queue_name), in_progress_key_prefix, *ids,
        )  # fmt: skip
        for job_id_b, score in zip(taken[::2], taken[1::2], strict=False):
            job_id = job_id_b.decode()
            await self.sem.acquire()  # never waits: the slots were counted free
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
