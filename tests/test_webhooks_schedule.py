"""The retry schedule's edge cases (receiver answers mocked with aioresponses), and the pure rules:
backoff, Retry-After, the SSRF address policy."""

from __future__ import annotations

import datetime as dt
import re
from email.utils import format_datetime
from types import SimpleNamespace

import aiohttp
import pytest
from aioresponses import aioresponses

from service.core.webhooks import models as wm
from service.core.webhooks import rules as wr
from service.core.webhooks import store as ws
from service.core.webhooks.ssrf import AddressPolicy, BlockedAddress, GuardedResolver, check_url, parse_ip
from service.settings import Settings
from service.worker.webhooks import attempt_delivery
from tests.test_webhooks_support import finished_job

URL = "https://hooks.example.com/in"
ANY_URL = re.compile(r"^https://hooks\.example\.com/.*$")


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer``: give it a stand-in."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture
async def message(world, pool):
    """One pending message to a (mocked) public receiver; returns its id."""
    await world.standard()
    async with pool.acquire() as conn:
        await ws.create_endpoint(conn, wm.WebhookIn(url=URL))
    await finished_job(pool, "FAILED")
    return await pool.fetchval("SELECT id FROM webhook_messages")


async def _wait(pool, message_id):
    """Seconds until the next attempt, and the message's status."""
    row = await pool.fetchrow(
        "SELECT status, extract(epoch FROM next_attempt_at - now())::float8 AS wait, last_error"
        " FROM webhook_messages WHERE id = $1",
        message_id,
    )
    return row["status"], row["wait"], row["last_error"]


async def _attempt(pool, settings, message_id, **mock):
    with aioresponses() as m:
        m.post(ANY_URL, response_class=CompatResponse, **mock)
        return await attempt_delivery(pool, settings, message_id)


@pytest.mark.parametrize(
    "status, headers, low, high",
    [
        (503, {"Retry-After": "120"}, 118, 120),  # seconds
        (429, {"Retry-After": "3600"}, 3598, 3600),
        (500, {"Retry-After": "10000000"}, 12 * 3600 - 2, 12 * 3600),  # capped at the backoff maximum
        (503, {"Retry-After": "soon"}, 22.5 - 2, 37.5),  # unreadable: the normal backoff
        (400, {"Retry-After": "120"}, 22.5 - 2, 37.5),  # only 429 and 5xx speak for the receiver's load
        # a redirect is a failure, never followed
        (302, {"Location": "http://169.254.169.254/"}, 22.5 - 2, 37.5),
        (404, {}, 22.5 - 2, 37.5),
    ],
)
async def test_failed_attempt_schedules_the_next(pool, settings, message, status, headers, low, high):
    outcome = await _attempt(pool, settings, message, status=status, headers=headers, body="nope")
    assert outcome == "http_error"
    state, wait, error = await _wait(pool, message)
    assert state == "pending" and error == f"HTTP {status}"
    assert low <= wait <= high, wait
    log = await pool.fetchrow("SELECT attempt, outcome, http_status, response_excerpt FROM webhook_attempts")
    assert tuple(log) == (1, "http_error", status, "nope")


async def test_any_answer_body_is_logged_safely(pool, settings, message):
    """A receiver answering binary junk (NUL bytes, invalid UTF-8, long) still gets its attempt logged."""
    junk = b"\x00\xff\xfe<html>" + b"x" * 30_000
    assert await _attempt(pool, settings, message, status=500, body=junk) == "http_error"
    excerpt = await pool.fetchval("SELECT response_excerpt FROM webhook_attempts")
    assert excerpt.startswith("\ufffd\ufffd\ufffd<html>xxx") and len(excerpt) == wr.EXCERPT_CHARS


