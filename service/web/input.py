"""Turning request parts into typed values, or a 400 with an ``errorCode``: the one place where
query strings and JSON bodies are parsed."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.core.errors import ApiError

M = TypeVar("M", bound=BaseModel)

FLAG_VALUES = {
    "y": True,
    "yes": True,
    "true": True,
    "1": True,
    "n": False,
    "no": False,
    "false": False,
    "0": False,
}


NUL_IN_QUERY = web.RequestKey("nul_in_query", bool)  # set by the NUL guard middleware


def accept_query(request: web.Request) -> None:
    """Called once the caller's access is checked: a NUL byte anywhere in the query string is 400."""
    if request.get(NUL_IN_QUERY):
        raise ApiError("invalidParameter", {"parameter": "query"})


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# What ``query_flag`` accepts, as the OpenAPI document states it (ECMA regexes have no (?i)).
FLAG_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*(" + "|".join(_any_case(w) for w in sorted(FLAG_VALUES)) + r")\s*$",
}


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


def query_choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    """One of ``allowed``; absent is None. Empty is refused like any other value outside the list:
    a filter that names nothing must not silently widen to everything."""
    value = request.query.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise ApiError("invalidParameter", {"parameter": name, "allowed": list(allowed)})
    return value


def query_text(request: web.Request, name: str, max_len: int = 255) -> str | None:
    """A filter's text, at most ``max_len`` characters; absent or empty is None."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_len or "\x00" in value:
        raise ApiError("invalidParameter", {"parameter": name})
    return value


def query_instant(request: web.Request, name: str) -> dt.datetime | None:
    """An ISO 8601 date or date-time; without a zone it is UTC; absent is None (empty is refused: it
    is no date)."""
    value = request.query.get(name)
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
        when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # also a zone pushing year 1 or 9999 out of range
        raise ApiError("invalidParameter", {"parameter": name}) from None
    return when


MAX_ID = 2**63 - 1


def path_id(request: web.Request, name: str, code: str = "webhookNotFound") -> int:
    """A positive bigint id from the path; anything else is ``code`` (404), as if unknown."""
    raw = request.match_info[name]
    if len(raw) > 19 or not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
        raise ApiError(code, {name: raw[:40]})
    return int(raw)
