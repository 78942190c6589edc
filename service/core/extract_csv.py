"""The extract's rows as CSV, decrypted in Python: byte for byte what ``COPY ... (FORMAT csv)`` of
the plaintext with the SQL guards (service/sql/0003_extract.sql, 0011_formula_guard_nfkc.sql) made.

- The formula-injection guard: a cell whose first character is ``= + - @``, a tab or a CR, or a
  non-ASCII character that NFKC turns into one (a full-width or superscript equals sign...), gets a
  leading apostrophe; a phone number of the ``+CC N`` form is data and is left alone.
- Postgres' CSV quoting (RFC 4180): a NULL is an empty unquoted cell, an empty string is ``""``,
  a cell holding a comma, a double quote, a CR or a LF is quoted; rows end with LF.

``Encoder.batch`` is the hot loop (one call per batch of rows, a few microseconds a row, most of
them AES-GCM): ``csv.writer`` writes the common rows; a batch holding an empty string or a CR, which
Python's writer quotes differently from Postgres, is written again by the exact (slower) formatter.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.core.protection.keyring import HEADER, NONCE, UnknownDataKey, Unreadable

TRIGGERS = frozenset("=+-@\t\r")
PHONE = re.compile(r"\+[0-9]{1,3} [0-9]{1,14}")
_KEY_END = HEADER.size
_NONCE_END = HEADER.size + NONCE


def triggers(value: str) -> bool:
    """``csv_guard_trigger``: the first character, or its NFKC form when non-ASCII, starts a formula."""
    if not value:
        return False
    first = value[0]
    return first in TRIGGERS or (first > "\x7f" and unicodedata.normalize("NFKC", first)[:1] in TRIGGERS)


def guard(value: str | None) -> str | None:
    """``csv_guard``."""
    return "'" + value if value is not None and triggers(value) else value


def guard_phone(value: str | None) -> str | None:
    """``csv_guard_phone``: ``+CC N`` is a phone number, not a formula."""
    if value is not None and triggers(value) and PHONE.fullmatch(value) is None:
        return "'" + value
    return value


def pg_cell(value: str | None) -> str:
    """One cell as Postgres' COPY CSV writes it (delimiter ``,``, quote ``"``, NULL as nothing)."""
    if value is None:
        return ""
    if value == "" or any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def pg_line(row: Sequence[str | None]) -> str:
    return ",".join(pg_cell(v) for v in row) + "\n"


@dataclass(frozen=True)
class Cell:
    """One personal column of the file: its place in the query's record, its plain column's place
    (None once the plain columns are gone), the associated data's last part, and its guard."""

    ct_index: int
    plain_index: int | None
    column: bytes
    phone: bool = False


