"""Reading an uploaded CSV file from a request, for the API's bulk upload and the console's upload
form alike: the multipart part ``file`` or a raw ``text/csv`` body, as a stream of bytes.

aiohttp's multipart reader raises several kinds of exception on a body that is not well-formed
multipart; every one of them is ``notSupportedFileFormat`` here (``MALFORMED_MULTIPART``).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader
from aiohttp.web_protocol import RequestPayloadError

from service.core.errors import ApiError

CHUNK = 256 * 1024  # bytes read from the body at a time
# A multipart body carries some bytes besides the file; allow for them in the early size check.
MULTIPART_OVERHEAD = 64 * 1024
# What aiohttp's multipart reader raises on a body that is not well-formed multipart.
MALFORMED_MULTIPART = (ValueError, AssertionError, HttpProcessingError, RuntimeError, RequestPayloadError)


async def upload_body(request: web.Request, max_bytes: int) -> AsyncIterator[bytes]:
    """The CSV file's bytes, as a stream: the multipart part ``file`` or a raw ``text/csv`` body.

    Checks what can be checked before reading the file (media type, part name and file name,
    declared length); the stream itself raises ``fileTooLarge`` past ``max_bytes`` and
    ``notSupportedFileFormat`` on a malformed multipart body.
    """
    ctype = request.content_type
    declared = request.content_length
    if ctype == "multipart/form-data":
        if declared is not None and declared > max_bytes + MULTIPART_OVERHEAD:
            raise ApiError("fileTooLarge")
        part = await file_part(request)
        return part_chunks(part)
    if ctype == "text/csv":
        if declared is not None and declared > max_bytes:
            raise ApiError("fileTooLarge")
        return raw_chunks(request)
    raise ApiError("notSupportedFileFormat")


async def file_part(request: web.Request) -> BodyPartReader:
    """The first part named ``file`` that is a CSV (by file name or part type)."""
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise ApiError("notSupportedFileFormat")
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not ours
            with warnings.catch_warnings():  # malformed Content-Disposition: no name, not the file
                warnings.simplefilter("ignore")
                name, filename = part.name, part.filename
            if name != "file":
                continue
            part_type = part.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if (filename or "").lower().endswith(".csv") or part_type == "text/csv":
                return part
            raise ApiError("notSupportedFileFormat")
    except MALFORMED_MULTIPART:
        raise ApiError("notSupportedFileFormat") from None


async def part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    """A multipart part's decoded bytes; a malformed body is ``notSupportedFileFormat``."""
    while True:
        try:
            chunk = await part.read_chunk(CHUNK)
            data = part.decode(chunk) if chunk else b""  # a Content-Transfer-Encoding, if any
        except MALFORMED_MULTIPART:
            raise ApiError("notSupportedFileFormat") from None
        if not chunk:
            return
        yield bytes(data)


async def raw_chunks(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            yield chunk
    except RequestPayloadError:  # a Content-Encoding that does not decode
        raise ApiError("notSupportedFileFormat") from None
