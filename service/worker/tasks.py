"""The job functions each queue runs, and the cron jobs of the default queue's workers.

Each capability module lists its own ``FUNCTIONS`` and ``CRON_JOBS``; this module only gathers them.
"""

from __future__ import annotations

from typing import Any

from arq.cron import CronJob

from service.worker import bulk, extract, invitations, maintenance, webhooks

EXTRACT_FUNCTIONS: list[Any] = [*extract.FUNCTIONS]
DEFAULT_FUNCTIONS: list[Any] = [*bulk.FUNCTIONS, *webhooks.FUNCTIONS, *invitations.FUNCTIONS]
CRON_JOBS: list[CronJob] = [
    *maintenance.CRON_JOBS,
    *bulk.CRON_JOBS,
    *webhooks.CRON_JOBS,
    *invitations.CRON_JOBS,
]
