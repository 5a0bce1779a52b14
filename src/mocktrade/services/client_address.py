"""The client address that per-address limits count against.

The socket peer, unless that peer is a proxy named in
MOCKTRADE_TRUSTED_PROXIES (comma-separated addresses or CIDR networks): then
the rightmost X-Forwarded-For entry that is not itself a trusted proxy,
which is the address the outermost trusted proxy saw. Entries to the left
of it were written by the client and are never believed; without the
setting X-Forwarded-For is ignored, so a client cannot pick the address it
is limited as.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..config import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"MOCKTRADE_TRUSTED_PROXIES: {item!r} is not an address or "
                              f"network") from None
    return tuple(networks)


class ClientAddress:
    def __init__(self, trusted_proxies: str = ""):
        self._trusted = parse_networks(trusted_proxies)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def of(self, scope: Any) -> str:
        """The client address of an ASGI HTTP or WebSocket scope."""
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return peer
        forwarded = ",".join(value.decode("latin-1") for name, value in scope.get("headers", ())
                             if name.lower() == b"x-forwarded-for")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # not an address: a proxy we trust would not write that
        return hops[0] if hops else peer
