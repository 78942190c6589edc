"""The OpenAPI 3.1 document, generated at startup from the app's router and the pydantic models the
handlers use: nothing here restates a path, and request/response schemas come from the models.

``OPERATIONS`` maps each handler to what the router cannot tell: summary, tags, body model, response
models, query parameters. A route whose handler is not listed still appears (its path and path
parameters come from the router) with a generic answer, so a new route is never missing from the
document, only less described. The schemathesis test (tests/test_openapi.py) checks that every
answer the service gives matches this document, so a model that drifts from its handler fails CI.

Some handlers answer with dicts rather than models; their shapes are the ``*Doc`` models below,
kept honest by that same test. They belong with their handlers' modules (see docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from . import admin, admin_ops, bulk, extracts, jobs, participants, webhooks
from . import webhook_store as ws
from .directory import RoleIn, SiteIn, SitePatch, StudyIn, StudyPatch, UserIn
from .participant_store import ParticipantIn, ParticipantOut

TITLE = "Participants service (OpenClinica 4 participant API)"
VERSION = "1.0.0"
SKIP_METHODS = {"HEAD", "OPTIONS", "*"}


# --- Shapes of answers built as dicts (documented here; see the module docstring) ---------------


class ErrorBody(BaseModel):
    message: str = Field(pattern=r"^errorCode\.", examples=["errorCode.studyNotExist"])
    params: dict[str, Any]
    errors: list[str] | None = None


class StudyDoc(StudyIn):
    pass


class StudyListDoc(BaseModel):
    studies: list[StudyDoc]


class SiteDoc(BaseModel):
    oid: str
    name: str
    status: str
    studyOid: str


class SiteListDoc(BaseModel):
    sites: list[SiteDoc]


class UserDoc(BaseModel):
    username: str
    fullName: str
    admin: bool


class UserListDoc(BaseModel):
    users: list[UserDoc]


class RoleDoc(BaseModel):
    studyOid: str
    siteOid: str | None
    role: str


class RoleListDoc(BaseModel):
    roles: list[RoleDoc]


class ListedParticipantDoc(BaseModel):
    subjectKey: str
    subjectOid: str
    status: str
    siteOid: str | None
    createdBy: Any = None
    createdAt: str | None = None
    lastModifiedBy: Any = None
    lastModified: str | None = None


class ParticipantListDoc(BaseModel):
    studyParticipants: list[ListedParticipantDoc]


class BulkFailedDoc(BaseModel):
    subjectKey: str | None
    message: list[str]


class BulkAddedDoc(BaseModel):
    subjectKey: str
    status: str


class BulkResultDoc(BaseModel):
    """The seed's shape, also for file-level failures (with their error status)."""

    uploadCount: int
    failureCount: int
    message: str
    createdBy: str
    createdAt: str
    failedParticipants: list[BulkFailedDoc]
    participants: list[BulkAddedDoc]


class ExtractSubmittedDoc(BaseModel):
    jobUuid: UUID
    status: str
    statusUrl: str
    downloadUrl: str


class JobProgressDoc(BaseModel):
    rowsDone: int
    rowsExpected: int | None


class JobDoc(BaseModel):
    jobUuid: UUID
    type: str
    status: str
    studyOid: str
    siteOid: str | None
    createdAt: str | None
    startedAt: str | None
    completedAt: str | None
    attempts: int
    progress: JobProgressDoc
    rowCount: int | None
    byteSize: int | None
    sha256: str | None
    fileName: str | None
    expiresAt: str | None
    error: str | None
    statusUrl: str
    downloadUrl: str
    result: dict[str, Any] | None = None


class JobListDoc(BaseModel):
    jobs: list[JobDoc]
    page: int
    pageSize: int


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]


# --- The registry -------------------------------------------------------------------------------


@dataclass
class Query:
    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass
class Op:
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    ok: dict[int, Any] = field(default_factory=lambda: {200: None})  # status -> model, media dict, or None
    query: list[Query] = field(default_factory=list)
    public: bool = False
    body_media: dict[str, Any] | None = None  # a non-JSON request body
    error_model: Any = ErrorBody


