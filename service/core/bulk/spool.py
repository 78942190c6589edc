"""A bulk upload's file, received whole into a private temp file before any database work.

A client may send its file at a trickle; while it does, it holds this file and nothing shared (no
pooled connection, no transaction), so fifty slow uploads cannot starve other requests. The file
is created unlinked (``tempfile.TemporaryFile``: mode 0600, gone with the process whatever
happens) and its SHA-256 is taken on the way in, for the ``Idempotency-Key`` check.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from typing import IO

from service.core.errors import ApiError

CHUNK = 256 * 1024


class Spool:
    def __init__(self, file: IO[bytes], size: int, digest: bytes) -> None:
        self.file, self.size, self.digest = file, size, digest

    def head(self, n: int) -> bytes:
        self.file.seek(0)
        return self.file.read(n)

    async def chunks(self) -> AsyncIterator[bytes]:
        self.file.seek(0)
        while chunk := self.file.read(CHUNK):  # local disk, mostly page cache: microseconds a chunk
            yield chunk

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


async def spool(body: AsyncIterator[bytes], max_bytes: int) -> Spool:
    """Receive ``body`` whole; ``fileTooLarge`` past ``max_bytes`` (the rest is not read)."""
    file = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the Spool, closed by its owner
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in body:
            size += len(chunk)
            if size > max_bytes:
                raise ApiError("fileTooLarge")
            digest.update(chunk)
            file.write(chunk)
    except BaseException:
        file.close()
        raise
    return Spool(file, size, digest.digest())
