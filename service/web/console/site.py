"""Pages for site staff: their studies and sites, a site's participants, adding or updating one,
bulk upload, extracts and their jobs.

Each page calls the same core use-cases as the API (scope and role checks, the extract and bulk
submits, the owner's job list, status, download and delete), as the signed-in user, so the rules
and audit rows are the API's, and renders their models. A button is shown only where its action
would be allowed, and the action checks again when it is used.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web
from aiohttp.multipart import BodyPartReader

from service.core import directory, extracts
from service.core.bulk.spool import spool
from service.core.bulk.submit import submit_bulk_job
from service.core.bulk.summary import oc4_timestamp
from service.core.errors import ApiError
from service.core.extract_options import ExtractOptions
from service.core.jobs import owned
from service.core.jobs.owned import JobPlace
from service.core.participant_reads import site_roster
from service.core.participants import ParticipantIn, save_participant
from service.core.roles import Action, Scope, authorize, check_bulk_allowed, load_scope
from service.web.console.guard import SESSIONS, check_csrf, clear_cookie
from service.web.console.render import explain, redirect, render
from service.web.console.sessions import ACCOUNT, SESSION
from service.web.downloads import send_job_file
from service.web.replies import base_url, wire_data
from service.web.resources import CONNECTIONS, DB, SETTINGS, STORAGE
from service.web.uploads import MALFORMED_MULTIPART, part_chunks

PAGE_SIZE = 50
FORM_FIELDS = ("subjectKey", "firstName", "lastName", "emailAddress", "phoneNumber", "identifier")
# Which form field an error code belongs to, so the message is shown next to it.
FIELD_OF_CODE = {
    "participantID": "subjectKey",
    "firstName": "firstName",
    "lastName": "lastName",
    "identifier": "identifier",
    "emailAddress": "emailAddress",
    "invalidEmailAddress": "emailAddress",
    "phoneNumber": "phoneNumber",
    "invalidPhoneNumber": "phoneNumber",
}


def field_of(code: str) -> str | None:
    for prefix, name in FIELD_OF_CODE.items():
        if code.startswith(prefix):
            return name
    return None


async def _site_jobs(request: web.Request, conn: asyncpg.Connection, scope: Scope) -> list[dict[str, Any]]:
    """The signed-in user's jobs at this site, newest first (the API's job list, first page)."""
    assert scope.study is not None and scope.site is not None
    place = JobPlace(scope.study["id"], scope.site["id"])
    jobs = await owned.list_jobs(conn, request[ACCOUNT].actor, place, 1, PAGE_SIZE, base_url(request))
    return [wire_data(j) for j in jobs.jobs]


async def home(request: web.Request) -> web.StreamResponse:
    account = request[ACCOUNT]
    async with request.config_dict[DB].acquire() as conn:
        roles = await directory.list_roles(conn, account.username)
        places: dict[str, dict[str, Any]] = {}
        for role in roles.roles:
            study = places.setdefault(role.studyOid, {"roles": set(), "sites": {}})
            if role.siteOid is None:
                study["roles"].add(role.role)
            else:
                study["sites"].setdefault(role.siteOid, set()).add(role.role)
        for oid, study in places.items():
            if study["roles"]:  # a study-level role reaches every site of the study
                for site in (await directory.list_sites(conn, oid)).sites:
                    study["sites"].setdefault(site.oid, set())
    return render(request, "home.html", {"places": places})


async def sign_out_everywhere(request: web.Request) -> web.StreamResponse:
    """POST /console/sessions/revoke (CSRF checked by the guard): the signed-in user's every console
    session and every token issued to them so far end (audited ``user.revokeSessions``); this
    browser is signed out too and lands on the sign-in form."""
    account = request[ACCOUNT]
    async with request.config_dict[DB].acquire() as conn:
        await directory.revoke_user_sessions(conn, account.actor, account.username, "user.revokeSessions")
    await request.config_dict[SESSIONS].end(request[SESSION])
    response = redirect(request, "login")
    clear_cookie(request, response)
    raise response


async def _site_scope(request: web.Request, conn: Any) -> Scope:
    scope = await load_scope(
        conn, request[ACCOUNT].username, request.match_info["studyOID"], request.match_info["siteOID"]
    )
    authorize(scope, Action.LIST)
    return scope


def _may(scope: Scope, action: Action) -> bool:
    try:
        authorize(scope, action)
    except ApiError:
        return False
    return True


async def _site_page(
    request: web.Request, scope: Scope | None = None, form: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None, status: int = 200, notice: str | None = None,
) -> web.Response:  # fmt: skip
    try:
        page_no = max(1, min(int(request.query.get("page", "1")), 100_000))
    except ValueError:
        page_no = 1
    search = request.query.get("q", "").strip()[:30] or None  # a participant ID is at most 30 characters
    async with request.config_dict[DB].acquire() as conn:
        scope = scope or await _site_scope(request, conn)
        roster = await site_roster(conn, scope, search, page_no, PAGE_SIZE)
        site_jobs = await _site_jobs(request, conn, scope)
    assert scope.study is not None
    context = {
        "study": scope.study_oid,
        "site": scope.site_oid,
        "participants": [wire_data(p) for p in roster.participants],
        "search": search or "",
        "page": page_no,
        "pages": max(1, -(-roster.total // PAGE_SIZE)),
        "total": roster.total,
        "sees_contact": scope.may(Action.READ_CONTACT, scope.site["id"] if scope.site else None),
        "participate": bool(scope.study["participate_enabled"]),
        "may_write": _may(scope, Action.WRITE_AT_SITE),
        "may_extract": _may(scope, Action.EXTRACT),
        "jobs": site_jobs,
        "form": form or {},
        "errors": errors or {},
        "notice": notice,
    }
    return render(request, "site.html", context, status=status)


NOTICES = {
    "added": "Participant {key} was saved.",
    "removed": "Participant {key} was removed.",
    "restored": "Participant {key} was restored.",
    "extract": "The extract was started.",
}


async def site_page(request: web.Request) -> web.StreamResponse:
    notice = NOTICES.get(request.query.get("done", ""))
    key = request.query.get("key", "")[:30]
    return await _site_page(request, notice=notice.format(key=key) if notice else None)


async def jobs_fragment(request: web.Request) -> web.StreamResponse:
    """The jobs table alone, which the page's script fetches every few seconds while a job runs."""
    async with request.config_dict[DB].acquire() as conn:
        site_jobs = await _site_jobs(request, conn, await _site_scope(request, conn))
    return render(request, "jobs_table.html", {"jobs": site_jobs})


