"""The development mail sink: a real SMTP conversation ends as a private file in the mail folder."""

from __future__ import annotations

import logging
import stat
from email.message import EmailMessage

import aiosmtplib

from service.dev.mail_sink import DEV_MAIL_FROM, start_mail_sink


async def test_each_message_becomes_a_private_file(settings, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    dev = settings.model_copy(update={"data_dir": tmp_path, "smtp_host": None, "mail_from": None})
    server = await start_mail_sink(dev)
    assert server is not None
    try:
        assert (dev.smtp_host, dev.smtp_security, dev.mail_from) == ("127.0.0.1", "none", DEV_MAIL_FROM)
        for n in range(2):
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = dev.mail_from, "jo@example.org", f"n{n}"
            message.set_content("https://portal.example.org/?accessCode=ABC")
            await aiosmtplib.send(message, hostname=dev.smtp_host, port=dev.smtp_port, start_tls=False)
    finally:
        server.close()
        await server.wait_closed()
    folder = tmp_path / "mail"
    files = sorted(folder.iterdir())
    assert len(files) == 2
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for n, path in enumerate(files):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text()
        assert f"Subject: n{n}" in text and "accessCode=ABC" in text
    printed = capsys.readouterr().out
    assert f"written to {folder.resolve()}/" in printed and str(files[0]) in printed
    assert "jo@example.org" not in printed
    assert "jo@example.org" not in caplog.text  # aiosmtpd's own log names every recipient


async def test_a_configured_smtp_server_is_kept(settings, tmp_path):
    real = settings.model_copy(
        update={"data_dir": tmp_path, "smtp_host": "smtp.example.org", "smtp_port": 587}
    )
    assert await start_mail_sink(real) is None
    assert (real.smtp_host, real.smtp_port) == ("smtp.example.org", 587)
    assert not (tmp_path / "mail").exists()
