"""QUIC multiaddrs: what the transport dials, and what it refuses with a path-bearing error."""

from __future__ import annotations

import socket

import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import ValidationError
from nunet.net.quic.addr import QuicAddr, format_sockaddr, parse_addr

DID = KeyPair.from_seed(bytes(32)).did


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/ip4/127.0.0.1/udp/9000/quic-v1", QuicAddr("ip4", "127.0.0.1", 9000)),
        ("/ip6/0:0:0:0:0:0:0:1/udp/0/quic-v1", QuicAddr("ip6", "::1", 0)),
        ("/dns/node.example.org/udp/443/quic-v1", QuicAddr("dns", "node.example.org", 443)),
        ("/dns6/h/udp/1/quic-v1", QuicAddr("dns6", "h", 1)),
        (f"/ip4/10.0.0.1/udp/9000/quic-v1/p2p/{DID}", QuicAddr("ip4", "10.0.0.1", 9000, DID)),
    ],
)
def test_parses(text: str, expected: QuicAddr) -> None:
    assert parse_addr(text) == expected


def test_round_trip_and_family() -> None:
    text = f"/ip6/::1/udp/9000/quic-v1/p2p/{DID}"
    addr = parse_addr(text)
    assert str(addr) == text
    assert addr.family == socket.AF_INET6
    assert parse_addr("/dns4/x/udp/1/quic-v1").family == socket.AF_INET
    assert not parse_addr("/dns/x/udp/1/quic-v1").is_ip


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/ip4/127.0.0.1/tcp/9000",
        "/ip4/127.0.0.1/udp/9000/quic",  # draft QUIC, not v1
        "/ip4/127.0.0.1/udp/70000/quic-v1",
        "/ip4/127.0.0.1/udp/-1/quic-v1",
        "/ip4/::1/udp/1/quic-v1",
        "/ip6/127.0.0.1/udp/1/quic-v1",
        "/ip4/not-an-ip/udp/1/quic-v1",
        "/onion3/abc/udp/1/quic-v1",
        "/ip4/127.0.0.1/udp/1/quic-v1/p2p/QmNotADid",
        "/ip4/127.0.0.1/udp/1/quic-v1/ipfs/" + DID,
        "ip4/127.0.0.1/udp/1/quic-v1",
    ],
)
def test_refuses(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_addr(text)
    assert caught.value.path == "addr"


def test_refuses_non_strings() -> None:
    with pytest.raises(ValidationError):
        parse_addr(b"/ip4/127.0.0.1/udp/1/quic-v1")  # type: ignore[arg-type]


def test_format_sockaddr() -> None:
    assert format_sockaddr(("127.0.0.1", 5), socket.AF_INET) == "/ip4/127.0.0.1/udp/5/quic-v1"
    assert format_sockaddr(("::1", 5, 0, 0), socket.AF_INET6) == "/ip6/::1/udp/5/quic-v1"
