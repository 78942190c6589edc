"""What the failover tests share: a tally of answers under load, job polling, and printing the
figures (through ``capsys.disabled()``, so they show without ``-s``)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from service.core import worker_beats
from service.settings import Settings
from tests.test_extract import SUBMIT, UUID_TEXT
from tests.world import SITE_A, STUDY

PARTICIPANTS = f"/pages/auth/api/clinicaldata/studies/{STUDY}/sites/{SITE_A}/participants"


@dataclass
class Tally:
    """Every answer's status, what was acknowledged, and when answers were 2xx again."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    acknowledged: list[str] = field(default_factory=list)
    ok_times: list[float] = field(default_factory=list)
    missing_retry_after: int = 0

    def record(self, status: int, retry_after: str | None) -> None:
        self.statuses[status] += 1
        if status == 200:
            self.ok_times.append(time.monotonic())
        if status == 503 and not retry_after:
            self.missing_retry_after += 1

    def first_ok_after(self, moment: float) -> float | None:
        later = [t for t in self.ok_times if t >= moment]
        return min(later) - moment if later else None

    def bad(self) -> dict[int, int]:
        """Answers of 500 and above other than 503."""
        return {s: n for s, n in self.statuses.items() if s >= 500 and s != 503}


async def submit_extract(client: Any, headers: dict[str, str], tally: Tally) -> str | None:
    """One extract submit; its job UUID when acknowledged."""
    try:
        resp = await client.get(SUBMIT, headers=headers)
        text = await resp.text()
    except (TimeoutError, OSError):
        tally.record(599, None)  # the connection to our own API broke: counted as a failure
        return None
    tally.record(resp.status, resp.headers.get("Retry-After"))
    if resp.status != 200:
        return None
    m = UUID_TEXT.match(text)
    assert m, text
    tally.acknowledged.append(m.group(1))
    return m.group(1)


async def wait_for_jobs(
    pool: asyncpg.Pool, uuids: Iterable[str], seconds: float, log: Any = None
) -> list[asyncpg.Record]:
    """Every job's row once none is ``IN_QUEUE`` or ``IN_PROGRESS`` (fails after ``seconds``)."""
    wanted = list(uuids)
    deadline = time.monotonic() + seconds
    while True:
        try:
            rows = await pool.fetch(
                "SELECT uuid::text, status, attempts, error FROM jobs WHERE uuid = ANY($1::uuid[])", wanted
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            rows = []
        if len(rows) == len(wanted) and all(r["status"] not in ("IN_QUEUE", "IN_PROGRESS") for r in rows):
            return list(rows)
        if time.monotonic() > deadline:
            states = collections.Counter(r["status"] for r in rows)
            detail = log() if callable(log) else ""
            pytest.fail(f"jobs unfinished after {seconds} s: {dict(states)} of {len(wanted)}\n{detail}")
        await asyncio.sleep(0.25)


async def until_workers_up(redis: Redis, settings: Settings, log: Any, seconds: float = 30.0) -> None:
    """Both queues' workers started (each process writes its heartbeat after its startup): a
    worker still starting when a dependency fails over cannot start and is started again, which is
    not what the failover tests measure."""
    queues = (settings.extract_queue, settings.default_queue)
    deadline = time.monotonic() + seconds
    while not all((await worker_beats.live_beats(redis, queues)).values()):
        assert time.monotonic() < deadline, log()
        await asyncio.sleep(0.05)


def report(capsys: pytest.CaptureFixture[str], title: str, figures: dict[str, Any]) -> None:
    with capsys.disabled():
        print(f"\n{title}")
        for name, value in figures.items():
            print(f"  {name}: {value}")