async def save_participant_form(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values = {name: str(form.get(name, "")).strip() for name in FORM_FIELDS}
    async with request.config_dict[DB].acquire() as conn:
        scope = await _site_scope(request, conn)
        authorize(scope, Action.WRITE_AT_SITE)
        body = ParticipantIn(**{k: (v or None) for k, v in values.items()})
        try:
            saved = await save_participant(conn, scope, body, False)
        except ApiError as err:
            if err.status not in (400, 409):
                raise
            codes = err.errors or [err.code]
            errors: dict[str, list[str]] = {}
            for code in codes:
                errors.setdefault(field_of(code) or "form", []).append(explain(code))
            return await _site_page(request, scope, values, errors, status=err.status)
    query = urlencode({"done": "added", "key": saved.subjectKey})
    raise redirect(request, "site", query=query, studyOID=scope.study_oid, siteOID=scope.site_oid)


async def extract(request: web.Request) -> web.StreamResponse:
    # The API's submit: role check, job row, audit, quota, queue (every option at its default but the
    # byte-order mark, the form's "for Excel" box).
    async with request.config_dict[DB].acquire() as conn:
        scope = await extracts.extract_scope(
            conn, request[ACCOUNT].username, request.match_info["studyOID"], request.match_info["siteOID"]
        )
        connections = request.config_dict[CONNECTIONS]
        options = ExtractOptions.from_query({"bom": str((await request.post()).get("bom") or "n")})
        await extracts.submit_extract(connections, conn, scope, options, base_url(request))
    study, site = request.match_info["studyOID"], request.match_info["siteOID"]
    raise redirect(request, "site", query="done=extract", studyOID=study, siteOID=site)


async def bulk_upload(request: web.Request) -> web.StreamResponse:
    """A multipart form whose first field is the CSRF token and whose ``file`` is the CSV; the upload
    runs as the API's asynchronous bulk job, and the job's page shows its result."""
    if request.content_type != "multipart/form-data":
        raise ApiError("csrfTokenInvalid")
    try:
        reader = await request.multipart()
        first = await reader.next()
        sent = None
        if isinstance(first, BodyPartReader) and first.name == "csrf":
            sent = (await first.read_chunk(200)).decode("ascii", "replace")
    except MALFORMED_MULTIPART:
        raise ApiError("csrfTokenInvalid") from None  # nothing readable: no token either
    await check_csrf(request, request[SESSION], sent or "")
    try:
        part = await reader.next()
    except MALFORMED_MULTIPART:
        raise ApiError("notSupportedFileFormat") from None
    if (
        not isinstance(part, BodyPartReader)
        or part.name != "file"
        or not (part.filename or "").lower().endswith(".csv")
    ):
        raise ApiError("notSupportedFileFormat")
    created_at = oc4_timestamp(datetime.datetime.now(datetime.UTC))
    max_bytes = request.config_dict[SETTINGS].bulk_max_bytes
    with await spool(part_chunks(part), max_bytes) as file:  # no connection held while the file arrives
        async with request.config_dict[DB].acquire() as conn:
            scope = await _site_scope(request, conn)
            check_bulk_allowed(scope)
            connections = request.config_dict[CONNECTIONS]
            submitted = await submit_bulk_job(connections, conn, scope, file, created_at, base_url(request))
    raise redirect(request, "job", jobUuid=submitted.jobUuid)


async def job_page(request: web.Request) -> web.StreamResponse:
    job_uuid = request.match_info["jobUuid"]
    async with request.config_dict[DB].acquire() as conn:  # the owner only, as in the API
        job = wire_data(await owned.get_job(conn, request[ACCOUNT].actor, job_uuid, base_url(request)))
    result = job.get("result") or {}
    # Failed rows first, each code beside its explanation; then the rows that were added.
    rows = [
        {"subjectKey": f["subjectKey"], "status": "Failed", "codes": f["message"],
         "reasons": [explain(m) for m in f["message"]], "rowNumber": f.get("rowNumber")}
        for f in result.get("failedParticipants", [])
    ]  # fmt: skip
    rows += [
        {"subjectKey": a["subjectKey"], "status": "Added", "reasons": [], "codes": []}
        for a in result.get("participants", [])
    ]
    fragment = request.query.get("fragment") == "1"
    return render(
        request, "job_fragment.html" if fragment else "job.html", {"job": job, "rows": rows, "result": result}
    )


async def download(request: web.Request) -> web.StreamResponse:
    return await send_job_file(request, request[ACCOUNT].actor)


async def delete(request: web.Request) -> web.StreamResponse:
    actor = request[ACCOUNT].actor
    async with request.config_dict[DB].acquire() as conn:
        job = await owned.owned_job(conn, actor, request.match_info["jobUuid"])
        await owned.delete_job(conn, request.config_dict[STORAGE], actor, job, base_url(request))
    raise redirect(request, "job", jobUuid=request.match_info["jobUuid"])
