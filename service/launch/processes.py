"""``participants serve --processes N``: N API processes sharing one port, one supervisor.

Each process binds the same host and port with ``SO_REUSEPORT``; the kernel spreads new connections
over their listening sockets (one accept queue each, no thundering herd, no shared socket handed
down). Chosen over gunicorn's aiohttp worker class: no extra dependency or configuration language,
and the service keeps its own start-up order (migrations once, here, before any process listens),
its own signal handling and its own logging.

The supervisor (this module, in the process ``participants serve`` started) applies the migrations,
sizes the per-process Postgres pool so that N x pool max stays within ``db_connections_total``,
starts the N processes and waits. SIGTERM or SIGINT is passed on to every process, which stops
accepting, finishes its requests and exits (aiohttp's graceful shutdown); a process still running
after ``shutdown_timeout_seconds`` is killed. If one process dies, the supervisor stops the others
and exits non-zero, so the orchestrator restarts the whole service rather than running short.

``/metrics`` across processes: prometheus-client's multiprocess mode. The supervisor gives every
process one fresh ``PROMETHEUS_MULTIPROC_DIR``; each process writes its counters and histograms
there, and whichever process answers a scrape sums all of them (web/metrics.py). The job metrics
are read from Postgres and Redis at scrape time, so they are whole from any process anyway.

Imports: settings, core (migrations), the standard library. Never the web application itself: the
processes are fresh interpreters running ``participants serve`` as children.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from service.core.db import migrate_dsn
from service.settings import Settings

log = logging.getLogger("participants.processes")

CHILD_FLAG = "--child"  # set by the supervisor on the processes it starts; not for people


def process_count(settings: Settings, requested: int | None) -> int:
    """``--processes``, else ``PARTICIPANTS_PROCESSES``, else the cores this process may run on; never
    more than ``db_connections_total`` (each process holds at least one connection)."""
    n = requested or settings.processes
    if not n:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n, settings.db_connections_total))


def pool_max_per_process(settings: Settings, processes: int) -> int:
    """``db_pool_max``, lowered so that ``processes`` pools together stay within ``db_connections_total``."""
    return max(1, min(settings.db_pool_max, settings.db_connections_total // processes))


def supervise(settings: Settings, processes: int) -> int:
    """Migrate once, run ``processes`` API processes on one port until a signal; return the exit code."""
    assert settings.database_url
    asyncio.run(migrate_dsn(settings.database_url))
    pool_max = pool_max_per_process(settings, processes)
    metrics_dir = tempfile.mkdtemp(prefix="participants-metrics-")
    env = dict(os.environ)
    env.update(
        PARTICIPANTS_DB_POOL_MAX=str(pool_max),
        PARTICIPANTS_DB_POOL_MIN=str(min(settings.db_pool_min, pool_max)),
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
    )
    # Port 0: the kernel picks one, bound here (never listening) for as long as the children run,
    # so the port they all bind with SO_REUSEPORT stays ours between the pick and their start.
    reserved = None
    if settings.port == 0:
        reserved = socket.socket()
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((settings.host, 0))
        env["PARTICIPANTS_PORT"] = str(reserved.getsockname()[1])
    port = reserved.getsockname()[1] if reserved is not None else settings.port
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[subprocess.Popen[bytes]] = []
    code = 0
    try:
        for _ in range(processes):
            children.append(
                subprocess.Popen([sys.executable, "-m", "service.cli", "serve", CHILD_FLAG], env=env)
            )
        log.info(
            "serving",
            extra={"processes": processes, "port": port, "db_pool_max_per_process": pool_max},
        )
        while not stopping:
            if any(c.poll() is not None for c in children):
                log.error("an API process exited; stopping the others")
                code = 1
                break
            time.sleep(0.2)
    finally:
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.shutdown_timeout_seconds
        for c in children:
            try:
                c.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if reserved is not None:
            reserved.close()
    return code
