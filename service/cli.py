"""``participants``: serve, worker, migrate, dev, create-user, token, seed-demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import asyncpg
from aiohttp import web

from .auth import mint_token
from .logs import setup_logging
from .settings import Settings

log = logging.getLogger("participants.cli")


def _require_urls(settings: Settings) -> None:
    missing = [n for n in ("database_url", "redis_url") if not getattr(settings, n)]
    if missing:
        names = ", ".join("PARTICIPANTS_" + n.upper() for n in missing)
        sys.exit(f"{names} not set (use `participants dev` for the embedded servers)")


async def _with_conn(settings: Settings, fn):  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(settings.database_url)
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


async def _serve(settings: Settings, stop: asyncio.Event) -> None:
    from .app import create_app
    from .db import migrate_dsn

    assert settings.database_url
    await migrate_dsn(settings.database_url)
    runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port, backlog=1024).start()
        log.info("listening", extra={"host": settings.host, "port": settings.port})
        await stop.wait()
    finally:
        await runner.cleanup()


async def _workers(settings: Settings, queues: Sequence[str], stop: asyncio.Event) -> None:
    from worker.main import build_worker

    workers = []
    for queue in queues:
        try:
            workers.append(build_worker(settings, queue))
        except RuntimeError as exc:  # a queue with nothing registered
            log.warning("no worker for %s: %s", queue, exc)
    tasks = [asyncio.create_task(w.async_run()) for w in workers]
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in workers:
            await w.close()


async def _serve_until_stopped(settings: Settings) -> None:
    await _serve(settings, _stop_event())


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
    from .db import migrate_dsn
    from .demo import seed_demo
    from .embedded import EmbeddedServers

    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
        _print_demo(settings, users)
        stop = _stop_event()
        await asyncio.gather(_serve(settings, stop), _workers(settings, _queues(settings, "all"), stop))
    finally:
        embedded.stop()


def _print_demo(settings: Settings, users: list[str]) -> None:
    """For each demo user: a bearer token and a curl line that works with that user's role."""
    from urllib.parse import quote

    from .demo import DEMO_STUDY, DEMO_USERS

    base = f"http://{settings.host}:{settings.port}{settings.path_prefix.rstrip('/')}"
    study = f"{base}/pages/auth/api/clinicaldata/studies/{quote(DEMO_STUDY)}"
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
        print(f"\n  {username} ({full_name}, {role or 'admin'}{' at ' + site if site else ''}):\n    {line}")
    print(f"\nThen, with the same token: curl -s {base}/pages/auth/api/jobs/<job uuid>/downloadFile")
    print("API docs: " + base + "/docs. Ctrl-C stops everything.\n", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="participants", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API (applies migrations first)")
    w = sub.add_parser("worker", help="run arq workers")
    w.add_argument("--queue", choices=["extract", "default", "all"], default="all")
    sub.add_parser("migrate", help="apply pending migrations")
    sub.add_parser("dev", help="embedded servers + demo data + API + workers (make run)")
    cu = sub.add_parser("create-user", help="create a user")
    cu.add_argument("username")
    cu.add_argument("--full-name", default="")
    cu.add_argument("--admin", action="store_true")
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
    from . import directory
    from .db import migrate_dsn
    from .demo import seed_demo

    if args.command == "token":
        print(mint_token(settings, args.username, args.ttl))
    elif args.command == "dev":
        _run(_dev(settings))
    elif args.command == "serve":
        _require_urls(settings)
        _run(_serve_until_stopped(settings))
    elif args.command == "worker":
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
    elif args.command == "seed-demo":
        _require_urls(settings)
        print("demo users: " + ", ".join(_run(_with_conn(settings, seed_demo))))
    elif args.command == "worker-health":
        _require_urls(settings)
        from worker.health import check_health

        sys.exit(0 if _run(check_health(settings)) else 1)


if __name__ == "__main__":  # pragma: no cover
    main(os.sys.argv[1:])
