"""Who may talk to the local API: this machine, and nobody else (deny by default).

Three independent checks, because each closes a different hole:
- the TCP peer must be a loopback address, even if the operator bound the API wider by mistake;
- the `Host` header must be a loopback name, so a web page that rebinds its DNS name to 127.0.0.1
  cannot reach us through the victim's browser (DNS rebinding);
- a browser `Origin`, when present, must be a loopback origin, so a page cannot post
  cross-site to the node (no CORS headers are ever sent, so it cannot read replies either).
Unix-socket callers are local by construction (the socket is mode 0600).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def is_loopback_ip(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def is_loopback_host(host: str) -> bool:
    """A `Host` header value (`name[:port]`, `[v6]:port`) that names this machine."""
    host = host.strip().lower()
    if not host:
        return False
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return False
        return is_loopback_ip(host[1:end])
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in LOOPBACK_NAMES or name.endswith(".localhost") or is_loopback_ip(name)


def is_loopback_origin(origin: str) -> bool:
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and is_loopback_host(parts.netloc)


def refusal(peer: str | None, host: str | None, origin: str | None) -> str | None:
    """Why a request must be refused, or None when it may proceed.

    `peer` is the remote IP for TCP, or None for a unix-socket caller.
    """
    if peer is not None and not is_loopback_ip(peer):
        return f"the local API answers only callers on this machine, not {peer}"
    if host is None or not is_loopback_host(host):
        return f"Host {host!r} is not a loopback name (DNS rebinding protection)"
    if origin is not None and not is_loopback_origin(origin):
        return f"cross-origin requests from {origin!r} are not allowed"
    return None
