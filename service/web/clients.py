"""Which address a request comes from: the peer, or, when the peer is one of the trusted reverse
proxies (``PARTICIPANTS_TRUSTED_PROXIES``), the right-most hop of ``X-Forwarded-For`` (or the
``for=`` of ``Forwarded``) that is not itself a trusted proxy. A client can write anything in those
headers, so they are read only from a proxy we trust, and only the part the proxies appended."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# for=192.0.2.1, for="[2001:db8::1]:4711", for=unknown (RFC 7239)
_FORWARDED_FOR = re.compile(r'for=("?)\[?([^\]";,]+?)\]?(?::\d+)?\1(?=[;,]|$)', re.IGNORECASE)


def networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(text: str | None, proxies: tuple[Network, ...]) -> bool:
    address = _address(text) if text else None
    return address is not None and any(address in net for net in proxies)


def forwarded_hops(request: web.Request) -> list[str]:
    """The hops the proxies recorded, nearest last: ``Forwarded`` if sent, else ``X-Forwarded-For``."""
    if forwarded := request.headers.getall("Forwarded", []):
        return [m.group(2) for value in forwarded for m in _FORWARDED_FOR.finditer(value)]
    return [
        hop.strip() for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")
    ]


def client_address(request: web.Request, proxies: tuple[Network, ...]) -> str | None:
    peer = request.remote
    if not proxies or not _trusted(peer, proxies):
        return peer
    for hop in reversed(forwarded_hops(request)):
        if not _trusted(hop, proxies):
            return hop if _address(hop) is not None else peer  # "unknown" or garbage: the proxy itself
    return peer  # every hop was one of our proxies
