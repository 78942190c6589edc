"""Which address a request comes from: the peer, or, when the peer is one of the trusted reverse
proxies (``PARTICIPANTS_TRUSTED_PROXIES``), the right-most hop of the one header those proxies
write (``PARTICIPANTS_FORWARDED_HEADER``: ``X-Forwarded-For`` by default, or RFC 7239's
``Forwarded``) that is not itself a trusted proxy. A client can write anything in either header, so
only the named one is read, only from a proxy we trust, and only the part the proxies appended: a
``Forwarded`` the client sent through a proxy that appends to ``X-Forwarded-For`` is ignored."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Proxies:
    networks: tuple[Network, ...] = ()
    header: str = "x-forwarded-for"  # or "forwarded"


def proxies(cidrs: list[str], header: str = "x-forwarded-for") -> Proxies:
    return Proxies(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs), header.lower())


def _address(hop: str | None) -> Address | None:
    """A hop's address, without a port: ``192.0.2.1``, ``192.0.2.1:4711``, ``[2001:db8::1]:4711``."""
    if not hop:
        return None
    hop = hop.strip().strip('"')
    if hop.startswith("["):
        hop = hop[1 : hop.find("]")] if "]" in hop else ""
    elif hop.count(":") == 1:
        hop = hop.partition(":")[0]
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        return None  # "unknown", an obfuscated identifier, garbage


def _trusted(address: Address | None, trust: Proxies) -> bool:
    return address is not None and any(address in net for net in trust.networks)


def forwarded_hops(request: web.Request, header: str) -> list[str]:
    """The hops the proxies recorded in ``header``, nearest last."""
    if header == "forwarded":
        return [hop for element in request.forwarded if (hop := element.get("for"))]
    return [hop for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")]


def client_address(request: web.Request, trust: Proxies) -> str | None:
    peer = request.remote
    if not trust.networks or not _trusted(_address(peer), trust):
        return peer
    for hop in reversed(forwarded_hops(request, trust.header)):
        address = _address(hop)
        if not _trusted(address, trust):
            return str(address) if address is not None else peer  # garbage: the proxy itself
    return peer  # every hop was one of our proxies
