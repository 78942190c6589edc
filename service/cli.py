"""``participants``: serve, worker, migrate, dev, create-user, disable-user, enable-user, set-password,
token, seed-demo, worker-health, webhook-receiver, verify-audit, erase, erasures, rotate-kek,
rotate-data-key, encrypt-existing.

Output is plain text or JSON (a created object), never a Python repr. Beside a running ``participants
dev`` every command finds its servers in ``.data/dev.env`` when no variable names them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn, TypeVar

import asyncpg

from service.core.logs import setup_logging
from service.dev.instance import apply_dev_env, demo_lock, running_message
from service.dev.webhook_receiver import add_receiver_parser
from service.launch.dev import dev
from service.launch.erasure_cli import add_erasure_parsers, run_erasure_command
from service.launch.keys import COMMANDS, add_key_parsers, refusing_on_key_error, run_key_command
from service.launch.receiver import receive_webhooks
from service.launch.serve import serve_until_stopped
from service.launch.startup import require_key_source, require_verification, with_conn
from service.launch.workers import queues, workers_until_stopped
from service.settings import Settings
from service.web.tokens import mint_token

T = TypeVar("T")


def _require_urls(settings: Settings) -> None:
    missing = [n for n in ("database_url", "redis_url") if not getattr(settings, n)]
    if settings.redis_sentinels:  # Redis is found through the sentinels
        missing = [n for n in missing if n != "redis_url"]
    if missing:
        names = ", ".join("PARTICIPANTS_" + n.upper() for n in missing)
        sys.exit(
            f"{names} not set, and no demo is running in {settings.data_dir}"
            " (start one with `make run`, or set the variables)"
        )


def _read_new_password() -> str:
    """From a terminal: asked twice without echo. Otherwise the first line of stdin."""
    import getpass

    if sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            sys.exit("the two passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _refuse_token(reason: str) -> NoReturn:
    print(f"no token: {reason}", file=sys.stderr)
    sys.exit(2)


def _check_token_request(settings: Settings, username: str, ttl: int) -> None:
    """Refuse (exit 2, the reason on stderr) a token the service would refuse: a lifetime it does
    not accept, or a user unknown here or disabled."""
    from service.core.accounts import active_user

    if not 0 < ttl <= settings.jwt_max_lifetime_seconds:
        _refuse_token(
            f"--ttl must be between 1 and PARTICIPANTS_JWT_MAX_LIFETIME_SECONDS "
            f"({settings.jwt_max_lifetime_seconds}); the service refuses longer-lived tokens"
        )
    embedded = None
    if not settings.database_url and (settings.data_dir / "pg").is_dir():
        from service.dev.embedded import EmbeddedServers

        embedded = EmbeddedServers(settings.data_dir.resolve())  # the one `participants dev` runs
        settings.database_url = embedded.postgres_url()
    try:
        if not settings.database_url:
            _refuse_token("PARTICIPANTS_DATABASE_URL is not set: cannot check that the user exists")
        try:
            user = _run(with_conn(settings, lambda c: active_user(c, username)))
        except (OSError, asyncpg.PostgresError) as exc:  # unreachable, not migrated
            _refuse_token(f"cannot check that the user exists: {type(exc).__name__}")
    finally:
        if embedded is not None:
            embedded.stop()
    if user is None:
        _refuse_token(f"no enabled user {username!r} here (create-user, enable-user)")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="participants", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sv = sub.add_parser("serve", help="run the HTTP API (applies migrations first)")
    sv.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="API processes on the one port (default PARTICIPANTS_PROCESSES, else one per core)",
    )
    sv.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # started by the supervisor
    w = sub.add_parser("worker", help="run arq workers")
    w.add_argument("--queue", choices=["extract", "default", "all"], default="all")
    sub.add_parser("migrate", help="apply pending migrations")
    sub.add_parser("dev", help="embedded servers + demo data + API + workers (make run)")
    cu = sub.add_parser("create-user", help="create a user")
    cu.add_argument("username")
    cu.add_argument("--full-name", default="")
    cu.add_argument("--admin", action="store_true")
    for name, what in (
        ("disable-user", "switch USERNAME off: tokens and password refused at once"),
        ("enable-user", "switch USERNAME on again"),
    ):
        sub.add_parser(name, help=what + " (audited, actor 'cli')").add_argument("username")
    sp = sub.add_parser("set-password", help="set USERNAME's password (stdin, or asked without echo)")
    sp.add_argument("username")
    t = sub.add_parser("token", help="print an HS256 bearer token for USERNAME")
    t.add_argument("username")
    t.add_argument(
        "--ttl", type=int, default=None,
        help="seconds (default 3600, at most PARTICIPANTS_JWT_MAX_LIFETIME_SECONDS)",
    )  # fmt: skip
    sub.add_parser("seed-demo", help="create the demo study, sites, users and participants")
    wh = sub.add_parser(
        "worker-health", help="exit 0 if this host's worker of each queue beat recently (for orchestrators)"
    )
    wh.add_argument("--queue", choices=["extract", "default", "all"], default="all")
    add_receiver_parser(sub)
    sub.add_parser("verify-audit", help="check the audit log's seals (exit 1 names the first bad row)")
    add_erasure_parsers(sub)
    add_key_parsers(sub)
    args = parser.parse_args(argv)

    settings = Settings()
    setup_logging(settings.log_level, settings.log_json)
    if args.command != "dev":
        apply_dev_env(settings)  # beside `make run`: its servers, unless variables name others
    with contextlib.suppress(KeyboardInterrupt):
        _dispatch(args, settings)


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    from service.core import directory
    from service.core.db import migrate_dsn
    from service.dev.demo import seed_demo

    if args.command == "token":
        if not settings.jwt_secret:
            from service.dev.secret import read_dev_secret

            settings.jwt_secret = read_dev_secret(settings.data_dir)  # the one `participants dev` made
        if not settings.jwt_secret:
            sys.exit(
                "PARTICIPANTS_JWT_SECRET is not set (and `participants dev` made none): cannot mint tokens"
            )
        ttl = min(3600, settings.jwt_max_lifetime_seconds) if args.ttl is None else args.ttl
        _check_token_request(settings, args.username, ttl)
        print(mint_token(settings, args.username, ttl))
    elif args.command == "dev":
        with demo_lock(settings.data_dir) as mine:
            if not mine:  # one demo per checkout: say where it answers, touch nothing
                print(running_message(settings.data_dir))
                return
            _run(dev(settings))
    elif args.command == "webhook-receiver":
        _run(receive_webhooks(args.host, args.port, args.secret))
    elif args.command == "serve":
        require_verification(settings)
        require_key_source(settings)
        _require_urls(settings)
        from service.launch.processes import process_count, supervise

        n = 1 if args.child else process_count(settings, args.processes)
        if n == 1:
            with refusing_on_key_error():
                _run(serve_until_stopped(settings, child=args.child))
        else:
            sys.exit(supervise(settings, n))
    elif args.command == "worker":
        require_verification(settings)
        require_key_source(settings)
        _require_urls(settings)
        with refusing_on_key_error():
            _run(workers_until_stopped(settings, queues(settings, args.queue)))
    elif args.command in COMMANDS:
        _require_urls(settings)
        run_key_command(args, settings, _run)
    elif args.command == "migrate":
        _require_urls(settings)
        applied = _run(migrate_dsn(settings.database_url))  # type: ignore[arg-type]
        print("applied: " + (", ".join(applied) or "nothing (up to date)"))
    elif args.command == "create-user":
        _require_urls(settings)
        user = directory.UserIn(username=args.username, fullName=args.full_name, admin=args.admin)
        created = _run(with_conn(settings, lambda c: directory.create_user(c, user)))
        print(created.model_dump_json())
    elif args.command in ("disable-user", "enable-user"):
        _require_urls(settings)
        from service.core.audit import CLI
        from service.core.errors import ApiError

        # The admin API's PATCH /admin/api/users/{username} and its audit row, the actor being "cli".
        patch = directory.UserPatch(disabled=args.command == "disable-user")
        try:
            _run(with_conn(settings, lambda c: directory.update_user(c, CLI, args.username, patch)))
        except ApiError as err:
            sys.exit(f"user not changed: {err.code} {err.params}")
        print(f"{args.username} {'disabled' if patch.disabled else 'enabled'}")
    elif args.command == "set-password":
        _require_urls(settings)
        from service.core.accounts import change_password
        from service.core.audit import CLI
        from service.core.errors import ApiError

        password = _read_new_password()
        try:
            # As the admin API's PUT /admin/api/users/{username}/password, the actor being "cli".
            _run(with_conn(settings, lambda c: change_password(c, CLI, args.username, password)))
        except ApiError as err:
            sys.exit(f"password not set: {err.code} {err.params}")
        print(f"password set for {args.username}")
    elif args.command == "seed-demo":
        _require_urls(settings)
        print("demo users: " + ", ".join(_run(with_conn(settings, seed_demo, keys=True))))
    elif args.command in ("erase", "erasures"):
        _require_urls(settings)
        run_erasure_command(args, settings, _run)
    elif args.command == "worker-health":
        _require_urls(settings)
        from service.worker.health import check_health

        sys.exit(0 if _run(check_health(settings, queues(settings, args.queue))) else 1)
    elif args.command == "verify-audit":
        _require_urls(settings)
        from service.core.audit_seal import verify_command

        verdict = _run(with_conn(settings, verify_command, keys=True))  # the keyring's audit key
        print(verdict.message)
        sys.exit(0 if verdict.intact else 1)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
