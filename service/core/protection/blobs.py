"""Arbitrary bytes under the active field key: for stored data that is not a participant's field
but may carry one (an Idempotency-Key's kept answer, say).

The layout is the field ciphertexts' (key id, nonce, AES-256-GCM ciphertext and tag); the
associated data is the caller's, prefixed with ``blob`` and a purpose so that a blob can never be
taken for a participant's field, nor one purpose's blob for another's.
"""

from __future__ import annotations

import os

import asyncpg

from service.core.protection.fields import keys
from service.core.protection.keyring import HEADER, NONCE, Keyring, UnknownDataKey


def _ad(purpose: str, context: bytes) -> bytes:
    return b"blob\x1f" + purpose.encode() + b"\x1f" + context


def seal(ring: Keyring, purpose: str, context: bytes, plain: bytes) -> bytes:
    """``plain`` under the active field key, bound to ``purpose`` and ``context``."""
    nonce = os.urandom(NONCE)
    aead = ring.field_keys[ring.active_field_key]
    return HEADER.pack(ring.active_field_key) + nonce + aead.encrypt(nonce, plain, _ad(purpose, context))


def _open(ring: Keyring, purpose: str, context: bytes, blob: bytes) -> bytes:
    return ring.open_bytes(blob, _ad(purpose, context), purpose + " blob")


async def opened_blob(conn: asyncpg.Connection, purpose: str, context: bytes, blob: bytes) -> bytes:
    """``blob`` in clear; a key this process has not loaded yet makes it read the key table again."""
    ring = keys(conn)
    try:
        return _open(ring, purpose, context, blob)
    except UnknownDataKey:
        await ring.refresh(conn)
        return _open(ring, purpose, context, blob)
