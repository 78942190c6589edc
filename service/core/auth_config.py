"""Whether a deployment's token configuration is safe to start with.

Settings-free: the CLI passes the configured values. ``participants serve`` and ``worker`` refuse to
start (exit 2) on any problem reported here, so a forgotten variable never leaves a deployment
accepting tokens anyone could mint.
"""

from __future__ import annotations

MIN_SECRET_BYTES = 32

# Every secret that has ever been printed in this project's files (the old settings default, the
# old docker-compose default, the test and benchmark constants, the documentation's examples).
# Anyone who has read the source knows them, so a deployment using one has no secret at all.
KNOWN_PUBLIC_SECRETS = frozenset(
    {
        "dev-only-secret-change-me-0123456789abcdef",
        "change-me-to-a-long-random-secret",
        "test-secret-0123456789-0123456789-abcdef",
        "bench-secret-0123456789-0123456789-abcdef",
        "another-secret-another-secret-another",
    }
)


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is unusable for HS256, or None."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"PARTICIPANTS_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes"
    if secret in KNOWN_PUBLIC_SECRETS or secret.strip().lower() in KNOWN_PUBLIC_SECRETS:
        return "PARTICIPANTS_JWT_SECRET is a value published in this project's source: generate your own"
    return None


def startup_problem(jwt_secret: str | None, oidc_issuer: str | None, jwks_url: str | None) -> str | None:
    """Why the service must not start with this token configuration, or None."""
    if not (jwt_secret or oidc_issuer or jwks_url):
        return (
            "no token verification is configured: set PARTICIPANTS_OIDC_ISSUER (an OpenID Connect "
            "provider) and/or PARTICIPANTS_JWT_SECRET (a random value of at least "
            f"{MIN_SECRET_BYTES} bytes, e.g. `openssl rand -base64 48`)"
        )
    if jwt_secret:
        return secret_problem(jwt_secret)
    return None
