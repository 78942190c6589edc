"""The one demo a checkout runs: a lock in the data folder, and the file that says where it answers.

``participants dev`` holds an exclusive ``flock`` on ``<data_dir>/dev.lock`` for as long as it runs
(the kernel drops it when the process ends, however it ends), so a second ``make run`` in the same
checkout learns that a demo is running without touching its servers, and says where it answers.

While it runs, ``<data_dir>/dev.env`` (mode 0600: it names the database and its servers) holds the
addresses of its servers as ``PARTICIPANTS_...=value`` lines. Every other command reads it when no
variable names those servers (``apply_dev_env``), so ``participants create-user`` beside ``make run``
needs nothing set. The file is trusted only while the lock is held: a file left by a demo that was
killed names servers that are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from service.settings import Settings

LOCK_NAME = "dev.lock"
ENV_NAME = "dev.env"
# What dev.env may set: the servers' addresses and the API's own, nothing else.
ENV_KEYS = (
    "PARTICIPANTS_DATABASE_URL",
    "PARTICIPANTS_REDIS_URL",
    "PARTICIPANTS_API_URL",
    "PARTICIPANTS_CONSOLE_URL",
)


def env_path(data_dir: Path) -> Path:
    return data_dir / ENV_NAME


def _open_lock(data_dir: Path) -> IO[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    return os.fdopen(fd, "r+b")


@contextlib.contextmanager
def demo_lock(data_dir: Path) -> Iterator[bool]:
    """Yield True while this process holds the checkout's demo lock, False if another process does."""
    handle = _open_lock(data_dir)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            env_path(data_dir).unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def demo_running(data_dir: Path) -> bool:
    """Whether a ``participants dev`` holds the lock of ``data_dir`` right now."""
    if not (data_dir / LOCK_NAME).exists():
        return False
    with demo_lock(data_dir) as mine:
        return not mine


def write_env(data_dir: Path, values: Mapping[str, str]) -> Path:
    """Write ``dev.env`` readable by this user alone, whole or not at all (a reader never sees half)."""
    path = env_path(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# Written by `participants dev` while it runs; read by the other commands.\n")
        for key in ENV_KEYS:
            if values.get(key):
                out.write(f"{key}={values[key]}\n")
    os.replace(tmp, path)
    return path


def read_env(data_dir: Path) -> dict[str, str]:
    """The running demo's ``dev.env`` (empty when no demo holds the lock, or it wrote none yet)."""
    path = env_path(data_dir)
    if not path.exists() or not demo_running(data_dir):
        return {}
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ENV_KEYS:
            values[key] = value
    return values


def apply_dev_env(settings: Settings) -> bool:
    """Fill the servers' URLs that no variable set from the running demo's ``dev.env``; True if
    anything was taken from it."""
    if settings.database_url and settings.redis_url:
        return False
    values = read_env(settings.data_dir)
    taken = False
    if not settings.database_url and values.get("PARTICIPANTS_DATABASE_URL"):
        settings.database_url = values["PARTICIPANTS_DATABASE_URL"]
        taken = True
    if not settings.redis_url and values.get("PARTICIPANTS_REDIS_URL"):
        settings.redis_url = values["PARTICIPANTS_REDIS_URL"]
        taken = True
    if taken and not settings.kek and not settings.kms_key_id:
        from service.dev.secret import KEK_FILE_NAME, read_dev_secret

        settings.kek = read_dev_secret(settings.data_dir, KEK_FILE_NAME)  # the demo database's own
    return taken


def running_message(data_dir: Path) -> str:
    """What a second ``make run`` says: where the running demo answers."""
    values = read_env(data_dir)
    lines = [f"A demo is already running in this checkout ({data_dir.resolve()}); nothing was started."]
    if values.get("PARTICIPANTS_API_URL"):
        lines.append(f"  API:         {values['PARTICIPANTS_API_URL']}")
    if values.get("PARTICIPANTS_CONSOLE_URL"):
        lines.append(f"  Web console: {values['PARTICIPANTS_CONSOLE_URL']}")
    if len(lines) == 1:
        lines.append("  It is still starting: its addresses will be in " + str(env_path(data_dir)))
    lines.append("Stop it with Ctrl-C in its terminal; the other commands use it as they are.")
    return "\n".join(lines)
