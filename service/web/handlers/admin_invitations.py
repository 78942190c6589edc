"""The admin API of invitations: a study's message templates (per channel, a default until set) and
the study's invitations with every attempt, so that operators see what did not go out.

Parse, call core (core/invitations/), reply.
"""

from __future__ import annotations

from aiohttp import web

from service.core.invitations import list_study_invitations, templates
from service.core.invitations.model import (
    Channel,
    EmailTemplateIn,
    SmsTemplateIn,
    StudyInvitationList,
    TemplateList,
    TemplateOut,
)
from service.web.apidoc import NO_CONTENT, SMALL_PAGE, Query, operation
from service.web.auth import require_admin
from service.web.input import page_params, query_choice, read_json_model
from service.web.replies import reply
from service.web.resources import DB

STATUSES = ("QUEUED", "SENT", "FAILED")


@operation(
    "A study's invitation templates (its own or the default, per channel)", "admin", ok={200: TemplateList}
)
async def list_templates(request: web.Request) -> web.Response:
    await require_admin(request)
    async with request.app[DB].acquire() as conn:
        return reply(await templates.list_templates(conn, request.match_info["studyOID"]))


@operation("Set a study's email invitation template", "admin", body=EmailTemplateIn, ok={200: TemplateOut})
async def set_email_template(request: web.Request) -> web.Response:
    user = await require_admin(request)
    body = await read_json_model(request, EmailTemplateIn)
    async with request.app[DB].acquire() as conn:
        return reply(await templates.set_template(conn, request.match_info["studyOID"], body, user.actor))


@operation("Set a study's SMS invitation template", "admin", body=SmsTemplateIn, ok={200: TemplateOut})
async def set_sms_template(request: web.Request) -> web.Response:
    user = await require_admin(request)
    body = await read_json_model(request, SmsTemplateIn)
    async with request.app[DB].acquire() as conn:
        return reply(await templates.set_template(conn, request.match_info["studyOID"], body, user.actor))


async def _reset(request: web.Request, channel: Channel) -> web.Response:
    user = await require_admin(request)
    async with request.app[DB].acquire() as conn:
        await templates.reset_template(conn, request.match_info["studyOID"], channel, user.actor)
    return web.Response(status=204)


@operation("Use the default email invitation template again", "admin", ok={204: NO_CONTENT})
async def reset_email_template(request: web.Request) -> web.Response:
    return await _reset(request, "email")


@operation("Use the default SMS invitation template again", "admin", ok={204: NO_CONTENT})
async def reset_sms_template(request: web.Request) -> web.Response:
    return await _reset(request, "sms")


@operation(
    "A study's invitations, newest first, with every attempt",
    "admin",
    ok={200: StudyInvitationList},
    query=(Query("status", {"type": "string", "enum": list(STATUSES)}), *SMALL_PAGE),
)
async def list_invitations(request: web.Request) -> web.Response:
    await require_admin(request)
    status = query_choice(request, "status", STATUSES)
    page, size = page_params(request, default_size=50, max_size=500)
    async with request.app[DB].acquire() as conn:
        found = await list_study_invitations(conn, request.match_info["studyOID"], status, page, size)
    return reply(found)
