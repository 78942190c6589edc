"""HTTP handlers for erasing one participant's personal data (core/erasure.py, docs/erasure.md):
the data manager's call beside OC4's participant calls, at study or site level, and the admin
API's. Neither takes a body; both answer the erasure (subject key, when, extracts deleted)."""

from __future__ import annotations

from aiohttp import web

from service.core import erasure
from service.core.audit import Actor
from service.core.participant_reads import find_visible
from service.core.roles import Action, authorize, load_scope
from service.web.apidoc import operation
from service.web.auth import authenticated_username, require_admin
from service.web.input import accept_query
from service.web.replies import reply
from service.web.resources import DB, STORAGE


@operation(
    "Erase a participant's personal data for good (ours; a data manager's act)",
    "participants",
    ok={200: erasure.Erasure},
)
async def erase_participant(request: web.Request) -> web.Response:
    """POST {study or site}/participants/{subjectKey}/erase: names, email, phone, identifier and
    access code destroyed; the participant stays, removed, with its ID and history."""
    username = await authenticated_username(request)
    async with request.app[DB].acquire() as conn:
        scope = await load_scope(
            conn, username, request.match_info["studyOID"], request.match_info.get("siteOID")
        )
        authorize(scope, Action.ERASE)
        accept_query(request)
        row = await find_visible(conn, scope, request.match_info["subjectKey"])
        actor = Actor(scope.user_id, scope.username)
        return reply(await erasure.erase(conn, request.app[STORAGE], actor, row))


@operation("Erase a participant's personal data for good", "admin", ok={200: erasure.Erasure})
async def admin_erase_participant(request: web.Request) -> web.Response:
    """POST /admin/api/studies/{studyOID}/participants/{subjectKey}/erase."""
    actor = (await require_admin(request)).actor
    async with request.app[DB].acquire() as conn:
        row = await erasure.find_in_study(
            conn, request.match_info["studyOID"], request.match_info["subjectKey"]
        )
        return reply(await erasure.erase(conn, request.app[STORAGE], actor, row))
