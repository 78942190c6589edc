"""``participants``: serve, worker, migrate, dev, create-user, disable-user, enable-user, set-password,
token, seed-demo, worker-health."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

import asyncpg
from aiohttp import web

from service.core.logs import setup_logging
from service.settings import Settings
from service.web.auth import mint_token

log = logging.getLogger("participants.cli")


def _require_urls(settings: Settings) -> None:
    missing = [n for n in ("database_url", "redis_url") if not getattr(settings, n)]
    if missing:
        names = ", ".join("PARTICIPANTS_" + n.upper() for n in missing)
        sys.exit(f"{names} not set (use `participants dev` for the embedded servers)")


def _require_verification(settings: Settings) -> None:
    """Exit 2 unless tokens can be verified safely: never start a service anyone can mint tokens for."""
    from service.core.auth_config import startup_problem

    problem = startup_problem(settings.jwt_secret, settings.oidc_issuer, settings.jwks_url)
    if problem:
        print(f"participants: refusing to start: {problem}", file=sys.stderr)
        sys.exit(2)
    if settings.oidc_issuer and not settings.oidc_expected_audience:
        log.warning("no OIDC audience configured: tokens the provider issued to any client are accepted")


def _read_new_password() -> str:
    """From a terminal: asked twice without echo. Otherwise the first line of stdin."""
    import getpass

    if sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            sys.exit("the two passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


async def _with_conn(settings: Settings, fn):  # type: ignore[no-untyped-def]
    from service.core.db import connect

    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    try:
        return await fn(conn)
    finally:
        await conn.close()


def _run(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def _stop_event() -> asyncio.Event:
    """Set on SIGINT or SIGTERM: every long-running command stops cleanly and exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(settings: Settings, stop: asyncio.Event, *, child: bool = False) -> None:
    """One API process. A ``child`` of ``serve --processes N`` shares the port (SO_REUSEPORT) and
    leaves the migrations to its supervisor."""
    from service.core.db import migrate_dsn
    from service.web.app import create_app
    from service.web.server import ApiRunner

    assert settings.database_url
    if not child:
        await migrate_dsn(settings.database_url)
    # ApiRunner: aiohttp's own parse errors answer the JSON error body and log no request bytes.
    runner = ApiRunner(
        create_app(settings), access_log=None, handle_signals=False, shutdown_timeout=settings.shutdown_timeout_seconds
    )
    await runner.setup()
    # What starting made (modules, the app, its pools) lives as long as the process: frozen out of
    # the cyclic garbage collector's sight, its full collections, which hold the event loop, scan
    # only what requests made since (the startup objects alone took 15 to 50 ms a collection).
    gc.collect()
    gc.freeze()
    try:
        await web.TCPSite(runner, settings.host, settings.port, backlog=1024, reuse_port=child or None).start()
        log.info("listening", extra={"host": settings.host, "port": settings.port})
        await stop.wait()
    finally:
        await runner.cleanup()


async def _workers(settings: Settings, queues: Sequence[str], stop: asyncio.Event) -> None:
    """One supervised arq worker per queue until ``stop``."""
    await asyncio.gather(*(_supervised_worker(settings, queue, stop) for queue in queues))


# A worker that stopped by itself is started again after this long, doubling up to the maximum;
# one that ran a while before it stopped starts from the minimum again.
RESTART_MIN_SECONDS = 0.5
RESTART_MAX_SECONDS = 10.0
HEALTHY_RUN_SECONDS = 60.0


