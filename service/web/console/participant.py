"""The participant page: one participant at a site, its contact data (for the roles that may see
it), Participate status and invitations; revealing its access code (audited), resetting it,
registering, inviting by email or SMS, changing contact data, and erasing the participant's
personal data for good (after a confirmation step: the participant ID typed again).

Every action is the API's use-case (core.participant_reads, core.participant_connect) as the
signed-in user. The access code is shown only in the answer to a deliberate, CSRF-protected POST:
never in a URL, a page title, or a page that the browser could show again from its history.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from service.core import erasure, invitations
from service.core.errors import ApiError
from service.core.participant_connect import ConnectIn, connect
from service.core.participant_reads import (
    PARTICIPATE_LABELS,
    find_visible,
    may_read_contact,
    participant_account,
    participant_detail,
)
from service.core.participants import is_registered, set_status
from service.core.roles import Action, Scope, authorize, load_scope
from service.web.console.render import explain, redirect, render
from service.web.console.sessions import ACCOUNT
from service.web.replies import wire_data
from service.web.resources import DB, SETTINGS, STORAGE

CONTACT_FIELDS = ("firstName", "lastName", "email", "phoneNumber", "identifier")
NOTICES = {
    "saved": "Participant {key}: contact data saved.",
    "registered": "Participant {key} is registered for Participate.",
    "reset": "Participant {key} has a new access code; the old one no longer works.",
    "invited-email": "An email invitation to participant {key} is queued; its outcome shows below.",
    "invited-sms": "An SMS invitation to participant {key} is queued; its outcome shows below.",
    "erased": "Participant {key}: personal data erased for good.",
}


async def _scope(request: web.Request, conn: asyncpg.Connection) -> Scope:
    scope = await load_scope(
        conn, request[ACCOUNT].username, request.match_info["studyOID"], request.match_info["siteOID"]
    )
    authorize(scope, Action.LIST)
    return scope


async def _page(
    request: web.Request,
    *,
    code: str | None = None,
    errors: list[str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
    confirm_erase: bool = False,
) -> web.Response:
    key = request.match_info["subjectKey"]
    async with request.config_dict[DB].acquire() as conn:
        scope = await _scope(request, conn)
        row = await find_visible(conn, scope, key)
        account = wire_data(await participant_account(conn, scope, key))
        sent = [wire_data(i) for i in (await invitations.list_invitations(conn, row["id"])).invitations]
    assert scope.study is not None
    may_write = scope.may(Action.WRITE_AT_SITE, row["site_id"])
    erased = row["erased_at"] is not None
    notice = NOTICES.get(request.query.get("done", ""), "").format(key=row["subject_key"]) or None
    context: dict[str, Any] = {
        "study": scope.study_oid,
        "site": scope.site_oid,
        "key": row["subject_key"],
        "status": row["status"],
        "account": account,
        "participate_label": PARTICIPATE_LABELS.get(account.get("status", ""), ""),
        "participate": bool(scope.study["participate_enabled"]),
        "registered": is_registered(row),
        "sees_contact": may_read_contact(scope, row) and not erased,
        "erased_at": row["erased_at"],
        "may_erase": _may_erase(request, scope, row) and not erased,
        "confirm_erase": confirm_erase,
        "may_write": may_write and row["status"] in ("available", "signed"),
        "invitations": sent,
        "code": code,
        "errors": [explain(e) for e in errors or []],
        "form": form or {f: account.get(f, "") for f in CONTACT_FIELDS},
        "notice": notice,
    }
    response = render(request, "participant.html", context, status=status)
    response.headers["Cache-Control"] = "no-store"  # a revealed code must not come back from a cache
    return response


def _may_erase(request: web.Request, scope: Scope, row: asyncpg.Record) -> bool:
    """A data manager (the study-level coordinator) or an admin."""
    return scope.may(Action.ERASE, row["site_id"]) or request[ACCOUNT].admin


async def participant_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def reveal_code(request: web.Request) -> web.StreamResponse:
    """POST .../reveal: the code, shown once in this answer, with its audit row (the API's read)."""
    async with request.config_dict[DB].acquire() as conn:
        scope = await _scope(request, conn)
        detail = await participant_detail(conn, scope, request.match_info["subjectKey"], True)
    if detail.accessCode is None:
        raise ApiError("noSufficientPrivileges", scope.params)
    return await _page(request, code=detail.accessCode)


async def _connect(request: web.Request, body: ConnectIn, done: str) -> web.StreamResponse:
    key = request.match_info["subjectKey"]
    async with request.config_dict[DB].acquire() as conn:
        scope = await _scope(request, conn)
        try:
            await connect(conn, request.config_dict[SETTINGS], scope, key, body)
        except ApiError as err:
            if err.status not in (400, 409):
                raise
            form = None
            if done == "saved":
                form = {f: str(getattr(body, f) or "") for f in CONTACT_FIELDS}
            return await _page(request, errors=err.errors or [err.code], form=form, status=err.status)
    parts = {"studyOID": scope.study_oid, "siteOID": scope.site_oid, "subjectKey": key}
    raise redirect(request, "participant", query=f"done={done}", **parts)


async def save_contact(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values = {f: str(form.get(f, "")).strip() for f in CONTACT_FIELDS}
    return await _connect(request, ConnectIn(**values), "saved")


async def register(request: web.Request) -> web.StreamResponse:
    return await _connect(request, ConnectIn(), "registered")


async def reset_code(request: web.Request) -> web.StreamResponse:
    return await _connect(request, ConnectIn(resetAccessCode=True), "reset")


async def invite(request: web.Request) -> web.StreamResponse:
    channel = str((await request.post()).get("channel", ""))
    if channel == "email":
        return await _connect(request, ConnectIn(inviteParticipant=True), "invited-email")
    if channel == "sms":
        return await _connect(request, ConnectIn(inviteViaSms=True), "invited-sms")
    raise ApiError("invalidParameter", {"parameter": "channel"})


async def _set_status(request: web.Request, remove: bool) -> web.StreamResponse:
    """Remove or restore from the site's list (the API's use-case); back to the list, saying which."""
    async with request.config_dict[DB].acquire() as conn:
        scope = await _scope(request, conn)
        authorize(scope, Action.WRITE_AT_SITE)
        done = await set_status(conn, scope, request.match_info["subjectKey"], remove)
    query = urlencode({"done": "removed" if remove else "restored", "key": done.subjectKey})
    raise redirect(request, "site", query=query, studyOID=scope.study_oid, siteOID=scope.site_oid)


async def remove(request: web.Request) -> web.StreamResponse:
    return await _set_status(request, remove=True)


async def restore(request: web.Request) -> web.StreamResponse:
    return await _set_status(request, remove=False)


async def erase(request: web.Request) -> web.StreamResponse:
    """POST .../erase: without the participant ID typed again, the confirmation step; with it,
    the erasure (core/erasure.py), then back to the participant's page."""
    key = request.match_info["subjectKey"]
    confirm = str((await request.post()).get("confirm", "")).strip()
    async with request.config_dict[DB].acquire() as conn:
        scope = await _scope(request, conn)
        row = await find_visible(conn, scope, key)
        if not _may_erase(request, scope, row):
            raise ApiError("noSufficientPrivileges", scope.params)
        if confirm != row["subject_key"]:
            errors = ["The participant ID typed does not match: nothing was erased."] if confirm else None
            return await _page(request, confirm_erase=True, errors=errors, status=400 if confirm else 200)
        await erasure.erase(conn, request.config_dict[STORAGE], request[ACCOUNT].actor, row)
    parts = {"studyOID": scope.study_oid, "siteOID": scope.site_oid, "subjectKey": key}
    raise redirect(request, "participant", query="done=erased", **parts)
