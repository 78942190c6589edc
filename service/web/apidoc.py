"""How a handler declares its OpenAPI operation: the ``@operation(...)`` decorator attaches an ``Op``
to the handler function, and service/web/openapi.py collects it from the router's routes. This module
imports no handler and no generator, so handlers, the generator and the page that serves the
document can all import it without a circle.

Statuses: every authenticated operation may answer 400 (bad parameter), 401, 403, 404 (study, site or
resource) and 503 (a dependency is down); one with a request body also 413 and 415. An operation
lists the statuses beyond those in ``errors`` (409, 410, 416, 429...). The schemathesis runs fail on
any answer whose status is not declared, so the list stays true.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from service.core.errors import ErrorBody

__all__ = ["ErrorBody", "Link", "Op", "Query", "declared", "operation"]

H = TypeVar("H", bound=Callable[..., Any])
ATTRIBUTE = "__openapi__"
NO_CONTENT = "no content"

PLAIN_JOB = {"text/plain": {"schema": {"type": "string", "pattern": "^job uuid: "}}}
CSV = {"text/csv": {"schema": {"type": "string"}}}


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: a value of this operation's answer feeds a parameter of another operation,
    named by its handler (the generator resolves the operationId)."""

    name: str
    target: Callable[..., Any]
    parameters: dict[str, str]  # target parameter -> runtime expression, e.g. "$response.body#/jobUuid"
    status: int = 200


@dataclass(frozen=True)
class Op:
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    ok: dict[int, Any] = field(default_factory=lambda: {200: None})  # status -> model, media dict, or None
    query: tuple[Query, ...] = ()
    public: bool = False
    body_media: dict[str, Any] | None = None  # a non-JSON request body
    error_model: Any = ErrorBody
    errors: tuple[int, ...] = ()  # statuses beyond the common ones (see the module docstring)
    links: tuple[Link, ...] = ()
    idempotent: bool = False  # takes an Idempotency-Key header (web/idempotency.py): 409, 422 too

    def statuses(self) -> list[int]:
        """Every error status this operation can answer."""
        if self.public:
            return sorted(set(self.errors))
        common = {400, 401, 403, 404, 503}
        if self.body is not None or self.body_media is not None:
            common |= {413, 415}
        if self.idempotent:
            common |= {409, 422}
        return sorted(common | set(self.errors))


def operation(summary: str, tag: str, **details: Any) -> Callable[[H], H]:
    """Declare the handler's OpenAPI operation (see ``Op`` for the details it takes)."""
    if "query" in details:
        details["query"] = tuple(details["query"])
    op = Op(summary, tag, **details)

    def attach(handler: H) -> H:
        setattr(handler, ATTRIBUTE, op)
        return handler

    return attach


def declared(handler: Any) -> Op | None:
    return getattr(handler, ATTRIBUTE, None)


PAGE = (
    Query("page", {"type": "integer", "minimum": 1, "maximum": 10_000_000, "default": 1}),
    Query("pageSize", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
)
SMALL_PAGE = (PAGE[0], Query("pageSize", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}))
# NUL is refused in every query parameter (see the NUL guard middleware).
TEXT = {"type": "string", "maxLength": 255, "pattern": "^[^\\x00]*$"}
INSTANT = {
    "type": "string",
    "anyOf": [{"format": "date"}, {"format": "date-time"}],
    "description": "ISO 8601 date or date-time; UTC when no zone is given",
}
