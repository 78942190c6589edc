"""Building the study, sites, users and roles a test needs, through the same code the admin API uses."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import ClientResponse

from service.core import directory
from service.settings import Settings
from service.web.tokens import mint_token

STUDY = "S_JUNO(PROD)"
SITE_A = "S_OHIO(TEST)"
SITE_B = "S_TEXAS"

# The usual cast: username -> roles as (site OID or None for study level, role)
CAST: dict[str, list[tuple[str | None, str]]] = {
    "dm": [(None, "coordinator")],
    "dspec": [(None, "investigator")],
    "dep": [(None, "ra")],
    "director": [(None, "director")],
    "monitor": [(None, "monitor")],
    "viewer": [(None, "viewer")],
    "crc_a": [(SITE_A, "ra")],
    "inv_a": [(SITE_A, "investigator")],
    "dm_a": [(SITE_A, "coordinator")],
    "ra2_a": [(SITE_A, "ra2")],
    "monitor_a": [(SITE_A, "monitor")],
    "viewer_a": [(SITE_A, "viewer")],
    "crc_b": [(SITE_B, "ra")],
}


class World:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    async def study(self, oid: str = STUDY, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", "Juno")
        async with self.pool.acquire() as conn:
            return await directory.create_study(conn, directory.StudyIn(oid=oid, **fields))

    async def site(self, oid: str, study: str = STUDY, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", oid)
        async with self.pool.acquire() as conn:
            return await directory.create_site(conn, study, directory.SiteIn(oid=oid, **fields))

    async def user(
        self,
        username: str,
        roles: list[tuple[str | None, str]] = (),
        study: str = STUDY,
        full_name: str = "",
        admin: bool = False,
    ) -> str:
        """Create the user with these roles; return a bearer token for them."""
        async with self.pool.acquire() as conn:
            await directory.create_user(
                conn, directory.UserIn(username=username, fullName=full_name or username.title(), admin=admin)
            )
            for site, role in roles:
                await directory.grant_role(
                    conn, username, directory.RoleIn(studyOid=study, siteOid=site, role=role)
                )
        return self.token(username)

    def token(self, username: str, ttl: int = 3600) -> str:
        return mint_token(self.settings, username, ttl)

    def auth(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}

    async def standard(self, **study_fields: Any) -> None:
        """Study S_JUNO(PROD) with sites S_OHIO(TEST) and S_TEXAS, and the whole CAST."""
        study_fields.setdefault("participateEnabled", True)
        await self.study(**study_fields)
        await self.site(SITE_A)
        await self.site(SITE_B)
        for username, roles in CAST.items():
            await self.user(username, roles)
        await self.user("admin", admin=True, full_name="Ada Admin")


async def expect(resp: ClientResponse, status: int) -> Any:
    """The response body (JSON if it is JSON), after checking the status; the body is in the failure message."""
    text = await resp.text()
    assert resp.status == status, f"expected {status}, got {resp.status}: {text[:2000]}"
    if resp.content_type == "application/json":
        return await resp.json()
    return text
