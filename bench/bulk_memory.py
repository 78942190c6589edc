"""Bulk upload memory and responsiveness: does one hostile or huge file bloat the API process or
stall its event loop?

    python -m bench.bulk_memory [--mb 50] [--rows 1000000] [--smoke]

The API runs as a real separate process (``participants serve``, one process, default settings:
the 50 MiB body limit included) on a fresh database. After a warm-up its RSS is the baseline; then
three files are uploaded in turn to the synchronous endpoint (multipart, as OC4 clients send),
each sent whole over a raw socket whatever the API answers meanwhile:

a. one quoted cell of ``--mb`` MB holding half as many newlines (``"a\\na\\n...``): one CSV record
   spanning the whole file, the case a line-based reader would buffer whole;
b. one plain ``--mb`` MB line without a newline;
c. a valid file of ``--rows`` participant IDs (all added, the whole summary streamed back).

While each uploads, a separate process polls ``GET /healthz`` over one keep-alive connection, one
request every 10 ms, and records each latency. Printed per file: the answer, the peak RSS growth
over the baseline (the kernel's high-water mark ``VmHWM``, reset before each file through
``/proc/<pid>/clear_refs``; a 5 ms ``VmRSS`` sampler where that reset is refused), /healthz
p50/p99/max, and its p99 in each phase of the upload: ``sending`` (the body going out), ``waiting``
(sent, no answer yet: for the valid file, Postgres inserting) and ``answer`` (the answer coming
in: the summary, streamed). Then the worst of each against its target (RSS growth < 100 MB,
/healthz p99 < 50 ms in every phase) as ratios, and a verdict. Measures, never asserts: it fails
only if the service does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bulk_upload import SITE_PATH, USER, seed, write_csv
from bench.common import BENCH_SECRET, fresh_database, rss_mb, running_service
from service.settings import Settings
from service.web.tokens import mint_token

STUDY = "S_BULKMEM"
RSS_TARGET_MB = 100.0
P99_TARGET_MS = 50.0
POLL_EVERY = 0.010


def write_quoted_cell(path: Path, size: int) -> int:
    """A header, then one quoted cell of ``size`` bytes, every other byte a newline."""
    block = b"a\n" * (1 << 19)  # 1 MiB
    with path.open("wb") as f:
        f.write(b'ParticipantID\r\n"')
        for _ in range(size // len(block)):
            f.write(block)
        f.write(b"a\n" * ((size % len(block)) // 2))
        f.write(b'"\r\n')
    return path.stat().st_size


def write_long_line(path: Path, size: int) -> int:
    block = b"a" * (1 << 20)
    with path.open("wb") as f:
        f.write(b"ParticipantID\r\n")
        for _ in range(size // len(block)):
            f.write(block)
        f.write(b"a" * (size % len(block)))
    return path.stat().st_size


def _poll(port: int, ready: Any, halt: Any, out: Any) -> None:
    """The poller process: ``GET /healthz`` every POLL_EVERY seconds on one keep-alive connection
    until ``halt`` is set; then send ([(sent at, time.monotonic(); latency in ms)], failures)
    through ``out``. (Linux's monotonic clock is one for every process.)"""
    latencies: list[tuple[float, float]] = []
    failures = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/healthz")  # connected and answered once before anything is measured
    conn.getresponse().read()
    ready.set()
    while not halt.is_set():
        at, t0 = time.monotonic(), time.perf_counter()
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if ok:
            latencies.append((at, (time.perf_counter() - t0) * 1000))
        else:
            failures += 1
        halt.wait(POLL_EVERY)
    conn.close()
    out.send((latencies, failures))


class HealthPoller:
    """``_poll`` in a process of its own: in a thread of this one it would wait for the GIL while
    the uploader sends 50 MB or reads a 100 MB answer, and a busy client would pass for a slow server."""

    def __init__(self, port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._halt = ctx.Event(), ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_poll, args=(port, self._ready, self._halt, send), daemon=True)
        self.latencies: list[tuple[float, float]] = []
        self.failures = 0

    def start(self) -> None:
        self._proc.start()
        if not self._ready.wait(30):
            raise RuntimeError("the /healthz poller did not start")

    def stop(self) -> None:
        self._halt.set()
        self.latencies, self.failures = self._recv.recv()
        self._proc.join()


class PeakRss:
    """Peak RSS of ``pid`` from now on: the kernel's high-water mark after resetting it (``5`` to
    ``clear_refs``, Linux 4.0+), else the highest ``VmRSS`` a 5 ms sampler saw."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampled = 0.0
        self._halt = threading.Event()
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.kernel = True
        except OSError:
            self.kernel = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._halt.is_set():
            self.sampled = max(self.sampled, rss_mb(self.pid)[0])
            self._halt.wait(0.005)

    def peak(self) -> float:
        self._halt.set()
        self._thread.join()
        return max(self.sampled, rss_mb(self.pid)[1]) if self.kernel else self.sampled


PHASES = ("sending", "waiting", "answer")  # body going out; body sent, no answer yet; answer coming in


def phase_p99(latencies: list[tuple[float, float]], marks: list[float]) -> dict[str, tuple[float, int]]:
    """/healthz p99 and count per phase of the upload (by when each request was sent)."""
    out = {}
    for name, start, end in zip(PHASES, marks, marks[1:], strict=False):
        values = [ms for at, ms in latencies if start <= at < end]
        out[name] = (percentile(values, 0.99), len(values))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def upload(port: int, target: str, token: str, path: Path) -> tuple[float, str, list[float]]:
    """POST the file as multipart, the whole of it whatever the server answers meanwhile (as a
    client that reads the answer only once it has sent the body does; aiohttp's client would stop
    at an early answer, and a refused file would then cost the server nothing). Return (seconds to
    the end of the answer, a short account of it, the monotonic times it started, had sent the body,
    had the answer's first byte and had it all). Only the answer's first bytes are kept: a 1M-row
    summary is some 50 MB of JSON."""
    boundary = "bench" + secrets.token_hex(12)
    part_head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="participants.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    part_tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(part_head) + path.stat().st_size + len(part_tail)
    t0, started = time.perf_counter(), time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + part_head
    )
    sent_all = True
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 18):
                writer.write(chunk)
                await writer.drain()
        writer.write(part_tail)
        await writer.drain()
    except ConnectionError:
        sent_all = False  # the server closed the connection first; its answer may still be there
    sent = time.monotonic()
    head = b""
    first_byte = None
    try:
        while data := await reader.read(1 << 16):
            first_byte = first_byte or time.monotonic()
            if len(head) < 4096:
                head += data[:4096]
    except ConnectionError:
        pass
    writer.close()
    seconds = time.perf_counter() - t0
    text = head.decode(errors="replace")
    status = text.split(" ", 2)[1] if text.startswith("HTTP/") else "no answer"
    message = text.split('"message":"', 1)[1].split('"', 1)[0] if '"message":"' in text else ""
    counts = ""
    if '"uploadCount":' in text and "SUCCESS" in message:
        added = text.split('"uploadCount":', 1)[1].split(",", 1)[0]
        failed = text.split('"failureCount":', 1)[1].split(",", 1)[0]
        counts = f", {int(added):,} added, {int(failed):,} failed"
    account = f"{status} {message}{counts}{'' if sent_all else ' (closed before the whole file was sent)'}"
    return seconds, account, [started, sent, first_byte or sent, time.monotonic()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bulk_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mb", type=float, default=50.0, help="size of the one-cell and one-line files (MB)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the valid file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.mb, args.rows = 2.0, 2_000  # past the 1 MiB record limit, so each file takes its real path

    tmp = Path(tempfile.mkdtemp(prefix="bench-bulk-memory-"))
    try:
        size = int(args.mb * 1_000_000)
        files = [
            ("a. one quoted cell", tmp / "cell.csv", write_quoted_cell(tmp / "cell.csv", size)),
            ("b. one plain line ", tmp / "line.csv", write_long_line(tmp / "line.csv", size)),
            ("c. valid rows     ", tmp / "rows.csv", write_csv(tmp / "rows.csv", "MEM", args.rows)),
        ]
        warm = tmp / "warm.csv"
        write_csv(warm, "WARM", 1_000)
        dsn = asyncio.run(fresh_database("participants_bench_bulk_memory"))
        sites = ["S_WARM", "S_A", "S_B", "S_C"]
        asyncio.run(seed(dsn, [(STUDY, s) for s in sites]))
        token = mint_token(Settings(jwt_secret=BENCH_SECRET), USER, 7200)
        print(
            f"bulk_memory: {args.mb:g} MB one-cell and one-line files, {args.rows:,}-row file "
            f"({files[2][2] / 1e6:.1f} MB); /healthz every {POLL_EVERY * 1000:.0f} ms meanwhile",
            flush=True,
        )
        results: list[tuple[float, float]] = []  # (RSS growth MB, worst phase p99 ms)
        with running_service(dsn, PARTICIPANTS_STORAGE_PATH=str(tmp / "storage")) as (base, proc):
            target = SITE_PATH.format(study=STUDY, site="{site}")
            port = int(base.rsplit(":", 1)[1])
            asyncio.run(upload(port, target.format(site="S_WARM"), token, warm))
            idle = HealthPoller(port)  # warms the /healthz path too
            idle.start()
            time.sleep(1.0)
            idle.stop()
            baseline = rss_mb(proc.pid)[0]
            idle_ms = [ms for _, ms in idle.latencies]
            print(
                f"  API RSS after warm-up {baseline:.1f} MB; /healthz idle p50 {percentile(idle_ms, 0.5):.1f} ms"
                f" p99 {percentile(idle_ms, 0.99):.1f} ms",
                flush=True,
            )
            for (label, path, nbytes), site in zip(files, sites[1:], strict=False):
                peak = PeakRss(proc.pid)
                poller = HealthPoller(port)
                poller.start()
                seconds, answer, marks = asyncio.run(upload(port, target.format(site=site), token, path))
                poller.stop()
                growth = peak.peak() - baseline
                lat = [ms for at, ms in poller.latencies if marks[0] <= at < marks[-1]]
                phases = phase_p99(poller.latencies, marks)
                # The verdict takes the worst phase: a long quiet one (the insert runs in Postgres)
                # must not average away a busy one.
                worst = max((p99 for p99, n in phases.values() if n), default=float("nan"))
                results.append((growth, worst))
                print(
                    f"  {label} {nbytes / 1e6:5.1f} MB: {answer} in {seconds:.2f} s;"
                    f" peak RSS growth {growth:+6.1f} MB (now {rss_mb(proc.pid)[0] - baseline:+.1f} MB)",
                    flush=True,
                )
                print(
                    f"      /healthz: p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms, max"
                    f" {max(lat, default=float('nan')):.1f} ms (n={len(lat)}"
                    f"{f', {poller.failures} failed' if poller.failures else ''}); p99 "
                    + ", ".join(
                        f"{name} {p99:.1f} ms (n={n}, {marks[k + 1] - marks[k]:.1f} s)"
                        for k, (name, (p99, n)) in enumerate(phases.items())
                    ),
                    flush=True,
                )
        worst_rss = max(g for g, _ in results)
        worst_p99 = max(p for _, p in results)
        rss_ok, p99_ok = worst_rss < RSS_TARGET_MB, worst_p99 < P99_TARGET_MS
        print(
            f"  bulk memory: worst peak RSS growth {worst_rss:.1f} MB, ratio {worst_rss / RSS_TARGET_MB:.2f}x of"
            f" the {RSS_TARGET_MB:.0f} MB target; worst /healthz p99 (any phase) {worst_p99:.1f} ms, ratio"
            f" {worst_p99 / P99_TARGET_MS:.2f}x of the {P99_TARGET_MS:.0f} ms target",
            flush=True,
        )
        print(
            f"  verdict: RSS growth < {RSS_TARGET_MB:.0f} MB {'met' if rss_ok else 'NOT MET'};"
            f" /healthz p99 < {P99_TARGET_MS:.0f} ms {'met' if p99_ok else 'NOT MET'}",
            flush=True,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