@functools.cache
def _scans() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Regexes finding, in a column's cells joined by NUL, one the guard may change: its first
    character a trigger or any non-ASCII character (the guard then decides, with its NFKC test, for
    the column's cells one by one), and for phones not of the ``+CC N`` form. A class of every
    look-alike itself would cost a third of a second and some 40 MB per process to compile."""
    first = "[=+\\-@\t\r\x80-\U0010ffff]"
    return re.compile("\x00" + first), re.compile("\x00(?!\\+[0-9]{1,3} [0-9]{1,14}(?:\x00|\\Z))" + first)


class Encoder:
    """Turns batches of extract records into CSV text. A record holds the participant ID, the
    participate status, then the columns ``cells`` point at. Without ``participate`` the access code
    and the participate status are empty cells (``cells`` then stops at the identifier).

    A batch is worked column by column with ``map`` over C functions (slicing, AES-GCM, decoding),
    so a cell costs little more than its decryption; the guard is one regex scan of the column,
    and only a column it finds something in is guarded cell by cell."""

    def __init__(
        self, study_id: int, cells: Sequence[Cell], field_keys: dict[int, AESGCM], participate: bool
    ) -> None:
        self.participate = participate
        self.study_prefix = b"%d\x1f" % study_id
        self.cells = tuple(cells)
        self.use_keys(field_keys)
        self._scan, self._scan_phone = _scans()
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, lineterminator="\n")

    def use_keys(self, field_keys: dict[int, AESGCM]) -> None:
        """The keyring's field keys, by the 4-byte header each ciphertext starts with."""
        self.aeads = {HEADER.pack(k): v for k, v in field_keys.items()}

    def batch(self, records: Sequence[Any]) -> str:
        """``records`` as CSV lines. Raises ``UnknownDataKey`` (a key this process has not loaded:
        load the keys again and retry the batch) or ``Unreadable`` (a ciphertext that is not its
        row's: the extract must stop)."""
        n = len(records)
        subject_keys = list(map(_FIRST, records))
        prefixes = [self.study_prefix + k.encode() + b"\x1f" for k in subject_keys]
        columns = [self._guarded(subject_keys, False)]
        for cell in self.cells:
            columns.append(self._column(records, prefixes, cell))
        if self.participate:
            statuses = [s or None for s in map(_SECOND, records)]  # an empty status: an empty cell
            columns.append(self._guarded(statuses, False))
        else:
            columns += ([None] * n, [None] * n)
        rows = zip(*columns, strict=True)
        # Python's writer leaves an empty string and a CR unquoted where COPY quotes them: a batch
        # holding either is written by the exact formatter instead.
        if not any("" in c for c in columns):
            text = self._text
            self._writer.writerows(rows)
            out = text.getvalue()
            text.seek(0)
            text.truncate()
            if "\r" not in out:
                return out
            rows = zip(*columns, strict=True)
        return "".join(map(pg_line, rows))

    def _guarded(self, texts: list[Any], phone: bool) -> list[Any]:
        """``texts`` through the guard: one scan of the column, cell by cell only when it finds one."""
        present = [t for t in texts if t is not None] if None in texts else texts
        joined = "\x00" + "\x00".join(present)
        scan = self._scan_phone if phone else self._scan
        # A NUL inside a value would hide a cell's start from the scan: then every cell is looked at.
        if scan.search(joined) is None and joined.count("\x00") == len(present):
            return texts
        return list(map(guard_phone if phone else guard, texts))

    def _column(self, records: Sequence[Any], prefixes: list[bytes], cell: Cell) -> list[str | None]:
        blobs = list(map(itemgetter(cell.ct_index), records))
        if None not in blobs:
            return self._guarded(self._open(blobs, prefixes, cell.column), cell.phone)
        # Some rows have no ciphertext: no value, or (a database from before encryption) the plain one.
        if cell.plain_index is None:
            values: list[str | None] = [None] * len(blobs)
        else:
            values = list(map(itemgetter(cell.plain_index), records))
        present = [i for i, b in enumerate(blobs) if b is not None]
        if present:
            opened = self._open([blobs[i] for i in present], [prefixes[i] for i in present], cell.column)
            for i, value in zip(present, opened, strict=True):
                values[i] = value
        return self._guarded(values, cell.phone)

    def _open(self, blobs: list[bytes], prefixes: list[bytes], column: bytes) -> list[str]:
        ads = map(bytes.__add__, prefixes, repeat(column))
        headers = set(map(_KEY, blobs))
        try:
            if len(headers) == 1:  # one key (no rotation under way): every call is C
                aead = self.aeads.get(headers.pop())
                if aead is None:
                    raise UnknownDataKey(HEADER.unpack_from(blobs[0])[0])
                plain = list(map(aead.decrypt, map(_NONCE, blobs), map(_BODY, blobs), ads))
            else:
                plain = [
                    self._key(b).decrypt(b[_KEY_END:_NONCE_END], b[_NONCE_END:], ad)
                    for b, ad in zip(blobs, ads, strict=True)
                ]
        except InvalidTag:
            raise Unreadable(f"a {column.decode()} ciphertext does not belong to its row") from None
        return list(map(bytes.decode, plain))

    def _key(self, blob: bytes) -> AESGCM:
        aead = self.aeads.get(blob[:_KEY_END])
        if aead is None:
            raise UnknownDataKey(HEADER.unpack_from(blob)[0])
        return aead


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_KEY = itemgetter(slice(0, _KEY_END))
_NONCE = itemgetter(slice(_KEY_END, _NONCE_END))
_BODY = itemgetter(slice(_NONCE_END, None))
