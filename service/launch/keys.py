"""The key commands: ``participants rotate-kek``, ``rotate-data-key`` and ``encrypt-existing``
(docs/key-management.md), and the refusal to start, with a clear message rather than a traceback,
of a process whose key-encryption key does not open the database's keys."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from service.launch.startup import with_conn
from service.settings import Settings

COMMANDS = ("rotate-kek", "rotate-data-key", "encrypt-existing")


def add_key_parsers(sub: Any) -> None:
    rk = sub.add_parser(
        "rotate-kek", help="re-wrap the data keys under a new key-encryption key (rows untouched; audited)"
    )
    new = rk.add_mutually_exclusive_group(required=True)
    new.add_argument(
        "--new-kek-env", metavar="NAME",
        help="the environment variable holding the new local KEK (base64 of 32 bytes; never the key itself)",
    )  # fmt: skip
    new.add_argument("--new-kms-key-id", metavar="ID", help="the AWS KMS key to wrap the data keys with")
    for name, what in (
        ("rotate-data-key", "a new field key; every row re-encrypted under it, the old key then deleted"),
        (
            "encrypt-existing",
            "encrypt the rows still holding plain personal fields, then drop the plain columns",
        ),
    ):
        p = sub.add_parser(name, help=what + " (resumable; the service keeps serving)")
        p.add_argument("--batch-size", type=int, default=1000, metavar="N", help="rows per transaction")


def _say(line: str) -> None:
    print(line, flush=True)


def _new_kek(args: argparse.Namespace, settings: Settings) -> Any:
    from service.core.protection.kek import KeySourceError, KmsKek, LocalKek

    if args.new_kms_key_id:
        return KmsKek(args.new_kms_key_id, settings.kms_region, settings.kms_endpoint)
    text = os.environ.get(args.new_kek_env)
    if not text:
        raise KeySourceError(f"{args.new_kek_env} is not set (it holds the new KEK: openssl rand -base64 32)")
    return LocalKek.from_base64(text)


@contextlib.contextmanager
def refusing_on_key_error(what: str = "refusing to start") -> Iterator[None]:
    """A ``KeySourceError`` (no KEK, a wrong one, KMS refusing) ends the process with exit 2 and its
    message, which names the KEK the keys need and never a key."""
    from service.core.protection.kek import KeySourceError

    try:
        yield
    except KeySourceError as exc:
        print(f"participants: {what}: {exc}", file=sys.stderr)
        sys.exit(2)


def run_key_command(args: argparse.Namespace, settings: Settings, run: Callable[[Any], Any]) -> None:
    """One of ``COMMANDS``; ``run`` runs a coroutine (the CLI's event loop)."""
    from service.core.protection.migration import encrypt_existing
    from service.core.protection.rotation import RotationRefused, rotate_data_key, rotate_kek

    if getattr(args, "batch_size", 1) < 1:
        sys.exit("--batch-size must be at least 1")
    with refusing_on_key_error(f"{args.command} not run"):
        try:
            if args.command == "rotate-kek":
                new = _new_kek(args, settings)
                count = run(with_conn(settings, lambda c: rotate_kek(c, new), keys=True))
                _say(f"{count} data keys re-wrapped under {new.kek_id}: start every process with it now")
            elif args.command == "rotate-data-key":
                refresh = settings.key_refresh_seconds
                run(
                    with_conn(
                        settings, lambda c: rotate_data_key(c, refresh, _say, args.batch_size), keys=True
                    )
                )
            else:
                from service.core.db import migrate_dsn

                run(migrate_dsn(settings.database_url))  # type: ignore[arg-type]  # the key table exists
                run(with_conn(settings, lambda c: encrypt_existing(c, _say, args.batch_size), keys=True))
        except RotationRefused as exc:
            print(f"participants: {args.command} not run: {exc}", file=sys.stderr)
            sys.exit(2)
