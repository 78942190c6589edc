"""What ``participants dev`` adds to a plain start so that a first run has no surprises: the
addresses of its servers in ``.data/dev.env`` for the other commands, webhooks to this machine
allowed (the demo's receiver listens on loopback), and a word on what Ctrl-C stopped."""

from __future__ import annotations

from service.dev.instance import write_env
from service.settings import Settings

# The demo's own machine: where `participants webhook-receiver` listens.
LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]
RECEIVER_PORT = 9000


def api_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.port}{settings.path_prefix.rstrip('/')}"


def allow_loopback_webhooks(settings: Settings) -> None:
    """The demo only: webhook endpoints on this machine are allowed (production refuses private and
    loopback addresses unless PARTICIPANTS_WEBHOOK_ALLOWED_NETWORKS names them)."""
    if not settings.webhook_allow_private:
        extra = [n for n in LOOPBACK_NETWORKS if n not in settings.webhook_allowed_networks]
        settings.webhook_allowed_networks = [*settings.webhook_allowed_networks, *extra]


def announce(settings: Settings) -> None:
    """Write ``dev.env`` (mode 0600) and say how the other commands and webhooks reach the demo."""
    assert settings.database_url and settings.redis_url
    path = write_env(
        settings.data_dir,
        {
            "PARTICIPANTS_DATABASE_URL": settings.database_url,
            "PARTICIPANTS_REDIS_URL": settings.redis_url,
            "PARTICIPANTS_API_URL": api_url(settings),
            "PARTICIPANTS_CONSOLE_URL": api_url(settings) + "/console/",
        },
    )
    print(
        f"Servers' addresses: {path} (mode 0600). Beside this demo, `participants create-user`,"
        " `set-password`, `token` and `worker-health` use them with nothing set."
    )
    print(
        f"Webhooks: run `.venv/bin/participants webhook-receiver --port {RECEIVER_PORT}` in another"
        f" terminal, add the endpoint http://127.0.0.1:{RECEIVER_PORT}/ on the console's Webhooks page,"
        " and give the receiver its secret (--secret whsec_...) to check the signatures.\n",
        flush=True,
    )


def running_parts(settings: Settings) -> list[str]:
    return [f"the API on {api_url(settings)}", "the workers (extract and default queues)"]


def stopped_message(settings: Settings, started: list[str]) -> str:
    """What Ctrl-C stopped, in one line (``started``: what had started, in words)."""
    stopped = ", ".join(started) if started else "nothing had started yet"
    return f"Stopped {stopped}. The data stays in {settings.data_dir.resolve()}."
