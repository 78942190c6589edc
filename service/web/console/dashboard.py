"""The operators' dashboard: the last hour or day of jobs and webhook deliveries as charts drawn
on the server (charts.py), from core.dashboard's reading, with the queues as they are now."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.core import stats
from service.core.dashboard import OUTCOMES, Dashboard, read_dashboard
from service.core.errors import ApiError
from service.web.console.charts import Series, bar_chart, line_chart
from service.web.console.render import render
from service.web.resources import DB, REDIS, SETTINGS

OUTCOME_NAMES = {
    "success": "delivered", "http_error": "HTTP error", "timeout": "timed out",
    "connection_error": "connection error", "blocked": "address refused", "gone": "410 gone",
}  # fmt: skip


def charts(data: Dashboard) -> list[dict[str, Any]]:
    """Each chart with the legend beside it (the names in the order of the series' colours)."""
    per = "minute" if data.window == "hour" else "15 minutes"
    b = data.buckets
    hooks = [Series(OUTCOME_NAMES[o], data.webhookAttempts[o]) for o in OUTCOMES]
    return [
        {"title": f"Jobs finished per {per}", "svg": bar_chart("chart-jobs", f"Jobs finished per {per}", b,
                          [Series("completed", data.jobsCompleted), Series("failed", data.jobsFailed)]),
         "legend": ["completed", "failed"]},
        {"title": "Jobs waiting for a worker", "svg": line_chart("chart-waiting", "Jobs waiting for a worker", b, [Series("waiting", data.jobsWaiting)]),
         "legend": ["waiting (at the end of each interval)"]},
        {"title": f"Job duration (p50, p95) per {per}", "svg": line_chart("chart-duration", f"Job duration per {per}", b,
                           [Series("p50", data.durationP50), Series("p95", data.durationP95)], unit="s"),
         "legend": ["p50", "p95"]},
        {"title": f"Webhook delivery attempts per {per}",
         "svg": bar_chart("chart-webhooks", f"Webhook delivery attempts per {per}", b, hooks),
         "legend": [s.name for s in hooks]},
    ]  # fmt: skip


async def dashboard(request: web.Request) -> web.StreamResponse:
    window = request.query.get("window", "hour")
    if window not in ("hour", "day"):
        raise ApiError("invalidParameter", {"parameter": "window"})
    config = request.config_dict
    async with config[DB].acquire() as conn:
        data = await read_dashboard(conn, window)  # type: ignore[arg-type]
    queues = await stats.queue_health(config[REDIS], config[SETTINGS])
    context = {"data": data, "charts": charts(data), "queues": queues, "window": window}
    return render(request, "ops_dashboard.html", context)
