"""Invitation delivery: the sweeper queues each due invitation, one arq job per attempt; the job
makes the attempt (core/invitations/delivery.py). The row, not the arq job, is the source of
truth: a lost job is queued again by the next sweep once the row is due."""

from __future__ import annotations

from typing import Any

from arq.cron import CronJob, cron
from arq.worker import func

from service.core.invitations.delivery import attempt_invitation
from service.settings import Settings

DELIVER_FUNCTION = "deliver_invitation"
SWEEP_BATCH = 500


async def sweep_invitations(ctx: dict[str, Any]) -> int:
    """Queue an attempt of every due invitation; returns how many were newly queued."""
    settings: Settings = ctx["settings"]
    rows = await ctx["db"].fetch(
        """SELECT id, attempts FROM invitations WHERE status = 'QUEUED' AND next_attempt_at <= now()
           ORDER BY next_attempt_at LIMIT $1""",
        SWEEP_BATCH,
    )
    queued = 0
    for r in rows:
        # The job id names the attempt: sweeps (and sweepers) that overlap queue it once.
        job = await ctx["redis"].enqueue_job(
            DELIVER_FUNCTION,
            r["id"],
            _job_id=f"invitation:{r['id']}:{r['attempts']}",
            _queue_name=settings.default_queue,
        )
        queued += job is not None
    return queued


async def deliver_invitation(ctx: dict[str, Any], invitation_id: int) -> str:
    return await attempt_invitation(ctx["db"], ctx["settings"], invitation_id)


FUNCTIONS: list[Any] = [func(deliver_invitation, name=DELIVER_FUNCTION, keep_result=0, max_tries=3)]
# Every 2 seconds: an invitation asked for in the console goes out while the page is still open.
CRON_JOBS: list[CronJob] = [
    cron(sweep_invitations, second=set(range(0, 60, 2)), keep_result=0, unique=True, max_tries=1)
]
