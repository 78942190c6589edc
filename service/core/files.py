"""The files jobs produce: their content type, the time stamp in their names, and the header that
names them on download (and in object storage's metadata)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"


def file_stamp(at: dt.datetime) -> str:
    """OC4's stamp in file names: ``yyyy-MM-dd-HHmmssSSS`` in UTC (the caller appends ``Z``)."""
    at = at.astimezone(dt.UTC)
    return at.strftime("%Y-%m-%d-%H%M%S") + f"{at.microsecond // 1000:03d}"


def content_disposition(file_name: str, *, inline: bool = False) -> str:
    """RFC 6266: an ASCII fallback ``filename`` and the exact name in ``filename*`` (RFC 5987);
    ``inline`` asks the browser to show the file rather than save it (OC4's ``open=true``)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in file_name)
    disposition = "inline" if inline else "attachment"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"
