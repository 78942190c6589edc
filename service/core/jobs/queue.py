"""Handing a job to arq: by its type's function name (``model.JOB_FUNCTIONS``) on its type's queue,
with the job UUID as arq's job id, so that a job is never queued twice. Redis only carries work;
Postgres holds the truth about every job (lifecycle.py).
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

import asyncpg
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job

from service.core.jobs.lifecycle import withdraw
from service.core.jobs.model import JOB_FUNCTIONS
from service.core.redis import eval_script
from service.core.storage import Storage
from service.settings import Settings

log = logging.getLogger("participants.jobs")


# arq's enqueue_job in one round trip instead of three (WATCH, EXISTS, MULTI ... EXEC): the same
# keys, the same message (arq's serializer), the same refusal of an id arq still holds. KEYS: the
# job, its result, the queue, then any keys to drop first. ARGV: the message's lifetime, the
# message, the score, the id, then the owner and the queue's fairness prefix (``fair_prefix``):
# an owned job also joins its owner's line, which the workers' take serves fairly
# (worker/prompt_worker.py).
ENQUEUE_SCRIPT = """
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('ZADD', ARGV[6] .. 'q:' .. ARGV[5], ARGV[3], ARGV[4])
  redis.call('SADD', ARGV[6] .. 'owners', ARGV[5])
end
return 1
"""


def fair_prefix(queue_name: str) -> str:
    """Where a queue's owners' lines live in Redis: ``{queue}:fair:owners`` (the owners with queued
    jobs), ``{queue}:fair:q:{owner}`` (an owner's queued ids, oldest first), ``{queue}:fair:r:{owner}``
    (the ids of theirs that were taken)."""
    return f"{queue_name}:fair:"


async def enqueue(
    redis: ArqRedis,
    settings: Settings,
    job_type: str,
    job_uuid: UUID,
    *,
    owner_id: int | None = None,
    rerun: bool = False,
    release: bool = False,
) -> bool:
    """Hand the job to arq, by its type's function name on its type's queue, with the job UUID as
    arq's job id.

    arq refuses a job id it already holds (queued, running, or a kept result): that is the point,
    a job is never queued twice. ``rerun`` drops a kept result first (an admin retry of a finished
    job); ``release`` also drops arq's in-progress key (the sweeper, for a job nobody runs). Returns
    whether arq took a new message. ``owner_id``: the job's owner, whose line it joins, so that
    workers share their slots fairly across owners.
    """
    function_name, queue_field = JOB_FUNCTIONS[job_type]
    job_id = str(job_uuid)
    drop = [result_key_prefix + job_id] if rerun or release else []
    if release:
        drop.append(in_progress_key_prefix + job_id)
    now_ms = int(time.time() * 1000)
    message = serialize_job(function_name, (job_id,), {}, None, now_ms, serializer=redis.job_serializer)
    queue_name = getattr(settings, queue_field)
    keys = [job_key_prefix + job_id, result_key_prefix + job_id, queue_name, *drop]
    owner = "" if owner_id is None else str(owner_id)
    taken = await eval_script(
        redis,
        ENQUEUE_SCRIPT,
        keys,
        redis.expires_extra_ms,
        message,
        now_ms,
        job_id,
        owner,
        fair_prefix(queue_name),
    )
    return bool(taken)


async def enqueue_or_withdraw(
    conn: asyncpg.Connection,
    redis: ArqRedis,
    settings: Settings,
    job_type: str,
    job_uuid: UUID,
    owner_id: int,
    storage: Storage | None = None,
    upload_key: str | None = None,
) -> None:
    """Enqueue a job just committed by a submit; if that fails (Redis down), withdraw it, with its
    upload, and re-raise: the caller answers 503 and never learns the UUID. Withdrawing is best
    effort: if Postgres is gone too, the sweeper runs the job later, which is harmless."""
    try:
        await enqueue(redis, settings, job_type, job_uuid, owner_id=owner_id)
    except Exception:
        try:
            await withdraw(conn, job_uuid)
            if storage is not None and upload_key is not None:
                await storage.delete(upload_key)
        except Exception:  # noqa: BLE001 - best effort, see above
            log.warning("could not withdraw an unqueued job", extra={"job_uuid": str(job_uuid)})
        raise
