"""Parsing a bulk upload CSV as it streams in: bytes in, validated rows out.

No HTTP and no SQL here. ``BulkCsvParser.feed`` takes the body chunk by chunk and returns the
rows completed so far, each ready for COPY into the staging table; memory holds one chunk and the
record being read, never the file. File-level problems raise ``ApiError`` (nothing has been
written to participants at that point, so failing half-way through the file is all-or-nothing).

Rules (contract.md "Bulk add from CSV"): UTF-8 with or without a BOM, or UTF-16 with its BOM (what
spreadsheets save as "Unicode text"); LF or CRLF, RFC 4180 quoting; the delimiter (``,``, ``;`` or
tab) is the one the header row uses most, outside quotes; a header row naming ``ParticipantID``
(any case) and optionally the contact columns; other columns are ignored, column order does not
matter; values are trimmed; empty lines skipped. A refusal of the file says where: ``rowNumber``
(the line, the header being 1) and ``column`` (1-based) in its params.
"""

from __future__ import annotations

import codecs
import csv
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

from service.core.errors import ApiError
from service.core.validation import contact_errors, participant_id_errors

# Delimiters a header row may use; the first wins a tie (a one-column file is comma-separated).
DELIMITERS = (",", ";", "\t")
# Byte-order marks: UTF-8's is skipped by utf-8-sig; UTF-16's tells the byte order ("utf-16" reads it).
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# What an encoding refusal tells the sender to do (the params of notSupportedFileFormat).
SAVE_AS_UTF8 = (
    "Save the file as UTF-8: in Excel, Save As and choose 'CSV UTF-8 (Comma delimited) (*.csv)'; in "
    "LibreOffice, tick 'Edit filter settings' and choose the character set 'Unicode (UTF-8)'."
)

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


def _outside_quotes(line: str) -> str:
    """``line`` without its quoted parts (a quote pair inside quotes is content)."""
    return "".join(part for i, part in enumerate(line.split('"')) if i % 2 == 0)


def _delimiter_of(header: str) -> str:
    """The delimiter the header row uses most outside quotes; a comma when it uses none."""
    bare = _outside_quotes(header)
    return max(DELIMITERS, key=lambda d: (bare.count(d), -DELIMITERS.index(d)))


def _column_of(record_start: str, delimiter: str) -> int:
    """The 1-based column a record's text reaches by its end (a malformed or cut-off record)."""
    return _outside_quotes(record_start).count(delimiter) + 1


def _normalize_header(name: str) -> str:
    return "".join(ch for ch in name.strip().lower() if ch not in " _-")


