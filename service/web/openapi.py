"""The OpenAPI 3.1 document, generated from the app's router and what each route's handler declares
with ``@operation`` (service/web/apidoc.py): paths come from the router, request and answer schemas
from the pydantic models the handlers validate with and answer through, error statuses from the
declaration. Nothing here names a handler, so nothing here imports one.

A route whose handler declares nothing still appears (its path and path parameters come from the
router) with a generic answer, so a new route is never missing from the document, only less
described; a test fails on such a route. The schemathesis runs (tests/test_openapi.py, in-process, and
tests/test_schemathesis_cli.py, the CLI against a running service) check that every answer matches.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.core.errors import ErrorBody
from service.core.webhooks.models import EVENT_TYPES, JobEvent
from service.web.apidoc import NO_CONTENT, Op, declared

TITLE = "Participants service (OpenClinica 4 participant API)"
VERSION = "1.0.0"
SKIP_METHODS = {"HEAD", "OPTIONS", "*"}
GENERIC = Op("(undocumented)", "other", ok={200: None})

Mode = Literal["validation", "serialization"]


def _operation_for(route: web.AbstractRoute) -> Op:
    return declared(route.handler) or GENERIC


def _answer_models(answer: Any) -> list[Any]:
    inner = [spec["schema"] for spec in answer.values()] if isinstance(answer, dict) else [answer]
    return [m for m in inner if isinstance(m, type) and issubclass(m, BaseModel)]


def _models(ops: list[Op]) -> list[tuple[type[BaseModel], Mode]]:
    """Every model the document refers to, each with the side it is seen from."""
    found: list[tuple[type[BaseModel], Mode]] = [(ErrorBody, "serialization"), (JobEvent, "serialization")]
    for op in ops:
        if op.body is not None:
            found.append((op.body, "validation"))
        for answer in op.ok.values():
            found += [(m, "serialization") for m in _answer_models(answer)]
        found.append((op.error_model, "serialization"))
    return list(dict.fromkeys(found))


def _operation_id(route: web.AbstractRoute) -> str:
    """The route's name (every route has one: service/web/routes.py), else one made of its path."""
    if route.name:
        return _camel(route.name.split("_"))
    return route.method.lower() + _camel(p.strip("{}") for p in route.resource.canonical.split("/") if p)  # type: ignore[union-attr]


def _links(op: Op, route: web.AbstractRoute, routes: list[web.AbstractRoute]) -> dict[int, dict[str, Any]]:
    """Each link's target: the target handler's route nearest this one (same study/site level)."""
    found: dict[int, dict[str, Any]] = {}
    path = route.resource.canonical  # type: ignore[union-attr]
    for link in op.links:
        targets = [r for r in routes if r.handler is link.target]
        if not targets:
            continue
        target = max(targets, key=lambda r: _common_prefix(path, r.resource.canonical))  # type: ignore[union-attr]
        wanted = set(_path_params(target.resource.canonical))  # type: ignore[union-attr]
        parameters = {
            k: v
            for k, v in link.parameters.items()
            if k in wanted and (not v.startswith("$request.path.") or v[14:] in _path_params(path))
        }
        found.setdefault(link.status, {})[link.name] = {
            "operationId": _operation_id(target),
            "parameters": parameters,
        }
    return found


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        n += 1
    return n


def _responses(op: Op, ref: Any, links: dict[int, dict[str, Any]]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in op.ok.items():
        if answer is None:
            entry: dict[str, Any] = {
                "description": "success",
                "content": {"application/json": {"schema": {}}},
            }
        elif answer == NO_CONTENT:
            entry = {"description": HTTPStatus(status).phrase}
        elif isinstance(answer, dict):
            content = {
                media: {"schema": ref(spec["schema"]) if isinstance(spec["schema"], type) else spec["schema"]}
                for media, spec in answer.items()
            }
            entry = {"description": "success", "content": content}
        else:
            entry = {"description": "success", "content": {"application/json": {"schema": ref(answer)}}}
        if status in links:
            entry["links"] = links[status]
            headers = {expr.split(".", 2)[2] for link in links[status].values() for expr in link["parameters"].values()
                       if expr.startswith("$response.header.")}  # fmt: skip
            if headers:
                entry["headers"] = {
                    h: {"schema": {"type": "string"}, "required": True} for h in sorted(headers)
                }
        responses[str(status)] = entry
    error_schema = ref(op.error_model) if op.error_model is ErrorBody else {
        "anyOf": [ref(op.error_model), ref(ErrorBody)]
    }  # fmt: skip
    for status in op.statuses():
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": error_schema}},
        }
        if status in (429, 503):
            responses[str(status)]["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}
            }
    return responses


OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict[str, bytes])  # the built document, once built

IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retry-safe submit: the same key and request within 24 h answers the first answer again",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
}


def build_openapi(app: web.Application, server_url: str = "/") -> dict[str, Any]:
    # The console's HTML pages are not part of the API.
    routes = [
        r
        for r in app.router.routes()
        if r.method not in SKIP_METHODS
        and r.resource is not None
        and not (r.name or "").startswith("console.")
    ]
    ops = [_operation_for(r) for r in routes]
    refs, top = models_json_schema(_models(ops), ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})

    def ref(model: Any, mode: Mode = "serialization") -> dict[str, Any]:
        return refs[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    for route, op in zip(routes, ops, strict=True):
        path = route.resource.canonical  # type: ignore[union-attr]
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _path_params(path)
        ]
        params += [{"name": q.name, "in": "query", "required": q.required, "schema": q.schema,
                    **({"description": q.description} if q.description else {})} for q in op.query]  # fmt: skip
        if op.idempotent:
            params.append(IDEMPOTENCY_KEY_PARAMETER)
        operation: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": _operation_id(route),
            "parameters": params,
            "responses": _responses(op, ref, _links(op, route, routes)),
        }
        if op.public:
            operation["security"] = []
        if op.body is not None:
            # No body reads as {}: a body whose fields are all optional (a PATCH) may be left out.
            required = any(f.is_required() for f in op.body.model_fields.values())
            operation["requestBody"] = {
                "required": required, "content": {"application/json": {"schema": ref(op.body, "validation")}}
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
                    "requestBody": {"content": {"application/json": {"schema": ref(JobEvent)}}},
                    "responses": {
                        "2XX": {"description": "received; 410 disables the endpoint, others are retried"}
                    },
                }
            }
            for event in EVENT_TYPES
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


def _camel(words: Any) -> str:
    words = [w for w in words if w]
    head = words[0] if words else ""
    return head + "".join(w[:1].upper() + w[1:] for w in words[1:]).replace("-", "").replace(".", "")
