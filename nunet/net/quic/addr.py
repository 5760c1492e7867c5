"""Multiaddr-style QUIC addresses: `/ip4/127.0.0.1/udp/9000/quic-v1`, `/ip6/::1/udp/9000/quic-v1`,
`/dns/example.org/udp/9000/quic-v1` (also `/dns4`, `/dns6`), optionally ending `/p2p/<DID>` (as
bootstrap lists write them): a dial to such an address expects that DID. Only what the transport
dials."""

from __future__ import annotations

import ipaddress
import socket

import msgspec

from nunet.crypto.did import is_did
from nunet.errors import ValidationError

_HOST_PROTOCOLS = ("ip4", "ip6", "dns", "dns4", "dns6")


class QuicAddr(msgspec.Struct, frozen=True):
    proto: str  # one of _HOST_PROTOCOLS
    host: str
    port: int
    did: str | None = None  # from a trailing /p2p/<DID>

    @property
    def family(self) -> int:
        """The socket family to dial from; DNS names without a family use IPv4 first."""
        return socket.AF_INET6 if self.proto in ("ip6", "dns6") else socket.AF_INET

    @property
    def is_ip(self) -> bool:
        return self.proto in ("ip4", "ip6")

    def __str__(self) -> str:
        peer = f"/p2p/{self.did}" if self.did else ""
        return f"/{self.proto}/{self.host}/udp/{self.port}/quic-v1{peer}"


def parse_addr(text: str) -> QuicAddr:
    """A QuicAddr, or ValidationError (path `addr`) naming what is wrong."""
    if not isinstance(text, str):
        raise ValidationError("a multiaddr must be a string", path="addr")
    parts = text.split("/")
    if (
        len(parts) not in (6, 8)
        or parts[0] != ""
        or parts[3] != "udp"
        or parts[5] != "quic-v1"
        or (len(parts) == 8 and parts[6] != "p2p")
    ):
        raise ValidationError(
            f"{text!r} is not /ip4|ip6|dns|dns4|dns6/HOST/udp/PORT/quic-v1[/p2p/DID]", path="addr"
        )
    did = parts[7] if len(parts) == 8 else None
    if did is not None and not is_did(did):
        raise ValidationError(f"{text!r}: {did!r} is not a did:key", path="addr")
    proto, host, port_text = parts[1], parts[2], parts[4]
    if proto not in _HOST_PROTOCOLS:
        raise ValidationError(f"{text!r}: unsupported protocol {proto!r}", path="addr")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValidationError(f"{text!r}: port must be 0..65535", path="addr")
    if proto in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValidationError(f"{text!r}: {host!r} is not an IP address", path="addr") from None
        if (ip.version == 4) != (proto == "ip4"):
            raise ValidationError(f"{text!r}: {host!r} is not an {proto} address", path="addr")
        host = ip.compressed
    elif not host or len(host) > 253:
        raise ValidationError(f"{text!r}: bad DNS name", path="addr")
    return QuicAddr(proto, host, int(port_text), did)


def format_sockaddr(sockaddr: tuple[object, ...], family: int) -> str:
    """The multiaddr of a bound socket address (`getsockname()`)."""
    host, port = str(sockaddr[0]), int(sockaddr[1])  # type: ignore[call-overload]
    proto = "ip6" if family == socket.AF_INET6 else "ip4"
    return str(QuicAddr(proto, host, port))
