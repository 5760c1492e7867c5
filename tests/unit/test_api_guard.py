"""Who the local API lets in: loopback peers, loopback Host names, loopback or no Origin."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nunet.api.guard import is_loopback_host, is_loopback_ip, is_loopback_origin, refusal


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"])
def test_loopback_ips(ip: str) -> None:
    assert is_loopback_ip(ip)


@pytest.mark.parametrize(
    "ip", ["10.0.0.1", "192.168.1.2", "0.0.0.0", "::", "::ffff:10.0.0.1", "", "localhost", "x"]
)
def test_non_loopback_ips(ip: str) -> None:
    assert not is_loopback_ip(ip)


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:9999", "127.0.0.1:9999", "[::1]:9999", "[::1]", "LOCALHOST",
     "app.localhost:80", "127.0.0.1"],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:9999", "localhost.evil.example", "10.0.0.1:9999", "[::2]:80",
     "", "[::1", "127.0.0.1.nip.io"],
)
def test_foreign_hosts(host: str) -> None:
    assert not is_loopback_host(host)


def test_origins() -> None:
    assert is_loopback_origin("http://localhost:3000")
    assert is_loopback_origin("http://127.0.0.1:9999")
    assert not is_loopback_origin("https://evil.example")
    assert not is_loopback_origin("null")
    assert not is_loopback_origin("file://localhost")


def test_refusal_order_and_reasons() -> None:
    assert refusal("127.0.0.1", "127.0.0.1:9999", None) is None
    assert refusal(None, "localhost", None) is None  # unix socket
    why = refusal("10.1.2.3", "127.0.0.1:9999", None)
    assert why is not None
    assert "10.1.2.3" in why
    why = refusal("127.0.0.1", "rebound.example:9999", None)
    assert why is not None
    assert "DNS rebinding" in why
    assert refusal("127.0.0.1", None, None) is not None
    why = refusal("127.0.0.1", "localhost:9999", "https://evil.example")
    assert why is not None
    assert "cross-origin" in why


@given(st.text(max_size=40))
def test_guard_never_raises(text: str) -> None:
    refusal(text, text, text)
    is_loopback_host(text)
    is_loopback_origin(text)
