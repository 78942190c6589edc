"""``/metrics`` is cheap to scrape: the job gauges come from a cached reading refreshed at most every
``metrics_refresh_seconds``, scrapes arriving together share one reading, and an optional bearer
token guards the scrape."""

from __future__ import annotations

import asyncio

from tests.test_ops import samples
from tests.test_webhooks_support import finished_job
from tests.world import expect

JOBS_COMPLETED = ("participants_jobs", (("status", "COMPLETED"), ("type", "EXTRACT_PARTICIPANTS")))


async def _completed(client) -> float:
    return samples(await expect(await client.get("/metrics"), 200)).get(JOBS_COMPLETED, 0)


async def test_job_gauges_are_read_at_most_once_per_refresh_interval(make_client, world, pool):
    await world.standard()
    cached = await make_client(metrics_refresh_seconds=3600)
    live = await make_client(metrics_refresh_seconds=0)
    assert await _completed(cached) == 0 and await _completed(live) == 0
    await finished_job(pool, "COMPLETED")
    assert await _completed(cached) == 0  # the reading from the first scrape still stands
    assert await _completed(live) == 1


async def test_simultaneous_scrapes_share_one_reading(make_client, world):
    from service.web.metrics import METRICS

    client = await make_client(metrics_refresh_seconds=0)
    collector = client.app[METRICS].jobs
    readings = 0
    original = collector.refresh

    async def counted(*args):
        nonlocal readings
        readings += 1
        await asyncio.sleep(0.2)  # long enough for every scraper to arrive while it runs
        await original(*args)

    collector.refresh = counted
    answers = await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
    assert [r.status for r in answers] == [200] * 50
    assert readings == 1
    texts = [await r.text() for r in answers]
    assert all("participants_metrics_refresh_ok 1.0" in t for t in texts)


async def test_a_configured_token_guards_the_scrape(make_client):
    client = await make_client(metrics_token="scrape-token-1234")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-token-1234"}):
        resp = await client.get("/metrics", headers=headers)
        got = await expect(resp, 401)
        assert got["message"] == "errorCode.unauthenticated" and resp.headers["WWW-Authenticate"] == "Bearer"
        assert "scrape-token-1234" not in str(got)
    resp = await client.get("/metrics", headers={"Authorization": "Bearer scrape-token-1234"})
    assert "participants_http_requests_total" in await expect(resp, 200)
    # the liveness probe stays open: only the scrape is guarded
    await expect(await client.get("/healthz"), 200)


async def test_a_scrape_answers_when_a_dependency_is_down_with_the_last_reading(
    make_client, world, pool, monkeypatch
):
    from service.web import metrics

    await world.standard()
    await finished_job(pool, "COMPLETED")
    client = await make_client(metrics_refresh_seconds=0)
    assert await _completed(client) == 1

    async def down(*args):
        raise ConnectionRefusedError

    monkeypatch.setattr(metrics, "job_stats", down)
    m = samples(await expect(await client.get("/metrics"), 200))
    assert m[("participants_metrics_refresh_ok", ())] == 0
    assert m[JOBS_COMPLETED] == 1  # the last good reading stands until Postgres and Redis answer again
