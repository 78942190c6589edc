"""The guard against server-side request forgery for webhook URLs.

A webhook URL is chosen by an admin, but the request is made from inside our network: a URL that
resolves to a private, loopback, link-local (cloud metadata), multicast or reserved address is
refused unless the configuration allows it (``webhook_allow_private``, or the networks listed in
``webhook_allowed_networks``).

The check runs twice: when the endpoint is registered (a clear 400 for the admin) and, through
``GuardedResolver``, on the very addresses the HTTP client connects to, so a DNS answer that
changes between the two (DNS rebinding) is caught too. Literal IP hosts never reach a resolver,
so ``check_url`` is also called before each delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddress(OSError):
    """The URL is not acceptable, or its host resolves to an address we refuse to call."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AddressPolicy:
    def __init__(self, allow_private: bool = False, allowed_networks: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.allowed: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.allow_private or any(address in net for net in self.allowed):
            return True
        # is_global is False for private, loopback, link-local, shared (100.64/10), reserved and
        # documentation ranges; multicast is refused on top.
        return address.is_global and not address.is_multicast


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL without credentials; BlockedAddress otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BlockedAddress("malformed URL") from None
    if parts.scheme not in ("http", "https"):
        raise BlockedAddress("scheme must be http or https")
    if not parts.hostname:
        raise BlockedAddress("no host")
    if parts.username is not None or parts.password is not None:
        raise BlockedAddress("credentials in URL")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, policy: AddressPolicy, resolve: bool = True) -> None:
    """Raise ``BlockedAddress`` unless every address ``url``'s host resolves to is permitted."""
    _, host, port = split_url(url)
    literal = parse_ip(host)
    if literal is not None:
        if not policy.permits(literal):
            raise BlockedAddress("address not allowed")
        return
    if not resolve:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise BlockedAddress("host does not resolve") from None
    for *_, sockaddr in infos:
        address = parse_ip(str(sockaddr[0]).split("%")[0])
        if address is None or not policy.permits(address):
            raise BlockedAddress("address not allowed")


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops refused addresses; none left means ``BlockedAddress``."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        permitted = [
            r for r in results if (ip := parse_ip(r["host"])) is not None and self.policy.permits(ip)
        ]
        if not permitted:
            raise BlockedAddress("address not allowed")
        return permitted

    async def close(self) -> None:
        await self.inner.close()
