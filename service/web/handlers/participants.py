"""HTTP handlers for one participant: add/update/register, list, remove, restore."""

from __future__ import annotations

import hashlib

from aiohttp import web

from service.core.participant_list import ParticipantList, list_participants
from service.core.participants import ParticipantIn, ParticipantOut, save_participant, set_status
from service.core.roles import Action, authorize, load_scope
from service.web.apidoc import PAGE, Link, Query, operation
from service.web.auth import authenticated_username
from service.web.idempotency import Recorder, once
from service.web.input import FLAG_SCHEMA, accept_query, page_params, parse_register, read_json_model
from service.web.replies import reply
from service.web.resources import DB


def _oids(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["studyOID"], request.match_info.get("siteOID")


def _write_action(site_oid: str | None) -> Action:
    return Action.WRITE_AT_SITE if site_oid is not None else Action.WRITE_AT_STUDY


@operation("List participants (no personal data)", "participants", ok={200: ParticipantList}, query=PAGE)
async def get_participants(request: web.Request) -> web.Response:
    """GET .../participants: OC4's listing, paged, without personal data."""
    study_oid, site_oid = _oids(request)
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(conn, username, study_oid, site_oid)
        authorize(scope, Action.LIST)
        accept_query(request)
        page, size = page_params(request)
        listed = await list_participants(conn, scope, page, size)
    return reply(listed)


async def _set_status(request: web.Request, remove: bool) -> web.Response:
    study_oid, site_oid = _oids(request)
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(conn, username, study_oid, site_oid)
        authorize(scope, _write_action(site_oid))
        accept_query(request)
        result = await set_status(conn, scope, request.match_info["subjectKey"], remove)
    return reply(result)


@operation("Remove a participant", "participants", ok={200: ParticipantOut}, errors=(409,))
async def remove_participant(request: web.Request) -> web.Response:
    return await _set_status(request, remove=True)


@operation("Restore a removed participant", "participants", ok={200: ParticipantOut}, errors=(409,))
async def restore_participant(request: web.Request) -> web.Response:
    return await _set_status(request, remove=False)


def _same_participant(name: str, target: object) -> Link:
    path = {"studyOID": "$request.path.studyOID", "siteOID": "$request.path.siteOID"}
    return Link(name, target, {**path, "subjectKey": "$response.body#/subjectKey"})  # type: ignore[arg-type]


@operation(
    "Add, update or register one participant",
    "participants",
    body=ParticipantIn,
    ok={200: ParticipantOut},
    query=[Query("register", FLAG_SCHEMA, "y/n/yes/no, any case; default n")],
    errors=(409,),
    links=(_same_participant("remove", remove_participant), _same_participant("restore", restore_participant)),
    idempotent=True,
)  # fmt: skip
async def add_participant(request: web.Request) -> web.StreamResponse:
    """POST .../participants: add, update, reassign or register one participant."""
    study_oid, site_oid = _oids(request)
    username = await authenticated_username(request)
    raw = await request.read()  # received before a connection is taken; parsed after the access checks
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(conn, username, study_oid, site_oid)
        authorize(scope, _write_action(site_oid))  # OC4's order: who and where before what
        accept_query(request)

        async def save(_: Recorder | None) -> web.Response:
            register = parse_register(request)
            body = await read_json_model(request, ParticipantIn, scope.params)
            return reply(await save_participant(conn, scope, body, register))

        return await once(request, conn, username, hashlib.sha256(raw).digest(), save)
