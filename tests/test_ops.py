"""The service's face: liveness, readiness, metrics, request ids, the docs page, worker health."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from unittest.mock import ANY

import orjson
from arq import create_pool
from prometheus_client.parser import text_string_to_metric_families

from service.core import worker_beats
from service.core.logs import JsonFormatter
from service.core.redis import redis_settings
from service.web.handlers import probes
from service.worker.health import check_health
from tests.test_webhooks_support import finished_job
from tests.world import SITE_A, STUDY, expect

SITE_PAGE = f"/console/studies/{STUDY}/sites/{SITE_A}"
SITE_PAGE_ROUTE = "/console/studies/{studyOID}/sites/{siteOID}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_healthz_and_readyz(client, pool):
    assert await expect(await client.get("/healthz"), 200) == {"status": "ok"}
    body = await expect(await client.get("/readyz"), 200)
    assert body.pop("postgresPrimary")  # the server the pool reaches, host:port
    assert body == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok", "storage": "ok"}}


async def test_readyz_reports_each_failing_dependency(client, pool, monkeypatch):
    async def pending(conn):
        return ["0099_future.sql"]

    async def broken(app):
        raise ConnectionRefusedError

    monkeypatch.setattr(probes, "pending_migrations", pending)
    monkeypatch.setattr(probes, "_redis", broken)
    resp = await client.get("/readyz")
    assert resp.headers["Retry-After"] == "5"
    assert await expect(resp, 503) == {
        "message": "errorCode.serviceUnavailable",
        "params": {"checks": {"postgres": "migrations pending: 0099_future.sql", "redis": "error: ConnectionRefusedError",
                              "storage": "ok"}, "postgresPrimary": ANY},
    }  # fmt: skip


async def test_request_id_is_echoed_or_generated(client, pool, caplog):
    caplog.set_level(logging.INFO, logger="participants.access")
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    [record] = [r for r in caplog.records if r.name == "participants.access"]
    line = orjson.loads(JsonFormatter().format(record))  # the structured line, as production writes it
    assert {k: line[k] for k in ("msg", "method", "route", "status", "request_id")} == {
        "msg": "request",
        "method": "GET",
        "route": "/healthz",
        "status": 200,
        "request_id": "abc-123",
    }
    resp = await client.get("/healthz", headers={"X-Request-ID": "x" * 500})  # unreasonable: replaced
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    resp = await client.get("/nowhere")
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"]) and resp.status == 404


async def test_metrics_count_requests_by_route_template_jobs_and_webhooks(make_client, world, pool, settings):
    client = await make_client()
    other = await make_client()  # a second app in the same process keeps its own counts
    await world.standard()
    for _ in range(3):
        await client.get("/healthz")
    await client.get("/pages/auth/api/jobs/SECRET-KEY-1", headers=world.auth("dm"))
    await client.get(f"/pages/auth/api/clinicaldata/studies/{STUDY}/participants", headers=world.auth("dm"))
    await finished_job(pool, "COMPLETED")
    await finished_job(pool, "FAILED")
    async with pool.acquire() as conn:
        from service.core.webhooks import models as wm
        from service.core.webhooks import store as ws

        await ws.create_endpoint(conn, wm.WebhookIn(url="https://93.184.216.34/x"))
    await finished_job(pool, "COMPLETED")
    await pool.execute("UPDATE jobs SET started_at = completed_at - interval '2 seconds'")
    msg = await pool.fetchval("SELECT id FROM webhook_messages")
    await pool.execute(
        "INSERT INTO webhook_attempts (message_id, attempt, duration_ms, outcome, http_status) VALUES"
        " ($1, 1, 5, 'http_error', 500), ($1, 2, 5, 'success', 200)",
        msg,
    )
    redis = await create_pool(redis_settings(settings))
    await redis.enqueue_job("extract_participants_job", "x", _queue_name=settings.extract_queue)
    await worker_beats.record(
        redis, settings.default_queue, worker_beats.beat_key(settings.default_queue), "alive", 60
    )
    await redis.aclose()

    resp = await client.get("/metrics")
    text = await expect(resp, 200)
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = samples(text)
    assert (
        m[("participants_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))]
        == 3
    )
    route = "/pages/auth/api/jobs/{jobUuid}"
    assert (
        m[("participants_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] == 1
    )
    route = "/pages/auth/api/clinicaldata/studies/{studyOID}/participants"
    assert (
        m[("participants_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 1
    )
    assert "SECRET-KEY-1" not in text  # templates, never raw paths
    assert (
        m[
            (
                "participants_http_request_duration_seconds_count",
                (("method", "GET"), ("route", "/healthz"), ("status", "200")),
            )
        ]
        == 3
    )
    assert m[("participants_jobs", (("status", "COMPLETED"), ("type", "EXTRACT_PARTICIPANTS")))] == 2
    assert m[("participants_jobs", (("status", "FAILED"), ("type", "EXTRACT_PARTICIPANTS")))] == 1
    assert m[("participants_job_duration_seconds_count", (("type", "EXTRACT_PARTICIPANTS"),))] == 3
    assert (
        m[("participants_job_duration_seconds_bucket", (("le", "1.0"), ("type", "EXTRACT_PARTICIPANTS")))]
        == 0
    )
    assert (
        m[("participants_job_duration_seconds_bucket", (("le", "2.5"), ("type", "EXTRACT_PARTICIPANTS")))]
        == 3
    )
    assert m[("participants_extract_rows_total", ())] == 6
    assert m[("participants_webhook_attempts_total", (("outcome", "http_error"),))] == 1
    assert m[("participants_webhook_attempts_total", (("outcome", "success"),))] == 1
    assert m[("participants_queue_depth", (("queue", settings.extract_queue),))] == 1
    assert m[("participants_worker_up", (("queue", settings.default_queue),))] == 1
    assert m[("participants_worker_up", (("queue", settings.extract_queue),))] == 0
    assert m[("participants_metrics_refresh_ok", ())] == 1

    other_m = samples(await expect(await other.get("/metrics"), 200))
    assert (
        "participants_http_requests_total",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    ) not in other_m


async def test_docs_page_uses_the_vendored_script(client, pool):
    page = await expect(await client.get("/docs"), 200)
    # Absolute: the page works at /docs and at /docs/ alike.
    assert '<redoc spec-url="/openapi.json"' in page and 'src="/docs/redoc.standalone.js"' in page
    resp = await client.get("/docs/redoc.standalone.js")
    script = await expect(resp, 200)
    assert resp.headers["Content-Type"].startswith("text/javascript")
    assert len(script) > 500_000 and "Redoc" in script[:200]


async def test_worker_health_counts_this_hosts_own_worker_processes(pool, settings, capsys):
    extract, default = settings.extract_queue, settings.default_queue
    assert await check_health(settings, [extract, default]) is False
    redis = await create_pool(redis_settings(settings))
    try:
        # Another host's worker (another container's replica) says nothing about this one.
        await worker_beats.record(redis, extract, f"{extract}:health-check:elsewhere:7", "elsewhere", 60)
        assert await check_health(settings, [extract]) is False
        await worker_beats.record(redis, extract, worker_beats.beat_key(extract), "Nov-22 j_complete=3", 60)
        assert await check_health(settings, [extract]) is True
        assert await check_health(settings, [extract, default]) is False  # the default queue's is missing
        await worker_beats.record(redis, default, worker_beats.beat_key(default), "Nov-22 j_complete=1", 0.3)
        assert await check_health(settings, [extract, default]) is True
        await asyncio.sleep(0.4)  # a heartbeat not refreshed in time: that worker is gone or stuck
        assert await check_health(settings, [default]) is False
        await worker_beats.forget(redis, extract, worker_beats.beat_key(extract))
        assert await check_health(settings, [extract]) is False
    finally:
        await redis.aclose()
    out = capsys.readouterr().out
    assert f"{extract}: pid {os.getpid()}: Nov-22 j_complete=3" in out
    assert f"{default}: no worker on {worker_beats.this_host()} with a recent heartbeat (queued: 0)" in out
    assert "elsewhere" not in out


async def test_a_redirect_is_logged_and_counted_with_its_own_status(client, pool, caplog):
    # A console page without a session raises a 303 to the login page: the error middleware lets
    # redirects through, and the client gets a 303, not a failure.
    caplog.set_level(logging.INFO, logger="participants.access")
    resp = await client.get(SITE_PAGE, headers={"X-Request-ID": "redirect-1"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    [record] = [r for r in caplog.records if r.name == "participants.access"]
    line = orjson.loads(JsonFormatter().format(record))
    assert {k: line[k] for k in ("method", "route", "status", "request_id")} == {
        "method": "GET",
        "route": SITE_PAGE_ROUTE,
        "status": 303,
        "request_id": "redirect-1",
    }
    assert isinstance(line["ms"], float) and line["ms"] >= 0
    m = samples(await expect(await client.get("/metrics"), 200))
    labels = (("method", "GET"), ("route", SITE_PAGE_ROUTE), ("status", "303"))
    assert m[("participants_http_requests_total", labels)] == 1
    assert m[("participants_http_request_duration_seconds_count", labels)] == 1
    assert not [k for k in m if k[0] == "participants_http_requests_total" and ("status", "500") in k[1]]
