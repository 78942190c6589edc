"""Requests aiohttp's HTTP parser refuses before the app sees them: answered with the API's JSON
error body, logged as one line with the status and the error's class, and never a byte of the
request in either (a bearer token or a query value would be in those bytes).

Raw bytes over real TCP sockets: a client library would refuse to send most of these."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from service.core.logs import JsonFormatter
from service.web.app import create_app
from service.web.server import MAX_HEADERS, MAX_REQUEST_LINE, ApiRunner
from tests.serving import bound_port
from tests.test_cli import ROOT, cli_env

TOKEN = "SECRETTOKEN0123456789"
QUERY = "QUERYSECRET-jo%40example.org"
SECRETS = (TOKEN, QUERY, "QUERYSECRET")

# name: (raw request, status, errorCode)
BAD_REQUESTS: dict[str, tuple[bytes, int, str]] = {
    "NUL in a header value": (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x00\r\n\r\n".encode(),
        400,
        "invalidRequest",
    ),
    "control byte in a header value": (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x01x\r\n\r\n".encode(),
        400,
        "invalidRequest",
    ),
    "20 KB URL": (
        f"GET /pages/auth/api/jobs?email={QUERY}&pad={'a' * 20_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        414,
        "urlTooLong",
    ),
    "10 KB header": (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}{'a' * 10_000}\r\n\r\n".encode(),
        431,
        "headersTooLarge",
    ),
    "200 headers": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(f"X-Header-{i}: Bearer {TOKEN}\r\n".encode() for i in range(200))
        + b"\r\n",
        431,
        "headersTooLarge",
    ),
    "malformed request line": (
        f"GET /healthz?email={QUERY} HTTP/1.1 trailing\r\nHost: x\r\n\r\n".encode(),
        400,
        "invalidRequest",
    ),
    "bad method": (f"G(T /healthz?email={QUERY} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400, "invalidRequest"),
    "header without a colon": (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nBearer {TOKEN}\r\n\r\n".encode(),
        400,
        "invalidRequest",
    ),
    "bad chunk size": (
        f"POST /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"ZZ\r\n{TOKEN}\r\n0\r\n\r\n".encode(),
        400,
        "invalidRequest",
    ),
    "bad Content-Length": (
        f"POST /healthz?email={QUERY} HTTP/1.1\r\nHost: x\r\nContent-Length: 1{TOKEN}\r\n\r\n".encode(),
        400,
        "invalidRequest",
    ),
}


async def exchange(port: int, raw: bytes | list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` (pieces with a pause between them), read until the server closes; parse the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i, piece in enumerate([raw] if isinstance(raw, bytes) else raw):
            if i:
                await asyncio.sleep(0.2)
            writer.write(piece)
            await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, want_status: int, code: str) -> None:
    assert status == want_status, body
    assert headers["content-type"].startswith("application/json"), headers
    assert orjson.loads(body)["message"] == f"errorCode.{code}"
    assert not any(s.encode() in body for s in SECRETS), body  # the answer quotes nothing either


@pytest.fixture
async def server(settings) -> AsyncIterator[tuple[int, io.StringIO]]:
    """The app behind ``ApiRunner`` on a real port, every log record (DEBUG up, any logger) formatted
    as the service formats them, traceback included."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    runner = ApiRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], stream
    finally:
        await runner.cleanup()
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_parse_errors_answer_json_and_log_no_request_bytes(server, name) -> None:
    port, logs = server
    raw, want_status, code = BAD_REQUESTS[name]
    assert_json_error(*await exchange(port, raw), want_status, code)
    await asyncio.sleep(0.05)  # let the log line land
    logged = logs.getvalue()
    assert "request refused by the HTTP parser" in logged, logged
    line = next(orjson.loads(x) for x in logged.splitlines() if "refused by the HTTP parser" in x)
    assert line["status"] == want_status and line["logger"] == "participants.http"
    assert line["error"] in {
        "BadHttpMessage",
        "BadStatusLine",
        "BadHttpMethod",
        "InvalidHeader",
        "LineTooLong",
        "InvalidURLError",
        "TransferEncodingError",
    }
    assert "exc" not in line  # no traceback: aiohttp's quotes the offending line
    assert not any(s in logged for s in SECRETS), logged
    assert "aiohttp.server" not in logged, logged


