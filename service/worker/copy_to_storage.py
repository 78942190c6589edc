"""CSV streamed into one object in storage, in 1 MiB blocks: the extract file (rows the worker
decrypts, ``BlockWriter``) and the bulk job's result file (Postgres' COPY, ``copy_query_to_storage``)
are both made this way.

Chunks (COPY's ~10 KB, or a batch of the extract's rows) are gathered into 1 MiB blocks, which a
writer task hashes and uploads while the next block is made; the bounded queue keeps memory at a
few blocks and, when storage is slow, stops the producer instead of buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from service.core.files import CSV_CONTENT_TYPE
from service.core.jobs.model import JobFile
from service.core.storage import Storage, Upload

BLOCK_SIZE = 1024 * 1024  # what the upload is handed at a time: far fewer calls into obstore than chunks
BLOCKS_IN_FLIGHT = 3


class BlockWriter:
    """Takes chunks of the file (``write``) and uploads them in blocks; ``file`` is the result once
    the block ends. ``on_progress`` is called with the rows storage has taken so far (lines, less
    the header), at most every ``progress_every`` seconds, after a block is written; what it raises
    aborts the upload and comes out of the next ``write``."""

    def __init__(
        self,
        upload: Upload,
        key: str,
        on_progress: Callable[[int], Awaitable[None]] | None,
        progress_every: float,
        prefix: bytes,
    ) -> None:
        self._upload = upload
        self.key = key
        self._on_progress = on_progress
        self._progress_every = progress_every
        self._next_beat = time.monotonic() + progress_every
        self._digest = hashlib.sha256()
        self.size = len(prefix)
        self._written = 0  # lines in the blocks storage has taken: the progress reported
        self._buffer = bytearray(prefix)
        self._queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue(maxsize=BLOCKS_IN_FLIGHT)
        self._failure: list[BaseException] = []
        self._task: asyncio.Task[None] | None = None

    async def _write_blocks(self) -> None:
        upload = self._upload
        while (item := await self._queue.get()) is not None:
            if self._failure:
                continue  # keep draining so the producer never blocks; it raises the failure
            block, block_newlines = item
            try:
                self._digest.update(block)
                await upload.write(block)
                # Rows count once storage has them: a slow store is what the producer waits on.
                self._written += block_newlines
                if self._on_progress is not None and time.monotonic() >= self._next_beat:
                    self._next_beat = time.monotonic() + self._progress_every
                    await self._on_progress(max(0, self._written - 1))
            except Exception as exc:
                self._failure.append(exc)

    async def _flush(self) -> None:
        block = bytes(self._buffer)
        await self._queue.put((block, block.count(b"\n")))  # progress only: a quoted newline counts too
        self._buffer.clear()

    async def write(self, chunk: bytes) -> None:
        if self._failure:
            raise self._failure[0]
        self.size += len(chunk)
        self._buffer.extend(chunk)
        if len(self._buffer) >= BLOCK_SIZE:
            await self._flush()

    async def finish(self) -> None:
        """Upload what is left and wait for the writer; raises what failed."""
        if self._buffer:
            await self._flush()
        await self._queue.put(None)
        assert self._task is not None
        await self._task
        if self._failure:
            raise self._failure[0]

    def file(self, rows: int) -> JobFile:
        return JobFile(
            byte_size=self.size, sha256=self._digest.hexdigest(), row_count=rows, object_key=self.key
        )


@contextlib.asynccontextmanager
async def block_writer(
    storage: Storage,
    key: str,
    *,
    content_disposition_value: str | None = None,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
    progress_every: float = 1.0,
    prefix: bytes = b"",
) -> AsyncIterator[BlockWriter]:
    """A ``BlockWriter`` into ``key``: the object exists once the block ends without an error
    (after ``finish``); an error aborts the upload. ``prefix`` (a byte-order mark) comes before the
    CSV and counts in the file's size and hash."""
    async with storage.open_upload(
        key, content_type=CSV_CONTENT_TYPE, content_disposition=content_disposition_value
    ) as upload:
        writer = BlockWriter(upload, key, on_progress, progress_every, prefix)
        writer._task = asyncio.create_task(writer._write_blocks())
        try:
            yield writer
        finally:
            task = writer._task
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


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
    """Stream ``select_sql`` by COPY as CSV (with its header) into ``key``: what was written, as a
    ``JobFile`` (rows, bytes, sha256, the key); the rest as ``block_writer``."""
    async with block_writer(
        storage,
        key,
        content_disposition_value=content_disposition_value,
        on_progress=on_progress,
        progress_every=progress_every,
        prefix=prefix,
    ) as out:
        status = await conn.copy_from_query(select_sql, output=out.write, format="csv", header=True)
        await out.finish()
    # "COPY n": the exact number of rows, whatever newlines the cells hold.
    return out.file(int(status.split()[-1]))
