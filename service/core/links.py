"""What a process saw of its links to Postgres and Redis: every connection it opened, and each time
a new connection reached a different server than the one before (a failover: a standby promoted, a
replica made master by Sentinel).

The pools call ``opened`` from their connect hooks; /metrics exposes the counts of the API process
(``participants_dependency_*``), and every process logs each change of server. A server's address is
``host:port`` as the client reached it: no personal data, and what the operator's DSN names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("participants.links")


@dataclass
class Link:
    dependency: str  # "postgres" or "redis"
    connections: int = 0
    failovers: int = 0
    server: str | None = None  # the server the latest connection reached
    # Told of each connection (dependency, whether it reached a new server): the API's metrics.
    listener: Callable[[str, bool], None] | None = None

    def opened(self, server: str) -> None:
        self.connections += 1
        moved = self.server is not None and server != self.server
        if self.listener is not None:
            self.listener(self.dependency, moved)
        if moved:
            self.failovers += 1
            log.warning(
                "%s now reached at another server", self.dependency,
                extra={"dependency": self.dependency, "previous": self.server, "server": server},
            )  # fmt: skip
        self.server = server


@dataclass
class Links:
    postgres: Link = field(default_factory=lambda: Link("postgres"))
    redis: Link = field(default_factory=lambda: Link("redis"))

    @classmethod
    def told(cls, listener: Callable[[str, bool], None]) -> Links:
        return cls(Link("postgres", listener=listener), Link("redis", listener=listener))


def address(host: object, port: object) -> str:
    """``host:port`` (a unix socket's path alone)."""
    text = str(host)
    return text if text.startswith("/") or port in (None, "") else f"{text}:{port}"
