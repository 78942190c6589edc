"""Worker heartbeats in Redis: one key per worker process, so replicas never hide each other.

Each worker process writes ``{queue}:health-check:{host}:{pid}`` (arq's health line) every
``worker_health_interval_seconds``, with an expiry just past it, and notes the key in the queue's
index ``{queue}:health-checks`` (a sorted set scored by the key's expiry). A worker that stops
cleanly deletes its own key and index entry, never another process's; one that dies or hangs leaves
a key that expires within one interval. Readers:

- ``participants worker-health --queue Q`` (an orchestrator's health check, run inside the worker's
  container) asks for this host's (``this_host``) live workers of Q;
- the admin queue report and ``/metrics`` ask for every live worker of each queue.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

KEY_INFIX = ":health-check:"


def this_host() -> str:
    """The container's name for itself: ``HOSTNAME``, which Docker and Kubernetes set to the
    container's (pod's) own, else the kernel's hostname."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def beat_key(queue: str) -> str:
    """This process's heartbeat key for ``queue``."""
    return f"{queue}{KEY_INFIX}{this_host()}:{os.getpid()}"


def index_key(queue: str) -> str:
    return f"{queue}:health-checks"


@dataclass(frozen=True, slots=True)
class Beat:
    key: str
    host: str
    pid: int
    line: str


async def record(redis: Any, queue: str, key: str, line: str, lifetime_seconds: float) -> None:
    """Write ``key``'s heartbeat for ``lifetime_seconds`` and note it in the queue's index (pruning
    the entries of keys that expired: those processes are gone)."""
    now_ms = int(time.time() * 1000)
    lifetime_ms = max(1, int(lifetime_seconds * 1000))
    pipe = redis.pipeline(transaction=True)
    pipe.psetex(key, lifetime_ms, line.encode())
    pipe.zadd(index_key(queue), {key: now_ms + lifetime_ms})
    pipe.zremrangebyscore(index_key(queue), "-inf", now_ms)
    await pipe.execute()


async def forget(redis: Any, queue: str, key: str) -> None:
    """Remove this process's own heartbeat (a clean stop)."""
    pipe = redis.pipeline(transaction=True)
    pipe.delete(key)
    pipe.zrem(index_key(queue), key)
    await pipe.execute()


async def live_beats(redis: Any, queues: tuple[str, ...], host: str | None = None) -> dict[str, list[Beat]]:
    """Each queue's live worker processes (only those on ``host`` when given), freshest first."""
    now_ms = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        pipe.zrevrangebyscore(index_key(queue), "+inf", now_ms)
    indexed: list[list[bytes]] = await pipe.execute()
    keys = [[k.decode() for k in found] for found in indexed]
    if host is not None:
        keys = [[k for k in found if _parse(k)[0] == host] for found in keys]
    flat = [k for found in keys for k in found]
    lines: list[bytes | None] = await redis.mget(flat) if flat else []
    by_key = dict(zip(flat, lines, strict=True))
    beats: dict[str, list[Beat]] = {}
    for queue, found in zip(queues, keys, strict=True):
        beats[queue] = []
        for key in found:
            line = by_key[key]
            if line is None:  # expired between the two reads
                continue
            key_host, pid = _parse(key)
            beats[queue].append(Beat(key, key_host, pid, line.decode(errors="replace")))
    return beats


def _parse(key: str) -> tuple[str, int]:
    _queue, _, owner = key.rpartition(KEY_INFIX)
    host, _, pid = owner.rpartition(":")
    return host, int(pid) if pid.isdigit() else 0
