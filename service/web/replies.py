"""How the web side answers: JSON bodies (from pydantic models or plain data), errors in the one
``{"message": "errorCode.X", "params": {...}}`` shape, the base URL clients are given, and the reply
to a submitted job (OC4's ``job uuid: <uuid>`` text, or JSON on request)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from uuid import UUID

import orjson
from aiohttp import web
from pydantic import BaseModel

from service.core.errors import ApiError
from service.core.jobs import JobSubmitted
from service.core.urls import job_urls, oc4_base
from service.web.resources import SETTINGS


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def model_response(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response(model.model_dump(mode="json"), status=status, headers=headers)


M = TypeVar("M", bound=BaseModel)


def reply(model: type[M], data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """Answer ``data`` (as core built it) through the model the operation declares: a field the
    model does not know never reaches the wire, and a missing one is a 500 here rather than a client's
    surprise. Optional fields core left out stay out, as OC4 leaves them out."""
    validated = model.model_validate(data)
    return json_response(validated.model_dump(mode="json", exclude_unset=True), status=status, headers=headers)


def error_response(err: ApiError) -> web.Response:
    headers = dict(err.headers)
    if err.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return json_response(err.body(), status=err.status, headers=headers)


def base_url(request: web.Request) -> str:
    """Where clients reach the OC4 API: ``PARTICIPANTS_PUBLIC_URL``, else this request's scheme and
    host, plus the path prefix."""
    settings = request.app[SETTINGS]
    public = settings.public_url or f"{request.scheme}://{request.host}"
    return oc4_base(public, settings.path_prefix)


def job_submitted(request: web.Request, job_uuid: UUID, status: str) -> web.Response:
    """OC4 answers a submit with the text ``job uuid: <uuid>``; a client asking for JSON gets the
    job's URLs too. ``Location`` always points at the job's status."""
    status_url, download_url = job_urls(base_url(request), job_uuid)
    # Job-Uuid: the job's id for any client (and the OpenAPI links), whichever body it asked for.
    headers = {"Location": status_url, "Job-Uuid": str(job_uuid)}
    if "application/json" in request.headers.get("Accept", ""):
        body = JobSubmitted(jobUuid=job_uuid, status=status, statusUrl=status_url, downloadUrl=download_url)
        return model_response(body, headers=headers)
    return web.Response(text=f"job uuid: {job_uuid}", content_type="text/plain", headers=headers)
