"""Parsing a bulk upload CSV as it streams in: bytes in, validated rows out.

No HTTP and no SQL here. ``BulkCsvParser.feed`` takes the body chunk by chunk and returns the
rows completed so far, each ready for COPY into the staging table; memory holds one chunk and the
record being read, never the file. File-level problems raise ``ApiError`` (nothing has been
written to participants at that point, so failing half-way through the file is all-or-nothing).

Rules (contract.md "Bulk add from CSV"): UTF-8 with or without a BOM, LF or CRLF, RFC 4180
quoting; a header row naming ``ParticipantID`` (any case) and optionally the contact columns;
other columns are ignored, column order does not matter; values are trimmed; empty lines skipped.
"""

from __future__ import annotations

import codecs
import csv
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

from service.core.errors import ApiError
from service.core.validation import contact_errors, participant_id_errors

# Normalized header (lower case, no spaces, underscores or hyphens) -> column of the staging table.
HEADER_COLUMNS = {
    "participantid": "subject_key",
    "firstname": "first_name",
    "lastname": "last_name",
    "emailaddress": "email",
    "mobilenumber": "phone",
    "phonenumber": "phone",  # the single add's JSON name
    "identifier": "identifier",
}
CONTACT_COLUMNS = ("first_name", "last_name", "email", "phone", "identifier")
# A failed row echoes its ID in the response; a 1 MB "ID" is echoed this far.
ECHO_MAX = 100
NO_CONTACT: list[str | None] = [None] * 5
# Memory stays bounded whatever the file's shape: a record (a row, with any newlines quoted inside
# it) longer than ROW_MAX characters is a file-level error (``rowTooLarge``): the parser would have
# to hold it whole to find where it ends. A cell longer than CELL_MAX in a shorter row fails that row
# alone (``cellTooLarge``). csv's own field limit sits above ROW_MAX so it never fires first.
ROW_MAX = 1 << 20
CELL_MAX = 64 * 1024
FIELD_LIMIT = 2 * ROW_MAX
# An unfinished record is parsed again once the buffer has doubled (linear time for a huge one) or
# grown by RETRY_STEP characters, whichever comes first: the lines waiting for that retry are one
# str object each, so this bounds their number (a cell of newlines: RETRY_STEP / 2 lines).
RETRY_STEP = 128 * 1024


class StagedRow(NamedTuple):
    """One data row as COPYed into the staging table. Contact values only for rows without errors.

    The parser hands out plain tuples of these fields, in this order (``StagedRow._make`` names
    them): the garbage collector stops tracking a plain tuple of strings, numbers and tuples at its
    first collection (never a subclass's), so a million staged rows never pile up in the oldest
    generation, whose full collections held the event loop 50 ms and more during a 1M-row upload."""

    row_no: int  # the record's number in the file, the header being row 1 (as a spreadsheet shows it)
    subject_key: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    identifier: str | None
    errors: tuple[str, ...]  # () for a valid row: a list would keep the row tracked


Row = tuple[int, str, str | None, str | None, str | None, str | None, str | None, tuple[str, ...]]


class _NeedMore(Exception):
    """The csv reader asked for a line that has not arrived yet."""


class _Lines:
    """The csv reader's line source. Lines handed out for a record still being read are kept, so
    that when the reader runs dry mid-record they can be given to it again once more data came."""

    def __init__(self) -> None:
        self.ready: deque[str] = deque()
        self.pending: list[str] = []
        self.pending_chars = 0
        self.eof = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.ready:
            line = self.ready.popleft()
            self.pending.append(line)
            self.pending_chars += len(line)
            return line
        if self.eof:
            raise StopIteration
        raise _NeedMore

    def record_done(self) -> None:
        self.pending.clear()
        self.pending_chars = 0

    def rewind(self) -> None:
        """Give the unfinished record's lines back, joined into one string: the reader stopped
        inside a quoted field, so each newline in it is field content, which csv takes within a
        "line" as well. One string instead of one object per line: a cell of a million newlines is
        a few MB here, not tens (each line a str object of its own)."""
        if self.pending:
            self.ready.appendleft(self.pending[0] if len(self.pending) == 1 else "".join(self.pending))
        self.record_done()


