"""The admin API under ``/admin/api/``: studies, sites, users and roles (users with the admin flag only)."""

from __future__ import annotations

from aiohttp import web

from . import directory
from .auth import authenticated_username
from .errors import ApiError, json_response
from .http_input import read_json_model
from .resources import DB


async def require_admin(request: web.Request) -> str:
    """The caller's username, if the caller is an admin; 401/403 otherwise."""
    username = await authenticated_username(request)
    is_admin = await request.app[DB].fetchval("SELECT admin FROM users WHERE username = $1", username)
    if is_admin is None:
        raise ApiError("noRoleSetUp")
    if not is_admin:
        raise ApiError("noSufficientPrivileges")
    return username


async def create_study(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json_model(request, directory.StudyIn)
    async with request.app[DB].acquire() as conn:
        return json_response(await directory.create_study(conn, body), status=201)


async def list_studies(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return json_response({"studies": await directory.list_studies(conn)})


async def get_study(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        row = await directory.get_study(conn, request.match_info["studyOID"])
        return json_response(directory.study_view(row))


async def patch_study(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json_model(request, directory.StudyPatch)
    async with request.app[DB].acquire() as conn:
        return json_response(await directory.patch_study(conn, request.match_info["studyOID"], body))


async def create_site(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json_model(request, directory.SiteIn)
    async with request.app[DB].acquire() as conn:
        return json_response(await directory.create_site(conn, request.match_info["studyOID"], body), status=201)


async def list_sites(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return json_response({"sites": await directory.list_sites(conn, request.match_info["studyOID"])})


async def patch_site(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json_model(request, directory.SitePatch)
    async with request.app[DB].acquire() as conn:
        site = await directory.patch_site(conn, request.match_info["studyOID"], request.match_info["siteOID"], body)
        return json_response(site)


async def create_user(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json_model(request, directory.UserIn)
    async with request.app[DB].acquire() as conn:
        return json_response(await directory.create_user(conn, body), status=201)


async def list_users(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return json_response({"users": await directory.list_users(conn)})


async def grant_role(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json_model(request, directory.RoleIn)
    async with request.app[DB].acquire() as conn:
        return json_response(await directory.grant_role(conn, request.match_info["username"], body), status=201)


async def list_roles(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return json_response({"roles": await directory.list_roles(conn, request.match_info["username"])})


async def revoke_role(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json_model(request, directory.RoleIn)
    async with request.app[DB].acquire() as conn:
        await directory.revoke_role(conn, request.match_info["username"], body)
    return web.Response(status=204)
