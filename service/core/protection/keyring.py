"""The data keys, unwrapped once per process: the field keys (AES-256-GCM; one active, older ones
still read during a rotation), the blind-index key and the audit-seal key (HMAC-SHA256).

They live wrapped in ``data_keys`` (service/sql/0023_encrypted_contact.sql). The first process to
start on a new database makes them, under an advisory lock so that processes starting together
agree on one set. Every process re-reads the table every ``key_refresh_seconds`` (``refresh``), so
a key added by a rotation is used for new writes everywhere within that time, and a ciphertext
under a key this process has not seen yet makes it look once more before giving up.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
import unicodedata
from dataclasses import dataclass, field

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.core.protection.kek import Kek, KeySourceError

log = logging.getLogger("participants.keys")

PURPOSES = ("fields", "index", "audit")
KEYS_LOCK_ID = 0x4B455953  # "KEYS": held while a process makes the first keys of a database
NONCE = 12
HEADER = struct.Struct(">I")  # the data key's id, first in every ciphertext
OVERHEAD = HEADER.size + NONCE + 16  # header, nonce, GCM tag

LOAD_KEYS = "SELECT id, purpose, state, wrapped, kek_id FROM data_keys WHERE state <> 'retired' ORDER BY id"
INSERT_KEY = "INSERT INTO data_keys (purpose, wrapped, kek_id) VALUES ($1, $2, $3)"


class UnknownDataKey(Exception):
    """A ciphertext names a data key this process does not hold (a rotation it has not seen yet)."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"data key {key_id} is not loaded")
        self.key_id = key_id


class Unreadable(Exception):
    """A ciphertext that does not open under its key and its row's associated data: it was edited,
    or moved from another participant or field. The message names neither value nor key."""


def normalise(value: str) -> bytes:
    """What a blind index hashes: NFKC, case-folded, trimmed, so "Émile " finds "émile"."""
    if value.isascii():  # NFKC leaves ASCII as it is: the common case skips it
        return value.casefold().strip().encode()
    return unicodedata.normalize("NFKC", value).casefold().strip().encode()


def associated_data(study_id: int, subject_key: str, column: str) -> bytes:
    """Binds a ciphertext to one participant (its study and ID, which never change) and one field."""
    return b"%d\x1f%s\x1f%s" % (study_id, subject_key.encode(), column.encode())


