"""Redis, which carries job messages (arq) and nothing that must survive it: Postgres holds the
truth about every job, and the sweeper re-enqueues what Redis lost."""

from __future__ import annotations

from arq.connections import RedisSettings

from service.settings import Settings


def redis_settings(settings: Settings) -> RedisSettings:
    assert settings.redis_url, "PARTICIPANTS_REDIS_URL must be resolved before the app starts"
    return RedisSettings.from_dsn(settings.redis_url)
