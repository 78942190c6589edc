"""An audit entry's details as rows a person reads: field, before, after.

The audit log never keeps personal values (docs/api.md): a changed participant field is named,
its values are not, and the row says so. What an action implies (a remove leaves the participant
``removed``, a retry leaves the job ``IN_QUEUE`` with no error) fills the "after" column where the
details only keep the "before"; everything else is shown as it was recorded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

NOT_KEPT = "changed (the value is not kept in the audit log)"

# What each action leaves behind, for the fields whose earlier value its details keep.
AFTER_BY_ACTION: dict[str, dict[str, Any]] = {
    "participant.remove": {"status": "removed"},
    "participant.restore": {"status": "available"},
    "participant.reassign": {"siteId": "this entry's site"},
    "admin.job.cancel": {"status": "cancel requested"},
    "admin.job.retry": {"status": "IN_QUEUE", "attempts": 0, "error": ""},
    "job.delete": {"status": "DELETED"},
}


class Change(NamedTuple):
    field: str
    before: str
    after: str


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _stem(key: str) -> str | None:
    """``statusBefore`` -> status, ``previousError`` -> error, ``fromSiteId`` -> siteId."""
    for prefix in ("previous", "from"):
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            rest = key[len(prefix) :]
            return rest[0].lower() + rest[1:]
    if key.endswith("Before") and len(key) > 6:
        return key[:-6]
    return None


def change_rows(action: str, details: dict[str, Any]) -> list[Change]:
    implied = dict(AFTER_BY_ACTION.get(action, {}))
    rows: list[Change] = []
    for key, value in details.items():
        if key == "fields" and isinstance(value, list):
            rows += [Change(str(name), "", NOT_KEPT) for name in value]
            continue
        stem = _stem(key)
        if stem is not None:
            rows.append(Change(stem, _text(value), _text(implied.pop(stem, ""))))
        else:
            rows.append(Change(key, "", _text(value)))
    rows += [Change(field, "", _text(after)) for field, after in implied.items()]
    return rows
