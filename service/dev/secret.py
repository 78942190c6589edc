"""The development HS256 secret: random, made once, kept in ``<data_dir>/jwt_secret`` (mode 0600).

Only ``participants dev`` (``make run``) creates it; ``participants token`` reads it when
``PARTICIPANTS_JWT_SECRET`` is unset, so the README's examples work against the running demo.
``serve`` and ``worker`` never read it: a deployment names its secret explicitly.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

FILE_NAME = "jwt_secret"


def secret_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def read_dev_secret(data_dir: Path) -> str | None:
    path = secret_path(data_dir)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def dev_secret(data_dir: Path) -> str:
    """The kept secret, made now if there is none yet."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = secret_path(data_dir)
    try:
        # O_EXCL: two `participants dev` starting at once cannot both write a secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # whatever an editor or a copy did to it, only the owner reads it
        value = read_dev_secret(data_dir)
        if value is None:
            raise RuntimeError(f"{path} is empty: delete it to get a new secret") from None
        return value
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
