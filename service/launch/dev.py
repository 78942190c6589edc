"""``participants dev`` (``make run``): the embedded Postgres and Redis unless URLs are set, the
migrations, the demo data with fresh passwords, then the API and the workers in one process."""

from __future__ import annotations

import asyncio

import asyncpg

from service.launch.dev_session import allow_loopback_webhooks, announce, running_parts, stopped_message
from service.launch.serve import serve
from service.launch.startup import require_key_source, require_verification, stop_event, with_conn
from service.launch.workers import queues, workers
from service.settings import Settings
from service.web.tokens import mint_token

DEMO_PARTICIPATE_URL = "https://participate.invalid"


async def dev(settings: Settings) -> None:
    """Embedded servers (unless URLs are set), migrations, demo data, API and workers in one process."""
    from service.core.db import migrate_dsn
    from service.dev.demo import seed_demo
    from service.dev.embedded import EmbeddedServers
    from service.dev.secret import KEK_FILE_NAME, dev_kek, dev_secret, secret_path

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.jwt_secret and not settings.oidc_issuer:
        settings.jwt_secret = dev_secret(settings.data_dir)
        print(f"token secret: random, kept in {secret_path(settings.data_dir)} (mode 0600)")
    require_verification(settings)
    if not settings.kek and not settings.kms_key_id:
        settings.kek = dev_kek(settings.data_dir)
        print(
            f"personal data key: random, kept in {secret_path(settings.data_dir, KEK_FILE_NAME)} (mode 0600)"
        )
    require_key_source(settings)
    if not settings.participate_url:
        # A reserved name (RFC 2606) that can never be a real portal: the demo's access links look
        # as they will in production, and nobody mistakes them for working ones.
        settings.participate_url = DEMO_PARTICIPATE_URL
        print(f"Participate portal: {DEMO_PARTICIPATE_URL} (a placeholder: set PARTICIPANTS_PARTICIPATE_URL)")
    embedded = EmbeddedServers(settings.data_dir.resolve())
    started: list[str] = []  # what Ctrl-C stops, for the last word
    try:
        if not settings.database_url:
            started.append("the embedded Postgres")
            settings.database_url = embedded.postgres_url()
            print(f"embedded Postgres: {settings.database_url}")
        if not settings.redis_url and not settings.redis_sentinels:
            started.append("the embedded Redis")
            settings.redis_url = embedded.redis_url()
            print(f"embedded Redis: {settings.redis_url}")
        from service.dev.mail_sink import start_mail_sink

        mail_sink = await start_mail_sink(settings)  # noqa: F841 - serves until the process ends
        await migrate_dsn(settings.database_url)
        users = await with_conn(settings, seed_demo, keys=True)
        passwords = await with_conn(settings, demo_passwords)
        allow_loopback_webhooks(settings)
        print_demo(settings, users, passwords)
        announce(settings)
        started[:0] = running_parts(settings)
        stop = stop_event()
        await asyncio.gather(serve(settings, stop), workers(settings, queues(settings, "all"), stop))
    finally:
        embedded.stop()
        print(stopped_message(settings, started), flush=True)


async def demo_passwords(conn: asyncpg.Connection) -> dict[str, str]:
    """A fresh random password for every demo user, each start (nothing guessable, nothing kept)."""
    import secrets

    from service.core.accounts import set_password
    from service.dev.demo import DEMO_USERS

    passwords = {}
    for username, *_ in DEMO_USERS:
        passwords[username] = secrets.token_urlsafe(12)
        await set_password(conn, username, passwords[username])
    return passwords


def print_demo(settings: Settings, users: list[str], passwords: dict[str, str] | None = None) -> None:
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