class BulkCsvParser:
    def __init__(self, site_level: bool, max_bytes: int) -> None:
        self.site_level = site_level
        self.max_bytes = max_bytes
        self.bytes_read = 0
        self.data_rows = 0  # non-empty rows after the header
        self.valid_rows = 0  # of which without field errors
        self._decoder: codecs.IncrementalDecoder | None = None  # chosen from the first bytes
        self._head = b""  # the first bytes, until there are enough to look for a byte-order mark
        self.encoding = ""
        self._lines_seen = 0  # newlines decoded so far: where an undecodable byte sits
        self._tail: list[str] = []  # the current, unfinished line, in pieces
        self._tail_chars = 0
        self._lines = _Lines()
        # Made once the header line is there (its delimiter is the file's). strict: a quote left
        # open at the end, or text after a closing quote, is not RFC 4180 CSV.
        self._reader: Iterator[list[str]] | None = None
        self.delimiter = ","
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
        if self._decoder is None:
            self._head += chunk
            if len(self._head) < 3:
                return []
            chunk, self._head = self._head, b""
            self._start_decoder(chunk)
        self._add_text(self._decode(chunk))
        return self._parse()

    def close(self) -> list[Row]:
        """The end of the body: return the last rows; raise if the file held no header or no rows."""
        if self._decoder is None:
            self._start_decoder(self._head)
            self._add_text(self._decode(self._head))
        self._add_text(self._decode(b"", final=True))
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

    # -- bytes to text ----------------------------------------------------------------------------

    def _start_decoder(self, head: bytes) -> None:
        """UTF-16 when the file starts with its byte-order mark, else UTF-8 (BOM or not). No other
        encoding is guessed: a code page cannot be told from the bytes with certainty."""
        self.encoding = "utf-16" if head.startswith(UTF16_BOMS) else "utf-8-sig"
        self._decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")

    def _decode(self, chunk: bytes, final: bool = False) -> str:
        assert self._decoder is not None
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            # The decoder's input was its few buffered bytes plus this chunk; what precedes the bad
            # byte decodes, and says on which line and in which column it sits.
            good = bytes(exc.object[: exc.start]).decode(self.encoding, errors="ignore")
            raise self._not_utf8(good) from None
        if "\x00" in text:  # no text file holds NUL: a binary file, or UTF-16 without its mark
            raise self._not_utf8(text[: text.index("\x00")])
        self._lines_seen += text.count("\n")
        return text

    def _not_utf8(self, before: str) -> ApiError:
        """The refusal of bytes that are not text in the file's encoding, where they are."""
        known = "".join(self._lines.pending) + "".join(self._lines.ready) + "".join(self._tail) + before
        delimiter = self.delimiter
        if self._reader is None:  # the header row is in what was read: its delimiter counts the columns
            delimiter = _delimiter_of(next((x for x in known.split("\n") if x.strip()), ""))
        where = {
            "rowNumber": self._lines_seen + before.count("\n") + 1,
            "column": _column_of(known.rpartition("\n")[2], delimiter),
        }
        return ApiError("notSupportedFileFormat", {"reason": "notUtf8", **where, "howToFix": SAVE_AS_UTF8})

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
            raise self._row_too_large()

    def _row_too_large(self) -> ApiError:
        record = "".join(self._lines.pending) + "".join(self._lines.ready) + "".join(self._tail)
        where = {
            "rowNumber": self._record_no + 1,
            "column": _column_of(record[: ROW_MAX + 1], self.delimiter),
        }
        return ApiError("rowTooLarge", {"maxBytes": ROW_MAX, **where})

    def _push_lines(self, lines: list[str]) -> None:
        self._lines.ready.extend(lines)
        self._buffered += sum(len(line) for line in lines)

    # -- lines to records -----------------------------------------------------------------------

    def _parse(self) -> list[Row]:
        out: list[Row] = []
        lines = self._lines
        if self._in_quotes or self._buffered < self._retry_at:
            return out
        if self._reader is None:
            header = next((line for line in lines.ready if line.strip()), None)
            if header is None and not lines.eof:
                return out  # only blank lines yet: the header row decides the delimiter
            self.delimiter = _delimiter_of(header or "")
            self._reader = csv.reader(lines, strict=True, delimiter=self.delimiter)
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
                record_text = "".join(lines.pending)
                where = {"rowNumber": self._record_no + 1, "column": _column_of(record_text, self.delimiter)}
                raise ApiError("notSupportedFileFormat", {"reason": "malformedCsv", **where}) from None
            if lines.pending_chars > ROW_MAX:
                raise self._row_too_large()
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
                where = {"rowNumber": self._record_no, "column": i + 1}
                raise ApiError("duplicateColumnHeader", {"header": name.strip()[:ECHO_MAX], **where})
            seen.add(column)
            columns.append((i, column))
        if "subject_key" not in seen:
            params = {"header": "ParticipantID", "rowNumber": self._record_no, "delimiter": self.delimiter}
            raise ApiError("missingParticipantIDHeader", params)
        self._columns = columns
        index = {column: i for i, column in columns}
        self._key_index = index["subject_key"]
        if any(c in index for c in CONTACT_COLUMNS):
            self._contact_indexes = [index.get(c, -1) for c in CONTACT_COLUMNS]
