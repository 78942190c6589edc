"""(being built in this session)"""

from __future__ import annotations

from typing import Any

from arq.cron import CronJob

FUNCTIONS: list[Any] = []
CRON_JOBS: list[CronJob] = []
