"""Turning request parts into typed values, or a 400 with an ``errorCode``."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from .errors import ApiError

M = TypeVar("M", bound=BaseModel)

FLAG_VALUES = {"y": True, "yes": True, "true": True, "1": True, "n": False, "no": False, "false": False, "0": False}


def query_flag(request: web.Request, name: str, error_code: str = "invalidParameter") -> bool:
    """A yes/no query parameter: y/yes/true/1 or n/no/false/0 in any case; absent is no."""
    raw = request.query.get(name)
    if raw is None:
        return False
    value = FLAG_VALUES.get(raw.strip().lower())
    if value is None:
        params = {name: raw[:50]} if error_code != "invalidParameter" else {"parameter": name}
        raise ApiError(error_code, params)
    return value


def parse_register(request: web.Request) -> bool:
    """``register`` (seed 001: y or n, default n); anything unknown is ``invalidRegisterParameter``."""
    return query_flag(request, "register", "invalidRegisterParameter")


async def read_json_model(request: web.Request, model: type[M], params: dict[str, Any] | None = None) -> M:
    """The body as ``model``: malformed JSON, a non-object, or wrong types give 400 invalidRequestBody;
    a body declared as something other than JSON is 415 unsupportedMediaType (no body is no body)."""
    raw = await request.read()
    if raw and "Content-Type" in request.headers and not _is_json(request.content_type):
        raise ApiError("unsupportedMediaType", {**(params or {}), "contentType": request.content_type[:100]})
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise ApiError("invalidRequestBody", params) from None
    if not isinstance(data, dict):
        raise ApiError("invalidRequestBody", params)
    if b"\\u0000" in raw and (nul_fields := sorted(_fields_holding_nul(data))):
        # Postgres can neither store nor compare text holding NUL: refuse it for every endpoint here.
        raise ApiError("invalidRequestBody", {**(params or {}), "fields": nul_fields})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False)})
        raise ApiError("invalidRequestBody", {**(params or {}), "fields": fields}) from None


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _fields_holding_nul(value: Any, path: str = "") -> list[str]:
    """Dotted paths (as pydantic names them: ``a.0.b``) of the strings in ``value`` holding NUL."""
    if isinstance(value, str):
        return [path or "body"] if "\x00" in value else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found = []
    for key, item in items:
        key_text = str(key)
        if "\x00" in key_text:
            found.append(path or "body")
        found += _fields_holding_nul(item, f"{path}.{key_text}" if path else key_text)
    return found


def page_params(request: web.Request, default_size: int = 50, max_size: int = 1000) -> tuple[int, int]:
    """``page`` (1-based) and ``pageSize`` from the query string."""
    try:
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("pageSize", str(default_size)))
    except ValueError:
        raise ApiError("invalidParameter", {"parameter": "page/pageSize"}) from None
    if page < 1 or not 1 <= size <= max_size or page > 10_000_000:
        raise ApiError("invalidParameter", {"parameter": "page/pageSize"})
    return page, size


@web.middleware
async def nul_guard_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Postgres cannot store or compare text with NUL in it, so no NUL reaches a query from a URL:
    in a path parameter it becomes U+FFFD (then names nothing, e.g. ``studyNotExist``); in the query
    string it is a 400."""
    for key, value in list(request.match_info.items()):
        if "\x00" in value:
            request.match_info[key] = value.replace("\x00", "\ufffd")
    if any("\x00" in k or "\x00" in v for k, v in request.query.items()):
        raise ApiError("invalidParameter", {"parameter": "query"})
    return await handler(request)
