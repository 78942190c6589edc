"""(being built in this session)"""

from __future__ import annotations

from aiohttp import web


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    """Register this module's routes under the OC4 path prefix."""
