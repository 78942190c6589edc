"""What every use-case may need besides a database connection, passed as one value: the pool,
Redis (arq's client), object storage and the settings. The web app builds one at startup
(web/resources.py), the worker has the same four in its context."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from arq.connections import ArqRedis

from service.core.storage import Storage
from service.settings import Settings


@dataclass(frozen=True)
class Connections:
    db: asyncpg.Pool
    redis: ArqRedis
    storage: Storage
    settings: Settings
