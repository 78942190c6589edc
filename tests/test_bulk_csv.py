"""The streaming CSV parser on its own (no server): however the body is cut into chunks, it reads
the same rows as ``csv.reader`` over the whole file."""

from __future__ import annotations

import csv
import io
import random

import pytest

from service.core.bulk.parser import BulkCsvParser, StagedRow
from service.core.errors import ApiError

TRICKY = (
    "\ufeffNotes,ParticipantID,FirstName\r\n"
    '"multi\r\nline, with ""quotes""",A-1,Ann\r\n'
    "\r\n"
    'x,"A,2",\r\n'
    '"",  Ééé-3  ,"Zoë ""Z"""\r\n'
    '"a\nb\nc\nd",A-4,\r\n'
    ",,\r\n"
    "tail,A-5,Bob"
)


def parse(data: bytes, cuts: list[int], site_level: bool = True) -> list[tuple]:
    parser = BulkCsvParser(site_level, 10**9)
    rows = []
    start = 0
    for end in [*cuts, len(data)]:
        rows += parser.feed(data[start:end])
        start = end
    rows += parser.close()
    return [tuple(r) for r in rows]


def reference(text: str) -> list[tuple[int, str, str | None]]:
    """(row number, ID, first name) of the data rows, from csv.reader over the whole text."""
    records = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    header = [h.strip().lower() for h in records[0]]
    k, f = header.index("participantid"), header.index("firstname")
    out = []
    for n, rec in enumerate(records[1:], start=2):
        if not any(c.strip() for c in rec):
            continue
        out.append((n, rec[k].strip(), (rec[f].strip() or None) if f < len(rec) else None))
    return out


def test_reference_matches_whole_file():
    rows = parse(TRICKY.encode(), [])
    assert [(r[0], r[1], r[2]) for r in rows] == reference(TRICKY)
    assert [r[1] for r in rows] == ["A-1", "A,2", "Ééé-3", "A-4", "A-5"]
    assert rows[2][2] == 'Zoë "Z"'


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 64])
def test_any_fixed_chunk_size_reads_the_same_rows(size):
    data = TRICKY.encode()
    assert parse(data, list(range(size, len(data), size))) == parse(data, [])


def test_random_cuts_read_the_same_rows():
    data = (TRICKY + "\r\n" + "\r\n".join(f'"n{i}\r\nx",K-{i},"F{i}"' for i in range(300))).encode()
    whole = parse(data, [])
    assert len(whole) == 305
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 200)))
        assert parse(data, cuts) == whole


def test_a_huge_multiline_cell_is_linear_not_quadratic():
    cell = "ab\n" * 300_000
    data = f'ParticipantID,Notes\nK-1,"{cell}"\nK-2,\n'.encode()
    rows = parse(data, list(range(4096, len(data), 4096)))  # ~220 chunks inside one record
    assert [r[1] for r in rows] == ["K-1", "K-2"]


def test_quoted_cells_of_newlines_and_quotes_cut_anywhere():
    """Inside a quoted field the parser appends what arrives without splitting it, until a quote
    arrives: every cut, before or after a quote or a newline, reads what csv.reader reads."""
    rng = random.Random(11)
    pieces = ["a", "\n", "\r\n", '""', ",", "é"]
    for _ in range(40):
        cells = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 80))) for _ in range(30)]
        text = "ParticipantID,FirstName\n" + "".join(f'K-{i},"{c}"\n' for i, c in enumerate(cells))
        data = text.encode()
        expected = [(r[0], r[1]) for r in parse(data, [])]
        assert [r[:2] for r in reference(text)] == expected
        for _ in range(5):
            cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 60)))
            assert [(r[0], r[1]) for r in parse(data, cuts)] == expected


def test_the_closing_quote_in_the_next_unfinished_line():
    # "b" and its closing quote arrive with the lines before them; the rest has no quote.
    data = b'ParticipantID,Notes\nK-1,"a\nb",\nK-2,\n'
    for cut in range(1, len(data)):
        assert [r[1] for r in parse(data, [cut, cut + 1])] == ["K-1", "K-2"], cut


def test_a_cell_of_a_million_newlines_is_refused_in_little_memory():
    """Past ROW_MAX the file is refused; until then the record is one string, not a str object
    per line (which took some 50 MB for this cell)."""
    import tracemalloc

    from service.core.bulk.parser import ROW_MAX

    data = b'ParticipantID\n"' + b"\n" * (ROW_MAX + 1) + b'"\n'
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as info:
            parse(data, list(range(16384, len(data), 16384)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == "rowTooLarge"
    assert peak < 12 * ROW_MAX, peak  # the cell, a few copies of it, and the chunks


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "blankFile"),
        (b"ParticipantID\r\n\r\n", "blankFile"),
        (b"Name\nA\n", "missingParticipantIDHeader"),
        (b"ParticipantID,Participant_ID\nA,B\n", "duplicateColumnHeader"),
        (b"ParticipantID\nA\x00\n", "notSupportedFileFormat"),
        (b"ParticipantID\n\xe9\n", "notSupportedFileFormat"),
        (b"ParticipantID\n\xc3", "notSupportedFileFormat"),  # a character cut off at the end
    ],
)
def test_file_level_errors(data, code):
    with pytest.raises(ApiError) as info:
        parse(data, [1] if len(data) > 1 else [])
    assert info.value.code == code


def test_size_limit_counts_every_byte():
    parser = BulkCsvParser(True, 20)
    parser.feed(b"ParticipantID\nA-1\n")
    with pytest.raises(ApiError) as info:
        parser.feed(b"A-2\nA-3\n")
    assert info.value.code == "fileTooLarge"


def test_counts_and_contact_values_only_for_valid_rows():
    parser = BulkCsvParser(True, 10**6)
    rows = (
        parser.feed(b"ParticipantID,EmailAddress\nA-1,a@example.com\n<x>,b@example.com\nA-2,\n")
        + parser.close()
    )
    assert parser.data_rows == 3 and parser.valid_rows == 2
    rows = [StagedRow._make(r) for r in rows]
    assert [(r.subject_key, r.email, r.errors) for r in rows] == [
        ("A-1", "a@example.com", ()),
        ("<x>", None, ("participantIDContainsUnsupportedHTMLCharacter",)),
        ("A-2", None, ()),
    ]


def test_staged_rows_leave_the_garbage_collectors_care():
    """Rows hold no list, so a collection untracks them: a million-row upload does not fill the
    oldest generation, whose full collections hold the event loop for tens of milliseconds."""
    import gc

    parser = BulkCsvParser(True, 10**6)
    rows = parser.feed(
        b"ParticipantID,FirstName\nA-1,Ann\n<x>,\n" + b"".join(b"K-%d,\n" % i for i in range(50))
    )
    rows += parser.close()
    gc.collect()
    gc.collect()  # a failed row's errors tuple goes first, then the row holding it
    assert StagedRow._make(rows[1]).errors and not any(gc.is_tracked(r) for r in rows)


@pytest.mark.parametrize(
    "body", [b'ParticipantID\n"B-3\n', b'ParticipantID\n"B-3"x\n', b'ParticipantID,FirstName\nB-3,"Jo\n']
)
def test_malformed_quoting_is_not_csv(body):
    parser = BulkCsvParser(site_level=True, max_bytes=1_000_000)
    with pytest.raises(ApiError) as caught:
        parser.feed(body)
        parser.close()
    assert caught.value.code == "notSupportedFileFormat"
