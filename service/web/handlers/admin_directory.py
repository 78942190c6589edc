"""The admin API under ``/admin/api/``: studies, sites, users and roles (users with the admin flag only)."""

from __future__ import annotations

from aiohttp import web

from service.core import audit, directory
from service.core.directory import (
    RoleList,
    RoleOut,
    SiteList,
    SiteOut,
    StudyList,
    StudyOut,
    UserList,
    UserOut,
)
from service.web.apidoc import NO_CONTENT, operation
from service.web.auth import require_admin
from service.web.input import read_json_model
from service.web.replies import reply
from service.web.resources import DB


@operation("Create a study", "admin", body=directory.StudyIn, ok={201: StudyOut}, errors=(409,))
async def create_study(request: web.Request) -> web.Response:
    actor = (await require_admin(request)).actor
    body = await read_json_model(request, directory.StudyIn)
    async with request.app[DB].acquire() as conn, conn.transaction():
        study = await directory.create_study(conn, body)
        await audit.record_by(
            conn, actor, "admin.study.create", {"studyOid": body.oid, "fields": audit.field_names(body)}
        )
    return reply(study, status=201)


@operation("List studies", "admin", ok={200: StudyList})
async def list_studies(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return reply(await directory.list_studies(conn))


@operation("One study", "admin", ok={200: StudyOut})
async def get_study(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        row = await directory.get_study(conn, request.match_info["studyOID"])
        return reply(directory.study_view(row))


@operation("Change a study", "admin", body=directory.StudyPatch, ok={200: StudyOut})
async def patch_study(request: web.Request) -> web.Response:
    actor = (await require_admin(request)).actor
    body = await read_json_model(request, directory.StudyPatch)
    study_oid = request.match_info["studyOID"]
    async with request.app[DB].acquire() as conn, conn.transaction():
        study = await directory.patch_study(conn, study_oid, body)
        await audit.record_by(
            conn, actor, "admin.study.update", {"studyOid": study_oid, "fields": audit.field_names(body)}
        )
    return reply(study)


@operation("Create a site", "admin", body=directory.SiteIn, ok={201: SiteOut}, errors=(409,))
async def create_site(request: web.Request) -> web.Response:
    actor = (await require_admin(request)).actor
    body = await read_json_model(request, directory.SiteIn)
    study_oid = request.match_info["studyOID"]
    async with request.app[DB].acquire() as conn, conn.transaction():
        site = await directory.create_site(conn, study_oid, body)
        details = {"studyOid": study_oid, "siteOid": body.oid, "fields": audit.field_names(body)}
        await audit.record_by(conn, actor, "admin.site.create", details)
    return reply(site, status=201)


@operation("List a study's sites", "admin", ok={200: SiteList})
async def list_sites(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return reply(await directory.list_sites(conn, request.match_info["studyOID"]))


@operation("Change a site", "admin", body=directory.SitePatch, ok={200: SiteOut})
async def patch_site(request: web.Request) -> web.Response:
    actor = (await require_admin(request)).actor
    body = await read_json_model(request, directory.SitePatch)
    study_oid, site_oid = request.match_info["studyOID"], request.match_info["siteOID"]
    async with request.app[DB].acquire() as conn, conn.transaction():
        site = await directory.patch_site(conn, study_oid, site_oid, body)
        details = {"studyOid": study_oid, "siteOid": site_oid, "fields": audit.field_names(body)}
        await audit.record_by(conn, actor, "admin.site.update", details)
    return reply(site)


@operation("Create a user", "admin", body=directory.UserIn, ok={201: UserOut}, errors=(409,))
async def create_user(request: web.Request) -> web.Response:
    actor = (await require_admin(request)).actor
    body = await read_json_model(request, directory.UserIn)
    async with request.app[DB].acquire() as conn, conn.transaction():
        user = await directory.create_user(conn, body)
        # The username is the account's identifier; the full name is personal data and stays out.
        await audit.record_by(conn, actor, "admin.user.create", {"user": body.username, "admin": body.admin})
    return reply(user, status=201)


@operation(
    "Disable or enable a user, or change the admin flag", "admin", body=directory.UserPatch, ok={200: UserOut}
)
async def patch_user(request: web.Request) -> web.Response:
    actor = (await require_admin(request)).actor
    body = await read_json_model(request, directory.UserPatch)
    username = request.match_info["username"]
    async with request.app[DB].acquire() as conn:
        user = await directory.update_user(conn, actor, username, body)
    return reply(user)


@operation("Sign a user out everywhere", "admin", ok={204: NO_CONTENT})
async def revoke_sessions(request: web.Request) -> web.Response:
    """POST /admin/api/users/{username}/sessions/revoke: every console session of the user ends and
    every token issued to them before now is refused (401, ``params.reason`` ``revoked``)."""
    actor = (await require_admin(request)).actor
    async with request.app[DB].acquire() as conn:
        await directory.revoke_user_sessions(conn, actor, request.match_info["username"])
    return web.Response(status=204)


@operation("List users", "admin", ok={200: UserList})
async def list_users(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return reply(await directory.list_users(conn))


@operation("Grant a role", "admin", body=directory.RoleIn, ok={201: RoleOut}, errors=(409,))
async def grant_role(request: web.Request) -> web.Response:
    actor = (await require_admin(request)).actor
    body = await read_json_model(request, directory.RoleIn)
    username = request.match_info["username"]
    async with request.app[DB].acquire() as conn, conn.transaction():
        role = await directory.grant_role(conn, username, body)
        await audit.record_by(conn, actor, "admin.role.grant", {"user": username, **body.model_dump()})
    return reply(role, status=201)


@operation("A user's roles", "admin", ok={200: RoleList})
async def list_roles(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return reply(await directory.list_roles(conn, request.match_info["username"]))


@operation("Revoke a role", "admin", body=directory.RoleIn, ok={204: NO_CONTENT})
async def revoke_role(request: web.Request) -> web.Response:
    actor = (await require_admin(request)).actor
    body = await read_json_model(request, directory.RoleIn)
    username = request.match_info["username"]
    async with request.app[DB].acquire() as conn, conn.transaction():
        await directory.revoke_role(conn, username, body)
        await audit.record_by(conn, actor, "admin.role.revoke", {"user": username, **body.model_dump()})
    return web.Response(status=204)