async def test_retry_after_as_an_http_date(pool, settings, message):
    when = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    await _attempt(
        pool, settings, message, status=503, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    _, wait, _ = await _wait(pool, message)
    assert 595 <= wait <= 600


async def test_backoff_grows_exponentially_with_jitter(pool, settings, message):
    waits = []
    for _ in range(5):
        await pool.execute("UPDATE webhook_messages SET next_attempt_at = now()")
        await _attempt(pool, settings, message, status=500)
        waits.append((await _wait(pool, message))[1])
    for n, wait in enumerate(waits, start=1):
        nominal = 30 * 2 ** (n - 1)
        assert 0.75 * nominal - 2 <= wait <= 1.25 * nominal, (n, waits)
    assert await pool.fetchval("SELECT attempts FROM webhook_messages") == 5


@pytest.mark.parametrize(
    "mock, outcome, error",
    [
        ({"exception": TimeoutError()}, "timeout", "no answer within 10 s"),
        (
            {"exception": aiohttp.ClientConnectionError("refused")},
            "connection_error",
            "ClientConnectionError",
        ),
        ({"exception": aiohttp.ServerDisconnectedError()}, "connection_error", "ServerDisconnectedError"),
    ],
)
async def test_network_failures_are_retried(pool, settings, message, mock, outcome, error):
    assert await _attempt(pool, settings, message, **mock) == outcome
    state, wait, _ = await _wait(pool, message)
    assert state == "pending" and 20 <= wait <= 37.5
    assert await pool.fetchval("SELECT error FROM webhook_attempts") == error


async def test_the_last_attempt_is_at_the_end_of_the_window_then_it_gives_up(pool, settings, message):
    # Created almost three days ago: the next attempt is clipped to the window's end, not skipped.
    await pool.execute(
        "UPDATE webhook_messages SET created_at = now() - interval '72 hours' + interval '10 s'"
    )
    await _attempt(pool, settings, message, status=500)
    state, wait, _ = await _wait(pool, message)
    assert state == "pending" and 7 <= wait <= 10
    await pool.execute(
        "UPDATE webhook_messages SET created_at = now() - interval '73 hours', next_attempt_at = now()"
    )
    await _attempt(pool, settings, message, status=502)
    state, _, error = await _wait(pool, message)
    assert (state, error) == ("failed", "gave up after 2 attempts: HTTP 502")


async def test_2xx_is_success_and_410_disables(pool, settings, message):
    assert await _attempt(pool, settings, message, status=202) == "success"
    assert (await _wait(pool, message))[0] == "delivered"
    # A duplicate arq message: nothing.
    assert await attempt_delivery(pool, settings, message) == "not_pending"

    second = await finished_job(pool, "FAILED")
    msg2 = await pool.fetchval("SELECT id FROM webhook_messages WHERE job_uuid = $1", second)
    assert await _attempt(pool, settings, msg2, status=410) == "gone"
    assert tuple(await pool.fetchrow("SELECT enabled, disabled_reason FROM webhook_endpoints")) == (
        False,
        "gone",
    )


async def test_a_message_not_yet_due_is_not_attempted(pool, settings, message):
    await pool.execute("UPDATE webhook_messages SET next_attempt_at = now() + interval '1 minute'")
    with aioresponses() as m:
        assert await attempt_delivery(pool, settings, message) == "not_due"
        assert not m.requests


# --- Pure rules --------------------------------------------------------------------------------


def test_the_schedule_spans_about_three_days():
    s = Settings(database_url="x", redis_url="y")
    start = now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    until = start + dt.timedelta(hours=s.webhook_retry_hours)
    attempt = 1
    while (nxt := wr.next_attempt_at(attempt, now, until, s, rand=lambda: 0.5)) is not None:
        now, attempt = nxt, attempt + 1
    assert now == until and 12 <= attempt <= 20, attempt


@pytest.mark.parametrize(
    "value, expected",
    [("0", 0.0), ("17", 17.0), (" 5 ", 5.0), ("-3", None), ("1.5", None), ("", None), (None, None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)  # fmt: skip
def test_parse_retry_after(value, expected):
    assert wr.parse_retry_after(value, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) == expected


def test_signature_matches_the_specification_example():
    # From the Standard Webhooks specification's test vectors.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert wr.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    assert wr.signature_header([secret, secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        expected + " " + expected
    )


@pytest.mark.parametrize(
    "address, allowed",
    [("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.0.0.1", False),
     ("172.16.5.4", False), ("192.168.1.1", False), ("169.254.169.254", False), ("::1", False),
     ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False), ("0.0.0.0", False),
     ("224.0.0.1", False), ("100.64.0.1", False)],
)  # fmt: skip
def test_address_policy(address, allowed):
    ip = parse_ip(address)
    assert ip is not None
    assert AddressPolicy().permits(ip) is allowed
    assert AddressPolicy(allow_private=True).permits(ip) is True


def test_allowed_networks_open_only_themselves():
    policy = AddressPolicy(allowed_networks=["127.0.0.1/32", "10.8.0.0/16"])
    assert [policy.permits(parse_ip(a)) for a in ("127.0.0.1", "127.0.0.2", "10.8.3.4", "10.9.0.1")] == [
        True, False, True, False,
    ]  # fmt: skip


async def test_check_url_and_the_guarded_resolver():
    policy = AddressPolicy()
    await check_url("https://93.184.216.34/x", policy)
    for bad in (
        "http://127.0.0.1/",
        "http://[::ffff:7f00:1]/",
        "file:///etc/passwd",
        "http:///nohost",
        "http://a:b/",
    ):
        with pytest.raises(BlockedAddress):
            await check_url(bad, policy)

    class Inner:
        def __init__(self, hosts):
            self.hosts = hosts

        async def resolve(self, host, port=0, family=0):
            return [
                {"hostname": host, "host": h, "port": port, "family": family, "proto": 0, "flags": 0}
                for h in self.hosts
            ]

        async def close(self):
            pass

    mixed = GuardedResolver(policy, Inner(["10.0.0.5", "93.184.216.34"]))
    assert [r["host"] for r in await mixed.resolve("rebind.example", 443)] == ["93.184.216.34"]
    with pytest.raises(BlockedAddress):
        await GuardedResolver(policy, Inner(["169.254.169.254"])).resolve("metadata.example", 80)
