"""Object storage for job files: one small interface, two backends, both through ``obstore``.

- ``local``: a folder (the embedded default), ``obstore.store.LocalStore``;
- ``s3``: AWS S3 or anything speaking its protocol (MinIO, moto), ``obstore.store.S3Store``.

What callers get: a streaming, atomic upload (``open_upload``: the object appears whole on
``complete`` or not at all; an aborted S3 multipart upload stays invisible), a ranged streaming
read, ``head``, ``delete`` (missing is fine) and a presigned GET URL (S3 only).
Failures come out as ``StorageNotFound`` or ``StorageUnavailable``, never as obstore's own types,
whose not-found error is an ``OSError`` and would otherwise read as "dependency unavailable".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import obstore
from obstore.store import LocalStore, S3Store

from service.settings import Settings

# S3 wants parts of at least 5 MiB (but the last). Two parts in flight bound the memory an upload
# holds to about 3 parts, whatever the file size.
PART_SIZE = 5 * 1024 * 1024
UPLOAD_CONCURRENCY = 2
READ_CHUNK = 256 * 1024


PRIVATE_UMASK = 0o077  # files 0600, folders 0700


class StorageError(Exception):
    pass


class StorageNotFound(StorageError):
    pass


class StorageUnavailable(StorageError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str | None


def _translate(exc: BaseException, key: str) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageNotFound(key)
    # The message names the backend and operation, never the object's content.
    return StorageUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}")


class Upload:
    """A streaming upload: ``write`` chunks, then ``complete``; ``abort`` (or an exception inside
    ``async with``) leaves no object behind."""

    def __init__(self, writer: Any, key: str) -> None:
        self._writer = writer
        self.key = key
        self._done = False

    async def write(self, chunk: bytes) -> None:
        try:
            await self._writer.write(chunk)
        except Exception as exc:
            raise _translate(exc, self.key) from exc

    async def complete(self) -> None:
        self._done = True
        try:
            await self._writer.close()
        except Exception as exc:
            raise _translate(exc, self.key) from exc

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        # obstore aborts the multipart upload when its writer's context exits with an exception.
        # Nothing more to do if that fails: the object was never completed.
        with contextlib.suppress(Exception):
            await self._writer.__aexit__(StorageError, StorageError("aborted"), None)

    async def __aenter__(self) -> Upload:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if not self._done:
                await self.complete()
        else:
            await self.abort()


class Storage:
    def __init__(self, store: LocalStore | S3Store, *, backend: str, root: Path | None = None) -> None:
        self.store = store
        self.backend = backend
        self.root = root  # the local backend's folder

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        if settings.storage_backend == "s3":
            client_options: dict[str, Any] = {
                "allow_http": settings.s3_allow_http,
                "timeout": dt.timedelta(seconds=settings.storage_timeout_seconds),
                "connect_timeout": dt.timedelta(seconds=min(5.0, settings.storage_timeout_seconds)),
            }
            retry: dict[str, Any] = {
                "max_retries": 3,
                "retry_timeout": dt.timedelta(seconds=settings.storage_timeout_seconds),
            }
            kwargs: dict[str, Any] = {"region": settings.s3_region}
            if settings.s3_endpoint:
                kwargs["endpoint"] = settings.s3_endpoint
                kwargs["virtual_hosted_style_request"] = False
            if settings.s3_sse:
                # obstore sends the encryption headers on every put and multipart upload.
                kwargs["server_side_encryption"] = settings.s3_sse
                if settings.s3_sse_kms_key_id:
                    kwargs["sse_kms_key_id"] = settings.s3_sse_kms_key_id
            if settings.s3_access_key_id and settings.s3_secret_access_key:
                kwargs["access_key_id"] = settings.s3_access_key_id
                kwargs["secret_access_key"] = settings.s3_secret_access_key
            store = S3Store(
                settings.s3_bucket,
                client_options=client_options,  # type: ignore[arg-type]
                retry_config=retry,  # type: ignore[arg-type]
                **kwargs,
            )
            return cls(store, backend="s3")
        folder = settings.storage_dir
        # The files hold patients' contact details: readable by the service alone, whatever umask
        # the process was started with. obstore creates files and folders with the process umask
        # (files 0666 & ~umask), so the local backend narrows it, process-wide, to 077.
        os.umask(PRIVATE_UMASK)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
        return cls(LocalStore(folder.resolve(), mkdir=True), backend="local", root=folder.resolve())

    @property
    def can_sign(self) -> bool:
        return self.backend == "s3"

    def open_upload(
        self, key: str, *, content_type: str | None = None, content_disposition: str | None = None
    ) -> Upload:
        attributes: dict[str, str] | None = None
        if self.backend == "s3":
            # Served back by S3 itself to presigned-URL downloads. The local store has no attributes.
            attributes = {}
            if content_type:
                attributes["Content-Type"] = content_type
            if content_disposition:
                attributes["Content-Disposition"] = content_disposition
        writer = obstore.open_writer_async(
            self.store,
            key,
            attributes=attributes or None,
            buffer_size=PART_SIZE,
            max_concurrency=UPLOAD_CONCURRENCY,
        )
        return Upload(writer, key)

    async def head(self, key: str) -> ObjectInfo:
        try:
            meta = await obstore.head_async(self.store, key)
        except Exception as exc:
            raise _translate(exc, key) from exc
        return ObjectInfo(size=int(meta["size"]), etag=meta.get("e_tag"))

    async def read_stream(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes]:
        """Bytes ``[start, end)`` of the object (``end`` None: to the end), in chunks.

        The first request is made before the first chunk is yielded, so not-found and
        unavailable surface on the first ``__anext__``.
        """
        options: dict[str, Any] = {}
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await obstore.get_async(self.store, key, options=options or None)  # type: ignore[arg-type]
        except Exception as exc:
            raise _translate(exc, key) from exc
        try:
            async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)
        except Exception as exc:
            raise _translate(exc, key) from exc

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self.store, key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise _translate(exc, key) from exc

    async def discard_partials(self, key: str) -> int:
        """Remove what uploads to ``key`` that never completed left behind; return how many.

        The local backend stages an upload in ``<key>#<n>`` and renames it on completion: a worker
        killed mid-upload leaves that file (part of a file of personal data) in the folder, invisible
        to listings. On S3 the parts of an unfinished multipart upload are invisible and are
        removed by the bucket's lifecycle rule (see docs/extract.md).
        """
        if self.root is None:
            return 0
        target = self.root / key

        def discard() -> int:
            removed = 0
            for partial in target.parent.glob(target.name.replace("[", "[[]") + "#*"):
                partial.unlink(missing_ok=True)
                removed += 1
            return removed

        # The glob scans the whole folder (every retained file): off the event loop, so the other
        # jobs of this worker keep streaming meanwhile.
        return await asyncio.to_thread(discard)

    async def presigned_get_url(self, key: str, expires_in: dt.timedelta) -> str | None:
        """A URL anyone may GET for ``expires_in``; None when the backend cannot sign (local)."""
        if not isinstance(self.store, S3Store):
            return None
        try:
            return await obstore.sign_async(self.store, "GET", key, expires_in)
        except Exception as exc:
            raise _translate(exc, key) from exc
