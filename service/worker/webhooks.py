"""Webhook delivery: Standard Webhooks v1 requests from the outbox, at least once.

- ``OutboxListener`` enqueues new messages as soon as their transaction commits (LISTEN/NOTIFY);
- ``sweep_webhook_outbox`` (cron, every 5 seconds) enqueues ``deliver_webhook`` for each due
  message; the arq job id names the message and its attempt number, so a message is queued once
  per attempt however many sweepers run.
- ``deliver_webhook`` claims the message with a lease (``next_attempt_at`` moved ahead), makes one
  attempt, logs it in ``webhook_attempts`` and schedules the next one. A worker killed mid-attempt
  leaves a pending message whose lease expires: the sweeper queues it again. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from arq.connections import ArqRedis
from arq.cron import CronJob, cron
from arq.worker import func

from service.core.jobs.model import COMPLETED, EXTRACT_PARTICIPANTS
from service.core.urls import job_urls, oc4_base
from service.core.webhooks import models, rules, store
from service.core.webhooks.outbox import DELIVER_FUNCTION, NOTIFY_CHANNEL, enqueue_delivery
from service.core.webhooks.ssrf import AddressPolicy, BlockedAddress, GuardedResolver, check_url
from service.settings import Settings

log = logging.getLogger("participants.webhooks")

USER_AGENT = "participants-webhooks/1 (Standard Webhooks v1)"
SWEEP_BATCH = 500

CLAIM = """
UPDATE webhook_messages SET next_attempt_at = now() + make_interval(secs => $2), attempts = attempts + 1
WHERE id = $1 AND status = 'pending' AND next_attempt_at <= now()
RETURNING *, coalesce(retry_until, created_at + make_interval(secs => $3)) AS retry_deadline
"""


def policy(settings: Settings) -> AddressPolicy:
    return AddressPolicy(settings.webhook_allow_private, settings.webhook_allowed_networks)


def event_base_url(payload: dict[str, Any], settings: Settings) -> str:
    """Absolute, as the job API's URLs: ``PARTICIPANTS_PUBLIC_URL`` when set, else the base URL the
    job was submitted through (kept with the event), else where this service listens."""
    if settings.public_url:
        return oc4_base(settings.public_url, settings.path_prefix)
    if payload.get("baseUrl"):
        return str(payload["baseUrl"])
    return oc4_base(f"http://{settings.host}:{settings.port}", settings.path_prefix)


def event_body(payload: dict[str, Any], settings: Settings) -> bytes:
    """The stored event plus its URLs; the same bytes for every attempt under the same settings."""
    stored = payload["data"]
    # The documented order (jsonb sorts keys).
    data = {name: stored.get(name) for name in models.JobEventData.model_fields}
    status_url, download_url = job_urls(event_base_url(payload, settings), data["jobUuid"])
    data["statusUrl"] = status_url
    completed_extract = data["jobType"] == EXTRACT_PARTICIPANTS and data["status"] == COMPLETED
    data["downloadUrl"] = download_url if completed_extract else None
    return orjson.dumps({"type": payload["type"], "timestamp": payload["timestamp"], "data": data})


async def sweep_webhook_outbox(ctx: dict[str, Any]) -> int:
    """Queue every due message; returns how many were newly queued."""
    settings: Settings = ctx["settings"]
    rows = await ctx["db"].fetch(
        """SELECT id, attempts FROM webhook_messages WHERE status = 'pending' AND next_attempt_at <= now()
           ORDER BY next_attempt_at LIMIT $1""",
        SWEEP_BATCH,
    )
    queued = 0
    for r in rows:
        queued += await enqueue_delivery(ctx["redis"], settings, r["id"], r["attempts"])
    return queued


class OutboxListener:
    """Enqueues new outbox messages the moment their transaction commits (Postgres ``NOTIFY`` is
    delivered on commit only). An optimisation: without it the sweeper finds them within seconds.

    Start from the worker's startup and stop in its shutdown (``start_outbox_listener`` /
    ``stop_outbox_listener``); it holds one dedicated connection.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: ArqRedis) -> None:
        self.settings, self.pool, self.redis = settings, pool, redis
        self.conn: asyncpg.Connection | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False

    async def start(self) -> None:
        assert self.settings.database_url
        self.conn = await asyncpg.connect(
            self.settings.database_url, timeout=self.settings.db_timeout_seconds
        )
        await self.conn.add_listener(NOTIFY_CHANNEL, self._notified)
        self.conn.add_termination_listener(self._lost)

    def _lost(self, conn: Any) -> None:
        """The LISTEN connection died (a failover, a restart): listen again, on whichever host the
        DSN's ``target_session_attrs`` finds primary, and sweep what was notified meanwhile."""
        if self.conn is conn and not self.stopping:
            self.conn = None
            task = asyncio.get_running_loop().create_task(self._listen_again())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _listen_again(self) -> None:
        delay = 0.2
        while not self.stopping:
            try:
                await self.start()
            except Exception as exc:  # noqa: BLE001 - anything but success: wait and try again
                log.warning("outbox listener cannot listen yet: %s", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            log.warning("outbox listener listening again")
            await self._enqueue("")  # an empty payload sweeps the outbox
            return

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        task = asyncio.get_running_loop().create_task(self._enqueue(payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _enqueue(self, payload: str) -> None:
        try:
            ids = [int(p) for p in payload.split(",") if p.isdigit()]
            if not ids:
                await sweep_webhook_outbox({"settings": self.settings, "db": self.pool, "redis": self.redis})
            for message_id in ids:  # attempt 0: the same arq job id the sweeper would use
                await enqueue_delivery(self.redis, self.settings, message_id, 0)
        except Exception as exc:  # the sweeper covers anything missed here
            log.warning("outbox listener could not enqueue: %s", type(exc).__name__)

    async def stop(self) -> None:
        self.stopping = True
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.conn is not None:
            await self.conn.close()
            self.conn = None


async def start_outbox_listener(ctx: dict[str, Any]) -> None:
    """For the worker's ``on_startup``: listen for new outbox rows (needs ``db`` and ``redis`` in ctx)."""
    listener = OutboxListener(ctx["settings"], ctx["db"], ctx["redis"])
    await listener.start()
    ctx["outbox_listener"] = listener


async def stop_outbox_listener(ctx: dict[str, Any]) -> None:
    """For the worker's ``on_shutdown``."""
    listener = ctx.pop("outbox_listener", None)
    if listener is not None:
        await listener.stop()


async def deliver_webhook(ctx: dict[str, Any], message_id: int) -> str:
    """One delivery attempt of one message; returns the outcome (or why nothing was attempted)."""
    return await attempt_delivery(ctx["db"], ctx["settings"], message_id)


async def attempt_delivery(pool: asyncpg.Pool, settings: Settings, message_id: int) -> str:
    window = settings.webhook_retry_hours * 3600.0
    async with pool.acquire() as conn:
        endpoint = await conn.fetchrow(
            """SELECT e.* FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id
               WHERE m.id = $1 AND m.status = 'pending'""",
            message_id,
        )
        if endpoint is None:
            return "not_pending"
        if not endpoint["enabled"]:
            await conn.execute(
                "UPDATE webhook_messages SET status = 'failed', last_error = 'endpoint disabled'"
                " WHERE id = $1 AND status = 'pending'",
                message_id,
            )
            return "endpoint_disabled"
        lease = max(settings.webhook_lease_seconds, 2 * settings.webhook_timeout_seconds)
        msg = await conn.fetchrow(CLAIM, message_id, lease, window)
        if msg is None:
            return "not_due"  # another attempt holds the lease, or it is not time yet
        secrets = await store.active_secrets(conn, endpoint["id"])

    body = event_body(msg["payload"], settings)
    started = time.perf_counter()
    result = await send(endpoint["url"], msg["msg_id"], body, secrets, settings)
    duration_ms = int((time.perf_counter() - started) * 1000)
    now = datetime.now(UTC)

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO webhook_attempts (message_id, attempt, duration_ms, outcome, http_status, response_excerpt, error)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            message_id, msg["attempts"], duration_ms, result.outcome, result.http_status, result.excerpt, result.error,
        )  # fmt: skip
        if result.outcome == "success":
            await conn.execute(
                "UPDATE webhook_messages SET status = 'delivered', delivered_at = now(), last_error = NULL WHERE id = $1",
                message_id,
            )
        elif result.outcome == "gone":
            await conn.execute(
                "UPDATE webhook_messages SET status = 'failed', last_error = $2 WHERE id = $1",
                message_id, "410 Gone: endpoint disabled",
            )  # fmt: skip
            await conn.execute(
                "UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'gone', updated_at = now()"
                " WHERE id = $1",
                endpoint["id"],
            )
        else:
            retry_after = result.retry_after_seconds(now)
            when = rules.next_attempt_at(msg["attempts"], now, msg["retry_deadline"], settings, retry_after)
            if when is None:
                await conn.execute(
                    "UPDATE webhook_messages SET status = 'failed', last_error = $2 WHERE id = $1",
                    message_id, f"gave up after {msg['attempts']} attempts: {result.summary()}",
                )  # fmt: skip
            else:
                await conn.execute(
                    "UPDATE webhook_messages SET next_attempt_at = $2, last_error = $3 WHERE id = $1",
                    message_id, when, result.summary(),
                )  # fmt: skip
    log.info(
        "webhook attempt",
        extra={
            "message_id": message_id,
            "endpoint_id": endpoint["id"],
            "attempt": msg["attempts"],
            "outcome": result.outcome,
            "http_status": result.http_status,
            "ms": duration_ms,
        },
    )
    return result.outcome


class AttemptResult:
    def __init__(
        self,
        outcome: models.Outcome,
        http_status: int | None = None,
        excerpt: str | None = None,
        error: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        self.outcome = outcome
        self.http_status = http_status
        self.excerpt = excerpt
        self.error = error
        self.retry_after = retry_after

    def retry_after_seconds(self, now: datetime) -> float | None:
        """``Retry-After`` counts for 429 and 5xx only (a 3xx or 4xx's header is not about load)."""
        if self.http_status is None or not (self.http_status == 429 or self.http_status >= 500):
            return None
        return rules.parse_retry_after(self.retry_after, now)

    def summary(self) -> str:
        if self.http_status is not None:
            return f"HTTP {self.http_status}"
        return f"{self.outcome}: {self.error}" if self.error else self.outcome


async def send(url: str, msg_id: str, body: bytes, secrets: list[str], settings: Settings) -> AttemptResult:
    """POST one signed event; never raises for anything the receiver or the network does."""
    guard = policy(settings)
    timestamp = int(time.time())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": rules.signature_header(secrets, msg_id, timestamp, body),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    try:
        await check_url(url, guard, resolve=False)  # literal IPs skip the resolver below
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(guard), force_close=True)
        timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.post(url, data=body, headers=headers, allow_redirects=False) as resp,
        ):
            text = await resp.content.read(rules.EXCERPT_CHARS * 4)
            return AttemptResult(
                rules.classify(resp.status),
                resp.status,
                rules.excerpt(text),
                None,
                resp.headers.get("Retry-After"),
            )
    except BlockedAddress as exc:
        return AttemptResult("blocked", error=exc.reason)
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, BlockedAddress) or isinstance(exc.__cause__, BlockedAddress):
            return AttemptResult("blocked", error="address not allowed")
        return AttemptResult("connection_error", error=type(exc).__name__)
    except TimeoutError:
        return AttemptResult("timeout", error=f"no answer within {settings.webhook_timeout_seconds:g} s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return AttemptResult("connection_error", error=type(exc).__name__)


FUNCTIONS: list[Any] = [func(deliver_webhook, name=DELIVER_FUNCTION, keep_result=0, max_tries=3)]
CRON_JOBS: list[CronJob] = [
    cron(sweep_webhook_outbox, second=set(range(0, 60, 5)), keep_result=0, unique=True, max_tries=1)
]
