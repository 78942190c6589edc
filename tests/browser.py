"""A real browser for the console tests: Debian's Chromium driven by Playwright for Python.

Playwright's own browser download is not used (it may be unreachable): the system Chromium is
launched through ``executable_path``. When Chromium or Playwright is missing, the tests that need
it are skipped with the reason (pytest's ``-ra`` summary prints it); ``make test`` installs
Chromium with apt-get first when it runs as root.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CHROMIUM_CANDIDATES = (
    os.environ.get("PARTICIPANTS_TEST_CHROMIUM", ""),
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
)
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "browser tests skipped: the playwright package is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return (
            "browser tests skipped: no Chromium at /usr/bin/chromium (apt-get install -y chromium, as root)"
        )
    return None


@asynccontextmanager
async def browser_context() -> AsyncIterator[Any]:
    """A fresh Chromium (its own empty profile) and a browser context that accepts downloads."""
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    try:
        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True, args=LAUNCH_ARGS,
                accept_downloads=True, viewport={"width": 1280, "height": 900},
            )  # fmt: skip
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
