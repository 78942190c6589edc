"""Times on console pages: each one a ``<time>`` element holding the exact instant, its text in UTC
for a browser without scripts; static/times.js rewrites the text in the browser's own time zone
and language (no library, no CDN)."""

from __future__ import annotations

import datetime as dt

from markupsafe import Markup


def when(value: str | dt.datetime | None) -> Markup:
    """``2026-12-04T20:15:27.033861Z`` as ``<time datetime="...">2026-12-04 20:15 UTC</time>``."""
    if not value:
        return Markup("")
    at = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    at = at.astimezone(dt.UTC)
    iso = at.isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{}">{}</time>').format(iso, at.strftime("%Y-%m-%d %H:%M UTC"))