async def _supervised_worker(settings: Settings, queue: str, stop: asyncio.Event) -> None:
    """Run the queue's worker; when it stops by itself (arq's poll loop ends on a Redis error, its
    startup fails while Postgres is away), start a new one, so the process never sits alive and idle.
    Jobs lost meanwhile are re-enqueued by the sweeper from Postgres."""
    from service.worker.main import build_worker

    delay = RESTART_MIN_SECONDS
    while not stop.is_set():
        try:
            worker = build_worker(settings, queue)
        except RuntimeError as exc:  # a queue with nothing registered
            log.warning("no worker for %s: %s", queue, exc)
            return
        started = time.monotonic()
        run = asyncio.create_task(worker.async_run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            run.cancel()
        with contextlib.suppress(BaseException):
            await run
        error = None if run.cancelled() else run.exception()
        with contextlib.suppress(Exception):
            await worker.close()
        if stop.is_set():
            return
        if time.monotonic() - started > HEALTHY_RUN_SECONDS:
            delay = RESTART_MIN_SECONDS
        log.error(
            "worker stopped by itself; starting it again",
            extra={"queue": queue, "error": type(error).__name__ if error else None, "retry_in": delay},
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RESTART_MAX_SECONDS)


async def _serve_until_stopped(settings: Settings, child: bool = False) -> None:
    await _serve(settings, _stop_event(), child=child)


async def _workers_until_stopped(settings: Settings, queues: Sequence[str]) -> None:
    await _workers(settings, queues, _stop_event())


def _queues(settings: Settings, which: str) -> list[str]:
    return {
        "extract": [settings.extract_queue],
        "default": [settings.default_queue],
        "all": [settings.extract_queue, settings.default_queue],
    }[which]


async def _dev(settings: Settings) -> None:
    """Embedded servers (unless URLs are set), migrations, demo data, API and workers in one process."""
    from service.core.db import migrate_dsn
    from service.dev.demo import seed_demo
    from service.dev.embedded import EmbeddedServers
    from service.dev.secret import dev_secret, secret_path

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.jwt_secret and not settings.oidc_issuer:
        settings.jwt_secret = dev_secret(settings.data_dir)
        print(f"token secret: random, kept in {secret_path(settings.data_dir)} (mode 0600)")
    _require_verification(settings)
    embedded = EmbeddedServers(settings.data_dir.resolve())
    try:
        if not settings.database_url:
            settings.database_url = embedded.postgres_url()
            print(f"embedded Postgres: {settings.database_url}")
        if not settings.redis_url:
            settings.redis_url = embedded.redis_url()
            print(f"embedded Redis: {settings.redis_url}")
        await migrate_dsn(settings.database_url)
        users = await _with_conn(settings, seed_demo)
        passwords = await _with_conn(settings, _demo_passwords)
        _print_demo(settings, users, passwords)
        stop = _stop_event()
        await asyncio.gather(_serve(settings, stop), _workers(settings, _queues(settings, "all"), stop))
    finally:
        embedded.stop()


async def _demo_passwords(conn: asyncpg.Connection) -> dict[str, str]:
    """A fresh random password for every demo user, each start (nothing guessable, nothing kept)."""
    import secrets

    from service.core.accounts import set_password
    from service.dev.demo import DEMO_USERS

    passwords = {}
    for username, *_ in DEMO_USERS:
        passwords[username] = secrets.token_urlsafe(12)
        await set_password(conn, username, passwords[username])
    return passwords


def _print_demo(settings: Settings, users: list[str], passwords: dict[str, str] | None = None) -> None:
    """For each demo user: a password, a bearer token and a curl line that works with that user's role."""
    from urllib.parse import quote

    from service.core.urls import TOKEN_PATH
    from service.dev.demo import DEMO_STUDY, DEMO_USERS

    root = f"http://{settings.host}:{settings.port}"
    base = root + settings.path_prefix.rstrip("/")
    study = f"{base}/pages/auth/api/clinicaldata/studies/{quote(DEMO_STUDY)}"
    local_accounts = settings.jwt_secret and not (settings.oidc_issuer and settings.oidc_client_id)
    if passwords and local_accounts:
        print("\nDemo users sign in as OC4 clients do (passwords are new at every start):")
        for username, password in passwords.items():
            print(f"  {username:8} {password}")
        first = next(iter(passwords))
        print(f"""  curl -s -X POST {root}{TOKEN_PATH} -H 'Content-Type: application/json' \\
    -d '{{"username": "{first}", "password": "{passwords[first]}"}}'""")
    print("\nDemo users, bearer tokens (valid 24 hours) and a request each may make:")
    for username, full_name, admin, roles in DEMO_USERS:
        if username not in users:
            continue
        auth = f"-H 'Authorization: Bearer {mint_token(settings, username, 24 * 3600)}'"
        site, role = roles[0] if roles else (None, "")
        if admin:
            line = f"curl -s {base}/admin/api/studies {auth}"
        elif site is not None and role in ("ra", "investigator"):
            n = 100 + sum(map(ord, username))  # a different new ID per user
            line = (
                f"curl -s -X POST '{study}/sites/{site}/participants?register=y' {auth}"
                " -H 'Content-Type: application/json'"
                f""" -d '{{"subjectKey": "DEMO-{n}", "firstName": "Jo", "lastName": "Doe", """
                """"emailAddress": "jo@example.org", "phoneNumber": "+1 5550101"}'"""
                f"\n    curl -s '{study}/sites/{site}/participants/extractPartcipantsInfo' {auth}"
            )
        else:
            line = f"curl -s '{study}/participants' {auth}"
        where = ", ".join(f"{r} at {s}" if s else f"{r} (study level)" for s, r in roles) or "admin"
        print(f"\n  {username} ({full_name}; {where}):\n    {line}")
    print(f"""\nThen download the extract with the same user's token:
    curl -s -H 'Authorization: Bearer <token>' {base}/pages/auth/api/jobs/<job uuid>/downloadFile""")
    if passwords:
        print(f"\nWeb console: {base}/console/")
        for username in ("crc_a", "admin"):
            if username in passwords:
                print(f"  sign in as {username:6} with password {passwords[username]}")
    print("API docs: " + root + "/docs. Ctrl-C stops everything.\n", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="participants", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sv = sub.add_parser("serve", help="run the HTTP API (applies migrations first)")
    sv.add_argument(
        "--processes", type=int, default=None, metavar="N",
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
    for name, what in (("disable-user", "switch USERNAME off: tokens and password refused at once"),
                       ("enable-user", "switch USERNAME on again")):
        sub.add_parser(name, help=what + " (audited, actor 'cli')").add_argument("username")
    sp = sub.add_parser("set-password", help="set USERNAME's password (stdin, or asked without echo)")
    sp.add_argument("username")
    t = sub.add_parser("token", help="print an HS256 bearer token for USERNAME")
    t.add_argument("username")
    t.add_argument("--ttl", type=int, default=3600)
    sub.add_parser("seed-demo", help="create the demo study, sites, users and participants")
    sub.add_parser("worker-health", help="exit 0 if a worker reported healthy recently (for orchestrators)")
    args = parser.parse_args(argv)

    settings = Settings()
    setup_logging(settings.log_level, settings.log_json)
    try:
        _dispatch(args, settings)
    except KeyboardInterrupt:
        pass


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    from service.core import directory
    from service.core.db import migrate_dsn
    from service.dev.demo import seed_demo

    if args.command == "token":
        if not settings.jwt_secret:
            from service.dev.secret import read_dev_secret

            settings.jwt_secret = read_dev_secret(settings.data_dir)  # the one `participants dev` made
        if not settings.jwt_secret:
            sys.exit("PARTICIPANTS_JWT_SECRET is not set (and `participants dev` made none): cannot mint tokens")
        print(mint_token(settings, args.username, args.ttl))
    elif args.command == "dev":
        _run(_dev(settings))
    elif args.command == "serve":
        _require_verification(settings)
        _require_urls(settings)
        from service.launch.processes import process_count, supervise

        n = 1 if args.child else process_count(settings, args.processes)
        if n == 1:
            _run(_serve_until_stopped(settings, child=args.child))
        else:
            sys.exit(supervise(settings, n))
    elif args.command == "worker":
        _require_verification(settings)
        _require_urls(settings)
        _run(_workers_until_stopped(settings, _queues(settings, args.queue)))
    elif args.command == "migrate":
        _require_urls(settings)
        applied = _run(migrate_dsn(settings.database_url))  # type: ignore[arg-type]
        print("applied: " + (", ".join(applied) or "nothing (up to date)"))
    elif args.command == "create-user":
        _require_urls(settings)
        user = directory.UserIn(username=args.username, fullName=args.full_name, admin=args.admin)
        print(_run(_with_conn(settings, lambda c: directory.create_user(c, user))))
    elif args.command in ("disable-user", "enable-user"):
        _require_urls(settings)
        from service.core.audit import CLI
        from service.core.errors import ApiError

        # The admin API's PATCH /admin/api/users/{username} and its audit row, the actor being "cli".
        patch = directory.UserPatch(disabled=args.command == "disable-user")
        try:
            _run(_with_conn(settings, lambda c: directory.update_user(c, CLI, args.username, patch)))
        except ApiError as err:
            sys.exit(f"user not changed: {err.code} {err.params}")
        print(f"{args.username} {'disabled' if patch.disabled else 'enabled'}")
    elif args.command == "set-password":
        _require_urls(settings)
        from service.core.accounts import set_password
        from service.core.errors import ApiError

        password = _read_new_password()
        try:
            _run(_with_conn(settings, lambda c: set_password(c, args.username, password)))
        except ApiError as err:
            sys.exit(f"password not set: {err.code} {err.params}")
        print(f"password set for {args.username}")
    elif args.command == "seed-demo":
        _require_urls(settings)
        print("demo users: " + ", ".join(_run(_with_conn(settings, seed_demo))))
    elif args.command == "worker-health":
        _require_urls(settings)
        from service.worker.health import check_health

        sys.exit(0 if _run(check_health(settings)) else 1)


if __name__ == "__main__":  # pragma: no cover
    main(os.sys.argv[1:])
