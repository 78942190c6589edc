"""Signing in to the console over plain HTTP, for tests that need no browser."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from service.core import accounts

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def give_password(pool: asyncpg.Pool, *usernames: str) -> None:
    async with pool.acquire() as conn:
        for username in usernames:
            await accounts.set_password(conn, username, PASSWORD)


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, html[:500]
    return m.group(1)


async def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    """The answer to the login form (a 303 to the console when it worked)."""
    page = await client.get("/console/login")
    token = csrf_of(await page.text())
    return await client.post(
        "/console/login",
        data={"csrf": token, "username": username, "password": password},
        allow_redirects=False,
    )


async def page_csrf(client: TestClient, path: str = "/console/") -> str:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return csrf_of(await resp.text())
