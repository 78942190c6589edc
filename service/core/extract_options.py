"""OC4 4.x's later extract parameters: what the file includes and which slice of the site it holds.

- ``includeParticipateInfo`` / ``includeParticipateRelatedInfo``: ``y``/``n`` in any case (also
  yes/no/true/false/1/0, as ``register`` accepts). Absent: included (seed 000). When either is
  ``n``, the ``Access Code`` and ``Participate Status`` cells are empty; the header never changes.
- ``page_number`` (from 1) and ``page_size`` (1 to 1,000,000): the slice of the site's extractable
  participants in participant-ID order. Without ``page_size`` there is one page holding everyone,
  so ``page_number`` above 1 gives a file with the header only.

- ``bom`` (ours): ``y`` starts the file with UTF-8's byte-order mark, so that Excel on Windows reads
  it as UTF-8 (``Müller``, not ``MÃ¼ller``). Absent or ``n``: OC4's file, no mark.

Framework-free: parsing takes the query string as a mapping. The options travel to the worker in
the job's ``params`` (never personal data: flags and numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.core.errors import ApiError

PARTICIPATE_FLAGS = ("includeParticipateInfo", "includeParticipateRelatedInfo")
MAX_PAGE_SIZE = 1_000_000
# Keeps OFFSET (page_number - 1) * page_size well inside bigint and the number readable.
MAX_PAGE_NUMBER = 1_000_000_000
_FLAGS = {
    "y": True, "yes": True, "true": True, "1": True,
    "n": False, "no": False, "false": False, "0": False,
}  # fmt: skip


@dataclass(frozen=True)
class ExtractOptions:
    include_participate: bool = True
    page_number: int = 1
    page_size: int | None = None
    bom: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ExtractOptions:
        include = True
        for name in PARTICIPATE_FLAGS:
            raw = query.get(name)
            if raw is None:
                continue
            flag = _FLAGS.get(raw.strip().lower())
            if flag is None:
                raise ApiError("invalidParameter", {"parameter": name})
            include = include and flag
        page_number = _integer(query.get("page_number"), 1, MAX_PAGE_NUMBER, "invalidPageNumberParameter")
        page_size = _integer(query.get("page_size"), 1, MAX_PAGE_SIZE, "invalidPageSizeParameter")
        bom = False
        if query.get("bom") is not None:
            flag = _FLAGS.get(query["bom"].strip().lower())
            if flag is None:
                raise ApiError("invalidParameter", {"parameter": "bom"})
            bom = flag
        return cls(include, page_number or 1, page_size, bom)

    def to_params(self) -> dict[str, Any]:
        """Only what differs from the seed's behaviour, so an old job's params still read the same."""
        params: dict[str, Any] = {}
        if not self.include_participate:
            params["includeParticipateInfo"] = False
        if self.page_number != 1:
            params["pageNumber"] = self.page_number
        if self.page_size is not None:
            params["pageSize"] = self.page_size
        if self.bom:
            params["bom"] = True
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> ExtractOptions:
        params = params or {}
        return cls(
            include_participate=bool(params.get("includeParticipateInfo", True)),
            page_number=int(params.get("pageNumber", 1)),
            page_size=int(params["pageSize"]) if params.get("pageSize") is not None else None,
            bom=bool(params.get("bom", False)),
        )

    @property
    def offset(self) -> int:
        return 0 if self.page_size is None else (self.page_number - 1) * self.page_size

    def slice_sql(self) -> str:
        """LIMIT/OFFSET for COPY (which takes no bind parameters: integers formatted in)."""
        if self.page_size is None:
            return "" if self.page_number == 1 else "LIMIT 0"
        return f"LIMIT {int(self.page_size)} OFFSET {int(self.offset)}"

    def rows_in_slice(self, total: int) -> int:
        """How many of ``total`` extractable rows this slice holds (the job's expected rows)."""
        if self.page_size is None:
            return total if self.page_number == 1 else 0
        return max(0, min(self.page_size, total - self.offset))


def _integer(raw: str | None, low: int, high: int, code: str) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    # ASCII digits only: int() would also take "1_000", "+5" or Arabic-Indic digits.
    if not text.isascii() or not text.isdigit() or len(text) > 12 or not low <= int(text) <= high:
        raise ApiError(code, {"value": raw[:20]})
    return int(text)