def _normalize_header(name: str) -> str:
    return "".join(ch for ch in name.strip().lower() if ch not in " _-")


class BulkCsvParser:
    def __init__(self, site_level: bool, max_bytes: int) -> None:
        self.site_level = site_level
        self.max_bytes = max_bytes
        self.bytes_read = 0
        self.data_rows = 0  # non-empty rows after the header
        self.valid_rows = 0  # of which without field errors
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self._tail: list[str] = []  # the current, unfinished line, in pieces
        self._tail_chars = 0
        self._lines = _Lines()
        # strict: a quote left open at the end, or text after a closing quote, is not RFC 4180 CSV.
        self._reader = csv.reader(self._lines, strict=True)
        self._retry_at = 0  # don't re-parse a long pending record before this many chars are buffered
        self._buffered = 0  # chars of complete lines not yet turned into records
        # True while the reader is stopped inside a quoted field and nothing since could end it:
        # the unfinished record is then the one string in ``_lines.ready``.
        self._in_quotes = False
        self._record_no = 0
        self._columns: list[tuple[int, str]] | None = None  # (index in record, staging column)
        self._key_index = 0
        self._contact_indexes: list[int] = []  # per CONTACT_COLUMNS, -1 if absent; empty if none given
        if csv.field_size_limit() < FIELD_LIMIT:
            csv.field_size_limit(FIELD_LIMIT)

    @property
    def header_seen(self) -> bool:
        return self._columns is not None

    # -- bytes to lines -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[Row]:
        """Take the next piece of the body; return the rows it completed."""
        self.bytes_read += len(chunk)
        if self.bytes_read > self.max_bytes:
            raise ApiError("fileTooLarge")
        if b"\x00" in chunk:  # no text file holds NUL: a binary file
            raise ApiError("notSupportedFileFormat")
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError:
            raise ApiError("notSupportedFileFormat") from None
        self._add_text(text)
        return self._parse()

    def close(self) -> list[Row]:
        """The end of the body: return the last rows; raise if the file held no header or no rows."""
        try:
            text = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ApiError("notSupportedFileFormat") from None
        self._add_text(text)
        if self._tail:
            self._push_lines(["".join(self._tail)])
            self._tail, self._tail_chars = [], 0
        self._lines.eof = True
        self._retry_at = 0
        self._in_quotes = False
        rows = self._parse()
        if self._columns is None:
            raise ApiError("blankFile")
        if self.data_rows == 0:
            raise ApiError("blankFile")
        return rows

    def _add_text(self, text: str) -> None:
        if not text:
            return
        if self._in_quotes:
            if '"' not in text:
                # Only a quote can end a quoted field (no escape character is set), so all of this
                # is the same cell: appended to the record as it is, neither split into lines nor
                # parsed again. A cell of a million newlines costs its characters, nothing more.
                ready = self._lines.ready
                ready.append(ready.pop() + "".join(self._tail) + text)
                self._buffered += self._tail_chars + len(text)
                self._tail, self._tail_chars = [], 0
                self._check_record_size()
                return
            self._in_quotes = False
        if "\n" not in text:
            # One long line arriving in pieces: keep the pieces, join once (no quadratic copying).
            self._tail.append(text)
            self._tail_chars += len(text)
            self._check_record_size()
            return
        if self._tail:
            self._tail.append(text)
            text = "".join(self._tail)
            self._tail, self._tail_chars = [], 0
        parts = text.split("\n")
        last = parts.pop()
        if last:
            self._tail.append(last)
            self._tail_chars = len(last)
        self._push_lines([p + "\n" for p in parts])
        self._check_record_size()

    def _check_record_size(self) -> None:
        """Everything buffered but not yet a record is the record being read (plus, at most, lines
        after it that the next parse takes): past ROW_MAX, refuse the file rather than hold it."""
        if self._tail_chars > ROW_MAX or (self._retry_at and self._buffered + self._tail_chars > ROW_MAX):
            raise ApiError("rowTooLarge", {"maxBytes": ROW_MAX})

    def _push_lines(self, lines: list[str]) -> None:
        self._lines.ready.extend(lines)
        self._buffered += sum(len(line) for line in lines)

    # -- lines to records -----------------------------------------------------------------------

    def _parse(self) -> list[Row]:
        out: list[Row] = []
        lines = self._lines
        if self._in_quotes or self._buffered < self._retry_at:
            return out
        while lines.ready:
            try:
                record = next(self._reader)
            except _NeedMore:
                # A quoted field spans past what has arrived. Try again once the buffer has doubled
                # or grown by RETRY_STEP: a huge multi-line cell (at most ROW_MAX) is read again at
                # most ROW_MAX / RETRY_STEP times past its first RETRY_STEP characters.
                self._retry_at = min(2 * self._buffered, self._buffered + RETRY_STEP)
                lines.rewind()
                # (The start of a next line, not given to the reader yet, may hold the closing quote.)
                self._in_quotes = len(lines.ready) == 1 and not any('"' in t for t in self._tail)
                self._check_record_size()
                return out
            except StopIteration:
                break
            except csv.Error:
                raise ApiError("notSupportedFileFormat") from None
            if lines.pending_chars > ROW_MAX:
                raise ApiError("rowTooLarge", {"maxBytes": ROW_MAX})
            self._buffered -= lines.pending_chars
            lines.record_done()
            self._retry_at = 0
            row = self._record(record)
            if row is not None:
                out.append(row)
        return out

    # -- records to rows ------------------------------------------------------------------------

    def _record(self, record: list[str]) -> Row | None:
        self._record_no += 1
        if self._columns is None:
            if any(field.strip() for field in record):
                self._read_header(record)
            return None
        n = len(record)
        k = self._key_index
        key = record[k].strip() if k < n else ""
        if not key and not any(field.strip() for field in record):
            return None  # an empty line, or only separators
        self.data_rows += 1
        if any(len(field) > CELL_MAX for field in record):
            return (self._record_no, key[:ECHO_MAX], None, None, None, None, None, ("cellTooLarge",))
        errors = participant_id_errors(key) if key else ["participantIDEmpty"]
        contact: list[str | None] = NO_CONTACT
        if self._contact_indexes:
            values = [record[i].strip() if 0 <= i < n else "" for i in self._contact_indexes]
            if any(values):
                contact = [v or None for v in values]
                if self.site_level:
                    errors += contact_errors(*contact)
                else:
                    errors.append("studyLevelParticipantContactNotAllowed")
        if errors:
            return (self._record_no, key[:ECHO_MAX], None, None, None, None, None, tuple(errors))
        self.valid_rows += 1
        first_name, last_name, email, phone, identifier = contact
        return (self._record_no, key, first_name, last_name, email, phone, identifier, ())

    def _read_header(self, record: list[str]) -> None:
        columns: list[tuple[int, str]] = []
        seen: set[str] = set()
        for i, name in enumerate(record):
            column = HEADER_COLUMNS.get(_normalize_header(name))
            if column is None:
                continue  # extra columns do not matter
            if column in seen:
                raise ApiError("duplicateColumnHeader")
            seen.add(column)
            columns.append((i, column))
        if "subject_key" not in seen:
            raise ApiError("missingParticipantIDHeader", {"header": "ParticipantID"})
        self._columns = columns
        index = {column: i for i, column in columns}
        self._key_index = index["subject_key"]
        if any(c in index for c in CONTACT_COLUMNS):
            self._contact_indexes = [index.get(c, -1) for c in CONTACT_COLUMNS]