PAGE = [
    Query("page", {"type": "integer", "minimum": 1, "maximum": 10_000_000, "default": 1}),
    Query("pageSize", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
]
SMALL_PAGE = [PAGE[0], Query("pageSize", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50})]
TEXT = {"type": "string", "maxLength": 255}
INSTANT = {"type": "string", "description": "ISO 8601 date or date-time; UTC when no zone is given"}
CSV = {"text/csv": {"schema": {"type": "string"}}}
PLAIN = {"text/plain": {"schema": {"type": "string", "pattern": "^job uuid: "}}}
PROMETHEUS = {"text/plain": {"schema": {"type": "string"}}}
HTML = {"text/html": {"schema": {"type": "string"}}}
JAVASCRIPT = {"text/javascript": {"schema": {"type": "string"}}}
OPENAPI = {"application/json": {"schema": {"type": "object"}}}
NO_CONTENT = "no content"

OPERATIONS: dict[Any, Op] = {
    # OC4's participant API
    participants.add_participant: Op(
        "Add, update or register one participant",
        "participants",
        ParticipantIn,
        {200: ParticipantOut},
        [Query("register", {"type": "string", "maxLength": 10}, "y/n/yes/no, any case; default n")],
    ),
    participants.get_participants: Op(
        "List participants (no personal data)", "participants", ok={200: ParticipantListDoc}, query=PAGE
    ),
    participants.remove_participant: Op("Remove a participant", "participants", ok={200: ParticipantOut}),
    participants.restore_participant: Op(
        "Restore a removed participant", "participants", ok={200: ParticipantOut}
    ),
    bulk.bulk_upload: Op(
        "Bulk add participant IDs from a CSV file",
        "participants",
        # With async=true the answer is OC4's `job uuid: <uuid>` text, like an extract submit.
        ok={200: {"application/json": {"schema": BulkResultDoc}, **PLAIN}},
        query=[Query("async", {"type": "string", "maxLength": 10}, "y/n: run as a job")],
        body_media={
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "text/csv": {"schema": {"type": "string"}},
        },
        error_model=BulkResultDoc | ErrorBody,
    ),
    extracts.submit_extract: Op(
        "Submit an extract of participant contact information",
        "extracts",
        ok={200: {**PLAIN, "application/json": {"schema": ExtractSubmittedDoc}}},
    ),
    jobs.list_jobs: Op("The caller's own jobs", "jobs", ok={200: JobListDoc}, query=PAGE),
    jobs.get_job: Op("One of the caller's jobs", "jobs", ok={200: JobDoc}),
    jobs.delete_job: Op("Delete the job's file (the job stays, DELETED)", "jobs", ok={200: JobDoc}),
    jobs.download_file: Op(
        "Download the job's file (Range supported)", "jobs", ok={200: CSV, 206: CSV, 302: NO_CONTENT}
    ),
    # Admin: directory
    admin.create_study: Op("Create a study", "admin", StudyIn, {201: StudyDoc}),
    admin.list_studies: Op("List studies", "admin", ok={200: StudyListDoc}),
    admin.get_study: Op("One study", "admin", ok={200: StudyDoc}),
    admin.patch_study: Op("Change a study", "admin", StudyPatch, {200: StudyDoc}),
    admin.create_site: Op("Create a site", "admin", SiteIn, {201: SiteDoc}),
    admin.list_sites: Op("List a study's sites", "admin", ok={200: SiteListDoc}),
    admin.patch_site: Op("Change a site", "admin", SitePatch, {200: SiteDoc}),
    admin.create_user: Op("Create a user", "admin", UserIn, {201: UserDoc}),
    admin.list_users: Op("List users", "admin", ok={200: UserListDoc}),
    admin.grant_role: Op("Grant a role", "admin", RoleIn, {201: RoleDoc}),
    admin.list_roles: Op("A user's roles", "admin", ok={200: RoleListDoc}),
    admin.revoke_role: Op("Revoke a role", "admin", RoleIn, {204: NO_CONTENT}),
    # Admin: webhooks
    webhooks.create_webhook: Op(
        "Register a webhook endpoint (answers the secret, once)",
        "webhooks",
        ws.WebhookIn,
        {201: ws.WebhookCreated},
    ),
    webhooks.list_webhooks: Op("List webhook endpoints", "webhooks", ok={200: ws.WebhookList}),
    webhooks.get_webhook: Op("One webhook endpoint", "webhooks", ok={200: ws.WebhookOut}),
    webhooks.patch_webhook: Op(
        "Change a webhook endpoint", "webhooks", ws.WebhookPatch, {200: ws.WebhookOut}
    ),
    webhooks.delete_webhook: Op("Delete a webhook endpoint", "webhooks", ok={204: NO_CONTENT}),
    webhooks.rotate_secret: Op(
        "Rotate the signing secret (old ones sign alongside for the overlap)",
        "webhooks",
        ws.RotateSecretIn,
        {200: ws.SecretRotated},
    ),
    webhooks.list_deliveries: Op(
        "An endpoint's deliveries and every attempt", "webhooks", ok={200: ws.DeliveryList}, query=SMALL_PAGE
    ),
    webhooks.redeliver: Op("Queue a delivery again (same webhook-id)", "webhooks", ok={202: ws.DeliveryOut}),
    # Admin: operations
    admin_ops.list_jobs: Op(
        "Every job, filtered",
        "operations",
        ok={200: admin_ops.AdminJobList},
        query=[
            Query("status", {"type": "string", "enum": list(admin_ops.JOB_STATUSES)}),
            Query("type", {"type": "string", "enum": list(admin_ops.JOB_TYPES)}),
            Query("studyOid", TEXT),
            Query("siteOid", TEXT),
            Query("owner", TEXT),
            Query("createdFrom", INSTANT),
            Query("createdTo", INSTANT),
            *PAGE,
        ],
    ),  # fmt: skip
    admin_ops.get_job: Op(
        "One job in full (never the file)", "operations", ok={200: admin_ops.AdminJobDetail}
    ),
    admin_ops.retry_job: Op("Run a FAILED job again", "operations", ok={202: admin_ops.AdminJobDetail}),
    admin_ops.cancel_job: Op(
        "Cancel a queued or running job", "operations", ok={202: admin_ops.AdminJobDetail}
    ),
    admin_ops.purge_expired: Op(
        "Delete files past retention now", "operations", ok={200: admin_ops.PurgeResult}
    ),
    admin_ops.list_audit: Op(
        "The audit log, filtered",
        "operations",
        ok={200: admin_ops.AuditPage},
        query=[
            Query("user", TEXT),
            Query("action", TEXT),
            Query("studyOid", TEXT),
            Query("siteOid", TEXT),
            Query("from", INSTANT),
            Query("to", INSTANT),
            *PAGE,
        ],
    ),  # fmt: skip
    admin_ops.get_queue: Op(
        "Queue depths, jobs in flight, worker heartbeats", "operations", ok={200: admin_ops.QueueReport}
    ),
}

