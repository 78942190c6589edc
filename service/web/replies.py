"""How the web side answers: JSON bodies from the pydantic models core returns, errors in the one
``{"message": "errorCode.X", "params": {...}}`` shape, the base URL clients are given, and the reply
to a submitted job (OC4's ``job uuid: <uuid>`` text, or JSON on request)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from service.core.errors import ApiError
from service.core.jobs.views import JobSubmitted
from service.core.urls import oc4_base
from service.web.resources import SETTINGS


def _json(body: bytes, status: int, headers: Mapping[str, str] | None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


# The wire's shape: optional fields core left unset stay out, as OC4 leaves them out (a job without
# a result has no ``result`` key, not a null one). The JSON answer and the console's pages
# (``wire_data``) both follow it, so a page shows exactly the fields the JSON has.


def reply(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """Answer ``model`` as core built it, in the wire's shape."""
    # pydantic writes the JSON itself (no dict of the model built in between).
    return _json(model.__pydantic_serializer__.to_json(model, exclude_unset=True), status, headers)


def wire_data(model: BaseModel) -> dict[str, Any]:
    """``model`` as the JSON answer would carry it, as plain data (for a page's template)."""
    return model.model_dump(mode="json", exclude_unset=True)


def error_response(err: ApiError) -> web.Response:
    headers = dict(err.headers)
    if err.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return _json(orjson.dumps(err.body()), err.status, headers)


def base_url(request: web.Request) -> str:
    """Where clients reach the OC4 API: ``PARTICIPANTS_PUBLIC_URL``, else this request's scheme and
    host, plus the path prefix."""
    settings = request.config_dict[SETTINGS]
    public = settings.public_url or f"{request.scheme}://{request.host}"
    return oc4_base(public, settings.path_prefix)


def submitted_reply(request: web.Request, submitted: JobSubmitted) -> web.Response:
    """OC4 answers a submit with the text ``job uuid: <uuid>``; a client asking for JSON gets the
    job's URLs too. ``Location`` always points at the job's status."""
    # Job-Uuid: the job's id for any client (and the OpenAPI links), whichever body it asked for.
    headers = {"Location": submitted.statusUrl, "Job-Uuid": str(submitted.jobUuid)}
    if "application/json" in request.headers.get("Accept", ""):
        return reply(submitted, headers=headers)
    return web.Response(text=f"job uuid: {submitted.jobUuid}", content_type="text/plain", headers=headers)
