"""Who is on the other end of a connection, when proxies stand in between.

``X-Forwarded-For`` is a list anyone can write to; only the entries appended by proxies we trust
mean anything. Reading from the right, each trusted hop vouches for the address before it, so the
client is the rightmost address that is *not* a trusted proxy (the rule nginx's realip module
applies with ``real_ip_recursive on``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

__all__ = ["IPNetwork", "client_address"]

#: A network of either family, as the trusted-proxy setting lists them.
IPNetwork = IPv4Network | IPv6Network


def _trusted(address: str, proxies: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(remote: str | None, forwarded_for: str | None, proxies: Sequence[IPNetwork]) -> str:
    """The client's address: ``remote``, or what trusted proxies say it is."""
    if not remote:
        return "unknown"
    if not proxies or not forwarded_for or not _trusted(remote, proxies):
        return remote
    address = remote
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage written by someone we do not trust: stop at the last good hop
        address = hop
        if not _trusted(hop, proxies):
            break
    return address
