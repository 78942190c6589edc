"""HTTP handlers for OC4's calls around one participant: the detail read, the account read, the
registered participants, the search by fields, the access link, ``connect`` (contact data, access
code reset, invitations) and the Participate status an integration reports."""

from __future__ import annotations

import hashlib

import asyncpg
from aiohttp import web
from pydantic import RootModel

from service.core import invitations
from service.core.access_links import AccessLink
from service.core.errors import ApiError
from service.core.participant_connect import (
    ConnectIn,
    ParticipateStatusIn,
    connect,
    report_participate_status,
)
from service.core.participant_reads import (
    ParticipantAccount,
    ParticipantDetail,
    find_visible,
    participant_access_link,
    participant_account,
    participant_detail,
    registered_accounts,
    search_by_fields,
)
from service.core.roles import Action, Scope, authorize, load_scope
from service.web.apidoc import PAGE, TEXT, Query, operation
from service.web.auth import authenticated_username
from service.web.idempotency import Recorder, once
from service.web.input import FLAG_SCHEMA, accept_query, page_params, query_flag, query_text, read_json_model
from service.web.replies import reply
from service.web.resources import DB, SETTINGS


class AccountList(RootModel[list[ParticipantAccount]]):
    """OC4 answers these lists as a bare JSON array."""


def _oids(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["studyOID"], request.match_info.get("siteOID")


async def _scope(request: web.Request, conn: asyncpg.Connection, username: str) -> Scope:
    """The caller (whose token was checked before a connection was taken) in the path's study (and
    site), with some role there (OC4's order: who and where before what); what the role allows
    with each participant is the use-case's to decide."""
    study_oid, site_oid = _oids(request)
    scope = await load_scope(conn, username, study_oid, site_oid)
    authorize(scope, Action.LIST)
    accept_query(request)
    return scope


PARTICIPATE_INFO = Query(
    "includeParticipateInfo", FLAG_SCHEMA, "y: the access code and Participate status (default n)"
)


@operation(
    "One participant, with its access code and Participate status on request",
    "participants",
    ok={200: ParticipantDetail},
    query=[
        Query("participantID", {**TEXT, "minLength": 1}, "the participant ID", required=True),
        PARTICIPATE_INFO,
    ],
    errors=(409,),
)
async def get_participant_detail(request: web.Request) -> web.Response:
    """GET {level}/participant?participantID=&includeParticipateInfo=: OC4's one-participant read."""
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await _scope(request, conn, username)
        subject_key = query_text(request, "participantID", max_len=255)
        if subject_key is None:
            raise ApiError("invalidParameter", {**scope.params, "parameter": "participantID"})
        include = query_flag(request, "includeParticipateInfo")
        return reply(await participant_detail(conn, scope, subject_key, include))


@operation(
    "A participant's Participate account (OC4's OCUserDTO)", "participants", ok={200: ParticipantAccount}
)
async def get_participant_account(request: web.Request) -> web.Response:
    """GET {study}/participants/{subjectKey}."""
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await _scope(request, conn, username)
        return reply(await participant_account(conn, scope, request.match_info["subjectKey"]))


ACCOUNT_PAGE = (
    PAGE[0],
    Query("pageSize", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}),
)


@operation(
    "Participants registered for Participate", "participants", ok={200: AccountList}, query=ACCOUNT_PAGE
)
async def list_participant_users(request: web.Request) -> web.Response:
    """GET {study}/participantUsers: a bare array, as OC4 answers it."""
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await _scope(request, conn, username)
        page, size = page_params(request, default_size=1000)
        return reply(AccountList(await registered_accounts(conn, scope, page, size)))


@operation(
    "Search participants by ID, names or identifier (exact, any case)",
    "participants",
    ok={200: AccountList},
    query=[Query(name, TEXT) for name in ("participantId", "firstName", "lastName", "identifier")],
)
async def search_participants(request: web.Request) -> web.Response:
    """GET {study}/participants/searchByFields."""
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await _scope(request, conn, username)
        found = await search_by_fields(
            conn,
            scope,
            participant_id=query_text(request, "participantId"),
            first_name=query_text(request, "firstName"),
            last_name=query_text(request, "lastName"),
            identifier=query_text(request, "identifier"),
        )
        return reply(AccountList(found))


@operation(
    "A registered participant's Participate access link",
    "participants",
    ok={200: AccessLink},
    query=[Query("includeAccessCode", FLAG_SCHEMA, "y: the code on its own and in the link (default n)")],
    errors=(409,),
)
async def get_access_link(request: web.Request) -> web.Response:
    """GET {study}/participants/{subjectKey}/accessLink?includeAccessCode=."""
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await _scope(request, conn, username)
        include = query_flag(request, "includeAccessCode")
        link = await participant_access_link(
            conn, request.app[SETTINGS], scope, request.match_info["subjectKey"], include
        )
        return reply(link)


@operation(
    "Update contact data, register, reset the access code, invite (OC4's connect)",
    "participants",
    body=ConnectIn,
    ok={200: ParticipantAccount},
    errors=(409,),
    idempotent=True,
)
async def connect_participant(request: web.Request) -> web.StreamResponse:
    """POST {study}/participants/{subjectKey}/connect."""
    username = await authenticated_username(request)
    raw = await request.read()
    async with request.app[DB].acquire() as conn:
        scope = await _scope(request, conn, username)

        async def work(recorder: Recorder | None) -> web.Response:
            body = await read_json_model(request, ConnectIn, scope.params)
            settings = request.app[SETTINGS]
            subject_key = request.match_info["subjectKey"]
            answer = await connect(conn, settings, scope, subject_key, body)
            if recorder is not None:  # the kept answer holds contact data: erasure must find it
                recorder.participant_id = (await find_visible(conn, scope, subject_key))["id"]
            return reply(answer)

        return await once(request, conn, username, hashlib.sha256(raw).digest(), work)


@operation(
    "Report a Participate status the portal saw (active, inactive, contact info entered)",
    "participants",
    body=ParticipateStatusIn,
    ok={200: ParticipantAccount},
    errors=(409,),
)
async def put_participate_status(request: web.Request) -> web.Response:
    """PUT {study}/participants/{subjectKey}/participateStatus."""
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await _scope(request, conn, username)
        body = await read_json_model(request, ParticipateStatusIn, scope.params)
        return reply(await report_participate_status(conn, scope, request.match_info["subjectKey"], body))


@operation(
    "A participant's invitations and whether each went out",
    "participants",
    ok={200: invitations.InvitationList},
)
async def list_participant_invitations(request: web.Request) -> web.Response:
    """GET {study}/participants/{subjectKey}/invitations (ours; OC4 showed no delivery outcome)."""
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await _scope(request, conn, username)
        row = await find_visible(conn, scope, request.match_info["subjectKey"])
        return reply(await invitations.list_invitations(conn, row["id"]))