async def test_the_service_still_answers_on_the_same_port(server) -> None:
    port, _ = server
    status, _, body = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and orjson.loads(body) == {"status": "ok"}


async def test_the_limits_are_where_they_are_said_to_be(server) -> None:
    """Just under the limits is a normal request (the 414/431 split relies on the two limits)."""
    port, _ = server
    target = "/healthz?" + "a" * (MAX_REQUEST_LINE - len("/healthz?"))
    status, _, _ = await exchange(
        port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert status == 200
    status, _, _ = await exchange(port, f"GET {target}a HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 414
    head = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    many = "".join(f"X-H-{i}: v\r\n" for i in range(MAX_HEADERS - 2))  # with Host and Connection: the limit
    status, _, _ = await exchange(port, f"{head}{many}\r\n".encode())
    assert status == 200
    status, _, _ = await exchange(port, f"{head}{many}X-One-More: v\r\n\r\n".encode())
    assert status == 431


CHUNKED_HEAD = (
    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    '6\r\n{{"user\r\n'
)
BAD_CHUNK = f"ZZ\r\n{TOKEN}\r\n0\r\n\r\n".encode()


async def test_bad_chunk_framing_after_the_head_fails_the_handler_reading_the_body(server) -> None:
    """The head arrives, the handler starts reading, then the framing breaks: without the fix the
    handler waits for the rest of its body until the client gives up (aiohttp's C parser only queues
    the error behind the request)."""
    port, logs = server
    head = CHUNKED_HEAD.format(path="/user-service/api/oauth/token").encode()
    answer = await asyncio.wait_for(exchange(port, [head, BAD_CHUNK]), 5)
    assert_json_error(*answer, 400, "invalidRequestBody")
    # A handler that never reads its body (405 here): answered, then the broken body is dropped.
    answer = await asyncio.wait_for(
        exchange(port, [CHUNKED_HEAD.format(path="/healthz").encode(), BAD_CHUNK]), 5
    )
    assert_json_error(*answer, 405, "methodNotAllowed")
    await asyncio.sleep(0.05)
    logged = logs.getvalue()
    assert not any(s in logged for s in SECRETS) and "aiohttp.server" not in logged, logged


async def test_a_good_request_then_garbage_on_one_connection(server) -> None:
    port, logs = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    # (In the same packet, aiohttp's C parser drops the good request along with the bad one.)
    await asyncio.sleep(0.2)
    writer.write(f"GET /x HTTP/1.1\r\nX: {TOKEN}\x00\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in data
    assert b"HTTP/1.0 400" in data and b"errorCode.invalidRequest" in data
    assert TOKEN.encode() not in data and TOKEN not in logs.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("command", [["serve"], ["serve", "--processes", "2"], ["dev"]])
async def test_every_way_of_serving_answers_json_and_logs_no_request_bytes(settings, pool, tmp_path, command):
    """``serve``, each process of ``serve --processes 2`` and ``dev``: their stderr is the log."""
    log_path = tmp_path / "stderr.log"
    env = cli_env(
        settings,
        PARTICIPANTS_PORT="0",
        PARTICIPANTS_LOG_LEVEL="DEBUG",
        PARTICIPANTS_DB_CONNECTIONS_TOTAL="10",
        PARTICIPANTS_DATA_DIR=str(tmp_path),
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *command], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        port = bound_port(proc, log_path)
        # Every case several times: with two processes, new connections land on both.
        for _ in range(2 if command == ["serve"] else 4):
            for raw, want_status, code in BAD_REQUESTS.values():
                assert_json_error(*await exchange(port, raw), want_status, code)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=40)
    logged = log_path.read_text()
    refused = [x for x in logged.splitlines() if "refused by the HTTP parser" in x]
    assert len(refused) == len(BAD_REQUESTS) * (2 if command == ["serve"] else 4), logged[-3000:]
    assert not any(s in logged for s in SECRETS), logged[-3000:]
    assert "aiohttp.server" not in logged
