"""The development secrets, random, made once and kept under ``<data_dir>`` (mode 0600): the HS256
token secret (``jwt_secret``) and the key-encryption key of the personal fields (``kek``).

Only ``participants dev`` (``make run``) creates them; the other commands read them when no
variable names a secret and they work on the demo's own database (``participants token``, the
key commands), so the README's examples work against the running demo. ``serve`` and ``worker``
never read them: a deployment names its secrets explicitly.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from service.core.protection.kek import new_local_kek_text

FILE_NAME = "jwt_secret"
KEK_FILE_NAME = "kek"


def secret_path(data_dir: Path, name: str = FILE_NAME) -> Path:
    return data_dir / name


def read_dev_secret(data_dir: Path, name: str = FILE_NAME) -> str | None:
    path = secret_path(data_dir, name)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def _kept(data_dir: Path, name: str, make: Callable[[], str]) -> str:
    """The kept secret ``name``, made now if there is none yet."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = secret_path(data_dir, name)
    try:
        # O_EXCL: two `participants dev` starting at once cannot both write a secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # whatever an editor or a copy did to it, only the owner reads it
        value = read_dev_secret(data_dir, name)
        if value is None:
            raise RuntimeError(f"{path} is empty: delete it to get a new secret") from None
        return value
    value = make()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def dev_secret(data_dir: Path) -> str:
    return _kept(data_dir, FILE_NAME, lambda: secrets.token_urlsafe(48))


def dev_kek(data_dir: Path) -> str:
    """The demo's key-encryption key (base64). Losing it loses the demo's personal data: the demo
    database under the same folder can only be read with it."""
    return _kept(data_dir, KEK_FILE_NAME, new_local_kek_text)