@dataclass
class Keyring:
    kek: Kek
    field_keys: dict[int, AESGCM] = field(default_factory=dict)
    active_field_key: int = 0
    index_key: bytes = b""
    audit_key: bytes = b""
    loaded_ids: set[int] = field(default_factory=set)
    _index_hmac: hmac.HMAC | None = None
    _blind_starts: dict[tuple[str, int | None], hmac.HMAC] = field(default_factory=dict)

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    async def load(cls, conn: asyncpg.Connection, kek: Kek) -> Keyring:
        """The database's keys unwrapped by ``kek``, made first if the database has none."""
        ring = cls(kek)
        rows = await conn.fetch(LOAD_KEYS)
        if not {r["purpose"] for r in rows if r["state"] == "active"} >= set(PURPOSES):
            rows = await _make_missing_keys(conn, kek)
        await ring._take(rows)
        return ring

    async def refresh(self, conn: asyncpg.Connection) -> bool:
        """Read the table again; True when the keys changed (a rotation began or ended)."""
        rows = await conn.fetch(LOAD_KEYS)
        if {r["id"] for r in rows} == self.loaded_ids and self._active_id(rows) == self.active_field_key:
            return False
        await self._take(rows)
        return True

    @staticmethod
    def _active_id(rows: list[asyncpg.Record]) -> int:
        return next((r["id"] for r in rows if r["purpose"] == "fields" and r["state"] == "active"), 0)

    async def _take(self, rows: list[asyncpg.Record]) -> None:
        field_keys: dict[int, AESGCM] = {}
        for r in rows:
            if r["kek_id"] != self.kek.kek_id:
                raise KeySourceError(
                    f"the data keys are wrapped by {r['kek_id']}, and this process was given {self.kek.kek_id}:"
                    " start it with the KEK that wrapped them (after participants rotate-kek, the new one)"
                )
            if r["id"] in self.loaded_ids and r["purpose"] == "fields" and r["id"] in self.field_keys:
                field_keys[r["id"]] = self.field_keys[r["id"]]
                continue
            try:
                key = await self.kek.unwrap(bytes(r["wrapped"]), r["purpose"])
            except Exception as exc:  # InvalidTag, a KMS refusal: the message names no key
                raise KeySourceError(
                    f"data key {r['id']} ({r['purpose']}) cannot be unwrapped by {self.kek.kek_id}:"
                    f" {type(exc).__name__}"
                ) from None
            if r["purpose"] == "fields":
                field_keys[r["id"]] = AESGCM(key)
            elif r["purpose"] == "index" and r["state"] == "active":
                self.index_key = key
                self._index_hmac = hmac.new(key, digestmod=hashlib.sha256)
                self._blind_starts = {}
            elif r["purpose"] == "audit" and r["state"] == "active":
                self.audit_key = key
        self.field_keys = field_keys
        self.active_field_key = self._active_id(rows)
        self.loaded_ids = {r["id"] for r in rows}
        if not self.active_field_key or not self.index_key or not self.audit_key:
            raise KeySourceError("data_keys lacks an active key of each purpose (fields, index, audit)")

    # --- fields ----------------------------------------------------------------------------------

    def encrypt(self, study_id: int, subject_key: str, column: str, value: str | None) -> bytes | None:
        """``value`` under the active field key, bound to its participant and column (None stays None)."""
        if value is None:
            return None
        nonce = os.urandom(NONCE)
        aead = self.field_keys[self.active_field_key]
        ad = associated_data(study_id, subject_key, column)
        return HEADER.pack(self.active_field_key) + nonce + aead.encrypt(nonce, value.encode(), ad)

    def encrypt_all(
        self, study_id: int, subject_key: str, columns: tuple[str, ...], values: tuple[str | None, ...]
    ) -> list[bytes | None]:
        """``encrypt`` of each column's value, for a whole row at once (the bulk upload's hot path:
        one call to the system's generator for every nonce of the row)."""
        key_id = self.active_field_key
        encrypt = self.field_keys[key_id].encrypt
        head = HEADER.pack(key_id)
        prefix = b"%d\x1f%s\x1f" % (study_id, subject_key.encode())
        nonces = os.urandom(NONCE * len(columns))
        out: list[bytes | None] = []
        for i, (column, value) in enumerate(zip(columns, values, strict=True)):
            if value is None:
                out.append(None)
            else:
                nonce = nonces[i * NONCE : (i + 1) * NONCE]
                out.append(head + nonce + encrypt(nonce, value.encode(), prefix + column.encode()))
        return out

    def decrypt(self, study_id: int, subject_key: str, column: str, blob: bytes | None) -> str | None:
        if blob is None:
            return None
        return self.open_bytes(blob, associated_data(study_id, subject_key, column), column).decode()

    def open_bytes(self, blob: bytes, ad: bytes, what: str) -> bytes:
        """``blob`` (key id, nonce, ciphertext and tag) opened under its key with associated data
        ``ad``. ``UnknownDataKey``: a key not loaded; ``Unreadable`` (naming ``what``, never a value):
        not the ciphertext of that data."""
        (key_id,) = HEADER.unpack_from(blob)
        aead = self.field_keys.get(key_id)
        if aead is None:
            raise UnknownDataKey(key_id)
        try:
            return aead.decrypt(blob[HEADER.size : HEADER.size + NONCE], blob[HEADER.size + NONCE :], ad)
        except Exception:  # cryptography's InvalidTag
            raise Unreadable(f"a {what} ciphertext does not belong to its row") from None

    @staticmethod
    def key_of(blob: bytes) -> int:
        """The id of the data key a ciphertext is under."""
        return int(HEADER.unpack_from(blob)[0])

    # --- blind indexes ---------------------------------------------------------------------------

    def blind(self, column: str, value: str | None, study_id: int | None = None) -> bytes | None:
        """HMAC-SHA256 of the normalised value under the index key, per column (and per study for
        names: the same name in two studies cannot be linked). Empty after trimming: None."""
        if value is None:
            return None
        normal = normalise(value)
        if not normal:
            return None
        start = self._blind_starts.get((column, study_id))
        if start is None:  # the HMAC state after the column and study, made once per pair
            assert self._index_hmac is not None
            start = self._index_hmac.copy()
            start.update(b"%s\x1f%d\x1f" % (column.encode(), study_id or 0))
            self._blind_starts[(column, study_id)] = start
        mac = start.copy()
        mac.update(normal)
        return mac.digest()[:16]  # 128 bits: collisions stay out of reach, and the index is smaller


async def _make_missing_keys(conn: asyncpg.Connection, kek: Kek) -> list[asyncpg.Record]:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_ID)
        rows = await conn.fetch(LOAD_KEYS)
        have = {r["purpose"] for r in rows if r["state"] == "active"}
        for purpose in PURPOSES:
            if purpose not in have:
                await conn.execute(INSERT_KEY, purpose, await kek.wrap(os.urandom(32), purpose), kek.kek_id)
                log.info("made a new %s data key under %s", purpose, kek.kek_id)
        made: list[asyncpg.Record] = await conn.fetch(LOAD_KEYS)
        return made