# The service's own face (ops.py registers its handlers here, to avoid an import cycle).
PUBLIC_OPERATIONS: dict[str, Op] = {
    "healthz": Op("The process is alive", "service", ok={200: Health}, public=True),
    "readyz": Op(
        "Postgres, Redis and storage reachable, migrations applied",
        "service",
        ok={200: Readiness},
        public=True,
    ),
    "metrics": Op("Prometheus metrics", "service", ok={200: PROMETHEUS}, public=True),
    "openapi": Op("This document", "service", ok={200: OPENAPI}, public=True),
    "docs": Op("API reference page", "service", ok={200: HTML}, public=True),
    "docs_asset": Op("The reference page's script (vendored)", "service", ok={200: JAVASCRIPT}, public=True),
}
GENERIC = Op("(undocumented)", "other", ok={200: None})


def _operation_for(route: web.AbstractRoute) -> Op:
    op = OPERATIONS.get(route.handler)
    if op is None and route.name is not None:
        op = PUBLIC_OPERATIONS.get(route.name)
    return op or GENERIC


Mode = Literal["validation", "serialization"]


def _models(ops: list[Op]) -> list[tuple[type[BaseModel], Mode]]:
    """Every model the document refers to, each with the side it is seen from."""
    found: list[tuple[type[BaseModel], Mode]] = [(ErrorBody, "serialization"), (ws.JobEvent, "serialization")]
    for op in ops:
        if op.body is not None:
            found.append((op.body, "validation"))
        for answer in op.ok.values():
            inner = [spec["schema"] for spec in answer.values()] if isinstance(answer, dict) else [answer]
            found += [(m, "serialization") for m in inner if isinstance(m, type) and issubclass(m, BaseModel)]
        if op.error_model is not ErrorBody:
            found.append((BulkResultDoc, "serialization"))
    return list(dict.fromkeys(found))


