"""A query's rows as CSV, streamed by Postgres' COPY straight into one object in storage: the extract
file and the bulk job's result file are both made this way.

COPY chunks (~10 KB each) are gathered into 1 MiB blocks, which a writer task hashes and uploads
while the next block arrives; the bounded queue keeps memory at a few blocks and, when storage is
slow, stops reading from Postgres instead of buffering. Rows never pass through Python one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable

import asyncpg

from service.core.files import CSV_CONTENT_TYPE
from service.core.jobs.model import JobFile
from service.core.storage import Storage

BLOCK_SIZE = 1024 * 1024  # what the upload is handed at a time: far fewer calls into obstore than COPY chunks
BLOCKS_IN_FLIGHT = 3


async def copy_query_to_storage(
    conn: asyncpg.Connection,
    storage: Storage,
    key: str,
    select_sql: str,
    *,
    content_disposition_value: str | None = None,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
    progress_every: float = 1.0,
    prefix: bytes = b"",
) -> JobFile:
    """Stream ``select_sql`` as CSV (with its header) into ``key``: what was written, as a ``JobFile``
    (rows, bytes, sha256, the key). ``on_progress`` is called with the rows storage has taken so
    far, at most every ``progress_every`` seconds, after a block is written; what it raises aborts
    the COPY and the upload. ``prefix`` (a byte-order
    mark) comes before the CSV and counts in the file's size and hash."""
    digest = hashlib.sha256()
    size = 0
    written = 0  # in the blocks storage has taken: the progress reported
    next_beat = time.monotonic() + progress_every
    queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue(maxsize=BLOCKS_IN_FLIGHT)
    failure: list[BaseException] = []

    async with storage.open_upload(
        key, content_type=CSV_CONTENT_TYPE, content_disposition=content_disposition_value
    ) as upload:

        async def write_blocks() -> None:
            nonlocal written, next_beat
            while (item := await queue.get()) is not None:
                if failure:
                    continue  # keep draining so the reader never blocks; it raises the failure
                block, block_newlines = item
                try:
                    digest.update(block)
                    await upload.write(block)
                    # Rows count once storage has them: a slow store is what the reader waits on.
                    written += block_newlines
                    if on_progress is not None and time.monotonic() >= next_beat:
                        next_beat = time.monotonic() + progress_every
                        await on_progress(max(0, written - 1))
                except Exception as exc:
                    failure.append(exc)

        writer = asyncio.create_task(write_blocks())
        buffer = bytearray(prefix)
        size = len(prefix)

        async def flush() -> None:
            block = bytes(buffer)
            await queue.put((block, block.count(b"\n")))  # progress only: a quoted newline counts too
            buffer.clear()

        async def sink(chunk: bytes) -> None:
            nonlocal size
            if failure:
                raise failure[0]
            size += len(chunk)
            buffer.extend(chunk)
            if len(buffer) >= BLOCK_SIZE:
                await flush()

        try:
            status = await conn.copy_from_query(select_sql, output=sink, format="csv", header=True)
            if buffer:
                await flush()
            await queue.put(None)
            await writer
            if failure:
                raise failure[0]
        finally:
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
    # "COPY n": the exact number of rows, whatever newlines the cells hold.
    rows = int(status.split()[-1])
    return JobFile(byte_size=size, sha256=digest.hexdigest(), row_count=rows, object_key=key)
