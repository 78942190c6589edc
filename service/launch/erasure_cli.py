"""``participants erase STUDY_OID SUBJECT_KEY`` and ``participants erasures [--since WHEN]``: the
erasure use-case at the service's own machine (audited, actor ``cli``), and the list of erasures to
apply again after restoring a backup taken before them (docs/erasure.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

import asyncpg
import orjson

from service.settings import Settings


def add_erasure_parsers(sub: Any) -> None:
    er = sub.add_parser(
        "erase",
        help="erase a participant's personal data for good, and the extract files of its site (audited, actor 'cli')",
    )
    er.add_argument("study_oid", metavar="STUDY_OID")
    er.add_argument("subject_key", metavar="SUBJECT_KEY")
    ls = sub.add_parser(
        "erasures", help="list erasures (one JSON object a line), e.g. to apply them again after a restore"
    )
    ls.add_argument(
        "--since", type=_instant, default=None, help="ISO 8601 date or date-time (UTC if no zone)"
    )


def _instant(text: str) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or date-time: {text!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


async def _erase(settings: Settings, conn: asyncpg.Connection, study_oid: str, subject_key: str) -> str:
    from service.core import erasure
    from service.core.audit import CLI
    from service.core.storage import Storage

    row = await erasure.find_in_study(conn, study_oid, subject_key)
    done = await erasure.erase(conn, Storage.from_settings(settings), CLI, row)
    return done.model_dump_json()


async def _list(conn: asyncpg.Connection, since: dt.datetime | None) -> list[str]:
    from service.core import erasure

    return [
        orjson.dumps(e.model_dump(mode="json")).decode() for e in await erasure.erasures_since(conn, since)
    ]


def run_erasure_command(args: argparse.Namespace, settings: Settings, run: Any) -> None:
    """Run ``erase`` or ``erasures`` (``run``: the CLI's event-loop runner)."""
    from service.core.errors import ApiError
    from service.launch.startup import with_conn

    if args.command == "erase":
        try:
            print(
                run(
                    with_conn(
                        settings, lambda c: _erase(settings, c, args.study_oid, args.subject_key), keys=True
                    )
                )
            )
        except ApiError as err:
            sys.exit(f"nothing erased: {err.code} {err.params}")
    else:
        for line in run(with_conn(settings, lambda c: _list(c, args.since))):
            print(line)
