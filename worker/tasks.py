"""The job functions each queue runs, and the cron jobs of the default queue's workers."""

from __future__ import annotations

from typing import Any

from arq.cron import CronJob

EXTRACT_FUNCTIONS: list[Any] = []
DEFAULT_FUNCTIONS: list[Any] = []
CRON_JOBS: list[CronJob] = []
