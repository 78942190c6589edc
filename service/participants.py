"""HTTP handlers for one participant: add/update/register, list, remove, restore."""

from __future__ import annotations

from aiohttp import web

from .auth import authenticated_username
from .errors import json_response
from .http_input import page_params, parse_register, read_json_model
from .participant_store import ParticipantIn, list_participants, save_participant, set_status
from .resources import DB
from .roles import Action, authorize, load_scope


def _oids(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["studyOID"], request.match_info.get("siteOID")


def _write_action(site_oid: str | None) -> Action:
    return Action.WRITE_AT_SITE if site_oid is not None else Action.WRITE_AT_STUDY


async def add_participant(request: web.Request) -> web.Response:
    """POST .../participants: add, update, reassign or register one participant."""
    study_oid, site_oid = _oids(request)
    username = await authenticated_username(request)
    await request.read()  # received before a connection is taken; parsed after the access checks
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(conn, username, study_oid, site_oid)
        authorize(scope, _write_action(site_oid))  # OC4's order: who and where before what
        register = parse_register(request)
        body = await read_json_model(request, ParticipantIn, scope.params)
        result = await save_participant(conn, scope, body, register)
    return json_response(result)


async def get_participants(request: web.Request) -> web.Response:
    """GET .../participants: OC4's listing, paged, without personal data."""
    study_oid, site_oid = _oids(request)
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(conn, username, study_oid, site_oid)
        authorize(scope, Action.LIST)
        page, size = page_params(request)
        rows = await list_participants(conn, scope, page, size)
    return json_response({"studyParticipants": rows})


async def _set_status(request: web.Request, remove: bool) -> web.Response:
    study_oid, site_oid = _oids(request)
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(conn, username, study_oid, site_oid)
        authorize(scope, _write_action(site_oid))
        result = await set_status(conn, scope, request.match_info["subjectKey"], remove)
    return json_response(result)


async def remove_participant(request: web.Request) -> web.Response:
    return await _set_status(request, remove=True)


async def restore_participant(request: web.Request) -> web.Response:
    return await _set_status(request, remove=False)