def build_openapi(app: web.Application, server_url: str = "/") -> dict[str, Any]:
    routes = [r for r in app.router.routes() if r.method not in SKIP_METHODS and r.resource is not None]
    ops = [_operation_for(r) for r in routes]
    refs, top = models_json_schema(_models(ops), ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})

    def ref(model: Any, mode: Mode = "serialization") -> dict[str, Any]:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return refs[(model, mode)]
        return {"anyOf": [refs[(m, "serialization")] for m in model.__args__]}  # a union of models

    error = {"description": "error", "content": {"application/json": {"schema": ref(ErrorBody)}}}
    paths: dict[str, dict[str, Any]] = {}
    for route, op in zip(routes, ops, strict=True):
        path = route.resource.canonical  # type: ignore[union-attr]
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _path_params(path)
        ]
        params += [{"name": q.name, "in": "query", "required": False, "schema": q.schema,
                    **({"description": q.description} if q.description else {})} for q in op.query]  # fmt: skip
        responses: dict[str, Any] = {}
        for status, answer in op.ok.items():
            if answer is None:
                responses[str(status)] = {
                    "description": "success",
                    "content": {"application/json": {"schema": {}}},
                }
            elif answer == NO_CONTENT:
                responses[str(status)] = {"description": "success, no body"}
            elif isinstance(answer, dict):
                content = {
                    media: {
                        "schema": ref(spec["schema"]) if isinstance(spec["schema"], type) else spec["schema"]
                    }
                    for media, spec in answer.items()
                }
                responses[str(status)] = {"description": "success", "content": content}
            else:
                responses[str(status)] = {
                    "description": "success",
                    "content": {"application/json": {"schema": ref(answer)}},
                }
        if not op.public:
            err = error if op.error_model is ErrorBody else {
                "description": "error", "content": {"application/json": {"schema": ref(op.error_model)}}
            }  # fmt: skip
            responses["4XX"] = err
            responses["503"] = {**error, "description": "a dependency is unavailable; retry later"}
        elif path == "/readyz":
            responses["503"] = {**error, "description": "not ready"}
        operation: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": f"{route.method.lower()}{_op_suffix(path)}",
            "parameters": params,
            "responses": responses,
        }
        if op.public:
            operation["security"] = []
        if op.body is not None:
            operation["requestBody"] = {
                "required": True, "content": {"application/json": {"schema": ref(op.body, "validation")}}
            }  # fmt: skip
        elif op.body_media is not None:
            operation["requestBody"] = {"required": True, "content": op.body_media}
        paths.setdefault(path, {})[route.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "OC4-compatible participant endpoints, their jobs, and this service's own admin API. "
            'Every error is `{"message": "errorCode.X", "params": {...}}`.',
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "webhooks": {
            event: {
                "post": {
                    "summary": f"{event}: Standard Webhooks v1 (webhook-id, webhook-timestamp, webhook-signature)",
                    "requestBody": {"content": {"application/json": {"schema": ref(ws.JobEvent)}}},
                    "responses": {
                        "2XX": {"description": "received; 410 disables the endpoint, others are retried"}
                    },
                }
            }
            for event in ws.EVENT_TYPES
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


def _path_params(path: str) -> list[str]:
    names, depth, current = [], 0, ""
    for ch in path:
        if ch == "{":
            depth, current = depth + 1, ""
        elif ch == "}":
            depth -= 1
            names.append(current.split(":")[0])
        elif depth:
            current += ch
    return names


def _op_suffix(path: str) -> str:
    words = [p.strip("{}") for p in path.split("/") if p]
    return "".join(w[:1].upper() + w[1:] for w in words).replace("-", "").replace(".", "")
