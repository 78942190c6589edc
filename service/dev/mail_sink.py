"""The development mail sink: an SMTP server (aiosmtpd) on 127.0.0.1 that writes every message it
receives to ``<data_dir>/mail/`` as an ``.eml`` file, readable by the service's user alone (the
messages hold access codes). ``participants dev`` starts it unless a real SMTP server is configured,
so a new user sees the invitation they sent. Development only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any

from service.settings import Settings

DEV_MAIL_FROM = "Participants (development) <no-reply@localhost>"


class MailFolder:
    """aiosmtpd handler: each message's bytes, as received, in a file of its own (mode 0600)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counter = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(self.counter):04}.eml"
        path = self.folder / name
        content = envelope.original_content or envelope.content
        await asyncio.to_thread(_write_private, path, content)
        print(f"mail sink: {path}", flush=True)  # the file name only: the message holds personal data
        return "250 2.0.0 OK: written to the mail folder"


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


async def start_mail_sink(settings: Settings, folder: Path | None = None) -> asyncio.Server | None:
    """Start the sink and point ``settings`` at it (plain SMTP on a free port of 127.0.0.1); None,
    and nothing changed, when an SMTP host is configured already."""
    from aiosmtpd.smtp import SMTP  # the `embedded` extra, as the other development servers

    if settings.smtp_host:
        return None
    # aiosmtpd logs each SMTP command at INFO, recipients' addresses included: personal data.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    folder = (folder or settings.data_dir / "mail").resolve()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    handler = MailFolder(folder)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="localhost"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    settings.smtp_host, settings.smtp_port, settings.smtp_security = "127.0.0.1", port, "none"
    settings.mail_from = settings.mail_from or DEV_MAIL_FROM
    print(f"mail sink: every email the service sends is written to {folder}/ (SMTP on 127.0.0.1:{port})")
    return server
