"""The extract's rows, read through a server-side cursor and decrypted in the worker, batch by batch.

One read-only transaction holds the cursor over the site's rows (the query of core/extracts.py:
the partial index, participant-ID order, the options' slice). While the worker decrypts one batch
(core/extract_csv.py), Postgres already makes the next (its fetch is sent before the batch is
decrypted), so the two run on two cores. Each batch's CSV goes to the ``BlockWriter``; memory is a
batch and a few blocks, whatever the site's size. Between batches the event loop runs the
heartbeat and the upload.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from service.core.extract_csv import Encoder
from service.core.extract_options import ExtractOptions
from service.core.extracts import CSV_HEADER, extract_select, plain_columns
from service.core.protection.fields import keys
from service.core.protection.keyring import UnknownDataKey
from service.worker.copy_to_storage import BlockWriter

# Rows per fetch: large enough that a round trip is a small part of it, small enough that one
# batch's records and text stay a few MB (and the loop is never held for long).
BATCH_ROWS = 2000


async def rows_to_storage(
    conn: asyncpg.Connection, out: BlockWriter, study_id: int, site_id: int, options: ExtractOptions
) -> int:
    """Write the header and the site's rows (the options' slice) to ``out``; the rows written.
    Raises ``Unreadable`` for a ciphertext that is not its row's, ``UnknownDataKey`` for one under
    a key the database does not hold (after reading the keys once more)."""
    sql, cells = extract_select(site_id, options, await plain_columns(conn))
    ring = keys(conn)
    encoder = Encoder(study_id, cells, ring.field_keys, options.include_participate)
    await out.write(CSV_HEADER.encode() + b"\n")
    rows = 0
    async with conn.transaction(readonly=True):
        cursor = await conn.cursor(sql)
        records = await cursor.fetch(BATCH_ROWS)
        pending: asyncio.Future[list[asyncpg.Record]] | None = None
        try:
            while records:
                # A full batch may have more behind it: ask for them before decrypting this one.
                if len(records) == BATCH_ROWS:
                    pending = asyncio.ensure_future(cursor.fetch(BATCH_ROWS))
                await asyncio.sleep(0)  # lets the fetch go out (and the loop breathe)
                following: list[asyncpg.Record] | None = None
                try:
                    text = encoder.batch(records)
                except UnknownDataKey:
                    # A rotation began after this process last read the keys: read them again
                    # (once the connection is free) and decrypt the batch again.
                    following = await pending if pending is not None else []
                    pending = None
                    await ring.refresh(conn)
                    encoder.use_keys(ring.field_keys)
                    text = encoder.batch(records)
                await out.write(text.encode())
                rows += len(records)
                if following is None:
                    following = await pending if pending is not None else []
                records, pending = following, None
        finally:
            if pending is not None:
                # Leaves the connection free for the transaction's rollback.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await pending
    return rows
