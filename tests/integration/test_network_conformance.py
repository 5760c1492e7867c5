"""One suite, two implementations of `nunet.net.api.Network`: the QUIC transport (real sockets on
127.0.0.1, ephemeral ports) and the in-memory network. Both must keep the contract api.py states."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import LocalProtocolError, PeerUnreachable, RemoteError, RequestTimeout
from nunet.net import kinds
from nunet.net.api import MAX_PAYLOAD, Network
from nunet.net.quic import QuicLimits, QuicNetwork
from nunet.testing.memnet import MemoryHub, mem_addr

FAST = QuicLimits(handshake_timeout=0.5, dial_timeout=1.0, close_timeout=0.5)


class Harness:
    """Makes started networks of one implementation and tears them down."""

    name = ""

    async def node(self) -> Network:
        raise NotImplementedError

    def dead_addr(self) -> str:
        """An address where no node answers."""
        raise NotImplementedError

    async def close(self) -> None:
        pass


class MemHarness(Harness):
    name = "memnet"

    def __init__(self) -> None:
        self.hub = MemoryHub()

    async def node(self) -> Network:
        return self.hub.node(KeyPair.generate().did)

    def dead_addr(self) -> str:
        return mem_addr(KeyPair.generate().did)


class QuicHarness(Harness):
    name = "quic"

    def __init__(self) -> None:
        self.nets: list[QuicNetwork] = []

    async def node(self) -> Network:
        net = QuicNetwork(KeyPair.generate(), ["/ip4/127.0.0.1/udp/0/quic-v1"], limits=FAST)
        await net.start()
        self.nets.append(net)
        return net

    def dead_addr(self) -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"/ip4/127.0.0.1/udp/{port}/quic-v1"

    async def close(self) -> None:
        await asyncio.gather(*(net.aclose() for net in self.nets))


@pytest.fixture(name="harness", params=["memnet", "quic"])
async def _harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness: Harness = MemHarness() if request.param == "memnet" else QuicHarness()
    try:
        yield harness
    finally:
        await harness.close()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.005)


async def pair(harness: Harness) -> tuple[Network, Network]:
    """Two nodes; `a` knows `b`'s addresses (no connection yet)."""
    a, b = await harness.node(), await harness.node()
    a.add_addresses(b.local_did, b.listen_addrs())
    return a, b


async def echo(_peer: str, payload: memoryview) -> bytes:
    return b"echo:" + bytes(payload)


# --- messages ------------------------------------------------------------------------------------


async def test_messages_arrive_in_order_exactly_once(harness: Harness) -> None:
    a, b = await pair(harness)
    got: list[tuple[str, bytes]] = []
    b.on_message(kinds.GOSSIP, lambda peer, p: got.append((peer, bytes(p))))
    sent = [i.to_bytes(4, "big") + bytes(i % 200) for i in range(2000)]
    for payload in sent:
        await a.send(b.local_did, kinds.GOSSIP, payload)
    await eventually(lambda: len(got) >= len(sent))
    await asyncio.sleep(0.05)
    assert got == [(a.local_did, p) for p in sent]


async def test_dial_on_demand_connects_both_sides(harness: Harness) -> None:
    a, b = await pair(harness)
    events: dict[str, list[tuple[str, bool]]] = {"a": [], "b": []}
    a.on_peer(lambda did, up: events["a"].append((did, up)))
    b.on_peer(lambda did, up: events["b"].append((did, up)))
    got: list[bytes] = []
    b.on_message(kinds.PING, lambda _peer, p: got.append(bytes(p)))
    await a.send(b.local_did, kinds.PING, b"hi")
    await eventually(lambda: got == [b"hi"])
    await eventually(lambda: b.local_did in a.connected() and a.local_did in b.connected())
    assert events["a"] == [(b.local_did, True)]
    assert events["b"] == [(a.local_did, True)]


async def test_messages_both_ways_on_one_connection(harness: Harness) -> None:
    a, b = await pair(harness)
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    a.on_message(kinds.PING, lambda _peer, p: got_a.append(bytes(p)))
    b.on_message(kinds.PING, lambda _peer, p: got_b.append(bytes(p)))
    await a.send(b.local_did, kinds.PING, b"to b")
    await eventually(lambda: got_b == [b"to b"])
    await b.send(a.local_did, kinds.PING, b"to a")  # b has no address of a: reuses the connection
    await eventually(lambda: got_a == [b"to a"])


async def test_message_handler_error_does_not_stop_delivery(harness: Harness) -> None:
    a, b = await pair(harness)
    got: list[bytes] = []

    def handler(_peer: str, p: memoryview) -> None:
        if bytes(p) == b"boom":
            raise ValueError("handler bug")
        got.append(bytes(p))

    b.on_message(kinds.PING, handler)
    for payload in (b"one", b"boom", b"two"):
        await a.send(b.local_did, kinds.PING, payload)
    await eventually(lambda: got == [b"one", b"two"])


# --- requests ------------------------------------------------------------------------------------


async def test_request_reply(harness: Harness) -> None:
    a, b = await pair(harness)
    b.on_request(kinds.DHT, echo)
    assert await a.request(b.local_did, kinds.DHT, b"ping", 5.0) == b"echo:ping"
    replies = await asyncio.gather(
        *(a.request(b.local_did, kinds.DHT, str(i).encode(), 5.0) for i in range(50))
    )
    assert replies == [b"echo:" + str(i).encode() for i in range(50)]


async def test_handler_exception_is_remote_error(harness: Harness) -> None:
    a, b = await pair(harness)

    async def broken(_peer: str, _p: memoryview) -> bytes:
        raise KeyError("no such record")

    b.on_request(kinds.DHT, broken)
    with pytest.raises(RemoteError, match="no such record"):
        await a.request(b.local_did, kinds.DHT, b"x", 5.0)
    b.on_request(kinds.DHT, echo)  # the connection survived
    assert await a.request(b.local_did, kinds.DHT, b"y", 5.0) == b"echo:y"


async def test_request_without_handler_is_remote_error(harness: Harness) -> None:
    a, b = await pair(harness)
    with pytest.raises(RemoteError):
        await a.request(b.local_did, kinds.QOS, b"x", 5.0)


async def test_slow_handler_is_request_timeout(harness: Harness) -> None:
    a, b = await pair(harness)
    release = asyncio.Event()

    async def slow(_peer: str, _p: memoryview) -> bytes:
        await release.wait()
        return b"late"

    b.on_request(kinds.DHT, slow)
    with pytest.raises(RequestTimeout):
        await a.request(b.local_did, kinds.DHT, b"x", 0.2)
    release.set()
    b.on_request(kinds.DHT, echo)
    assert await a.request(b.local_did, kinds.DHT, b"z", 5.0) == b"echo:z"


# --- unreachable ---------------------------------------------------------------------------------


async def test_unknown_peer_is_unreachable(harness: Harness) -> None:
    a = await harness.node()
    stranger = KeyPair.generate().did
    with pytest.raises(PeerUnreachable):
        await a.send(stranger, kinds.PING, b"x")
    with pytest.raises(PeerUnreachable):
        await a.request(stranger, kinds.PING, b"x", 1.0)
    assert a.send_datagram(stranger, b"x") is False


async def test_dead_address_is_unreachable(harness: Harness) -> None:
    a = await harness.node()
    dead = harness.dead_addr()
    with pytest.raises(PeerUnreachable):
        await a.connect(dead)
    ghost = KeyPair.generate().did
    a.add_addresses(ghost, (dead,))
    with pytest.raises(PeerUnreachable):
        await a.send(ghost, kinds.PING, b"x")
    assert a.connected() == ()


async def test_sending_to_itself_is_unreachable(harness: Harness) -> None:
    a = await harness.node()
    with pytest.raises(PeerUnreachable):
        await a.send(a.local_did, kinds.PING, b"x")


# --- connect, disconnect, peers ------------------------------------------------------------------


async def test_connect_returns_the_did_and_remembers_the_address(harness: Harness) -> None:
    a, b = await harness.node(), await harness.node()
    addr = b.listen_addrs()[0]
    assert await a.connect(addr) == b.local_did
    assert addr in a.known_addresses(b.local_did)
    assert b.local_did in a.connected()
    await eventually(lambda: a.local_did in b.connected())


async def test_disconnect_reports_both_sides(harness: Harness) -> None:
    a, b = await pair(harness)
    events: dict[str, list[tuple[str, bool]]] = {"a": [], "b": []}
    a.on_peer(lambda did, up: events["a"].append((did, up)))
    b.on_peer(lambda did, up: events["b"].append((did, up)))
    await a.connect(b.listen_addrs()[0])
    await eventually(lambda: events["b"] == [(a.local_did, True)])
    await a.disconnect(b.local_did, "test over")
    assert b.local_did not in a.connected()
    await eventually(lambda: a.local_did not in b.connected())
    assert events["a"] == [(b.local_did, True), (b.local_did, False)]
    assert events["b"] == [(a.local_did, True), (a.local_did, False)]
    # and dialing on demand works again afterwards
    b.on_request(kinds.DHT, echo)
    assert await a.request(b.local_did, kinds.DHT, b"again", 5.0) == b"echo:again"


async def test_address_book(harness: Harness) -> None:
    a = await harness.node()
    other = KeyPair.generate().did
    a.add_addresses(other, ("/ip4/10.0.0.1/udp/1/quic-v1",))
    a.add_addresses(other, ("/ip4/10.0.0.1/udp/1/quic-v1", "/ip4/10.0.0.2/udp/1/quic-v1"))
    assert a.known_addresses(other) == (
        "/ip4/10.0.0.1/udp/1/quic-v1",
        "/ip4/10.0.0.2/udp/1/quic-v1",
    )
    a.add_addresses(a.local_did, ("/ip4/10.0.0.3/udp/1/quic-v1",))
    assert a.known_addresses(a.local_did) == ()


# --- datagrams -----------------------------------------------------------------------------------


async def test_datagrams(harness: Harness) -> None:
    a, b = await pair(harness)
    got: list[tuple[str, bytes]] = []
    b.on_datagram(lambda peer, data: got.append((peer, data)))
    assert a.send_datagram(b.local_did, b"before") is False  # not connected yet
    await a.connect(b.listen_addrs()[0])
    for i in range(20):
        assert a.send_datagram(b.local_did, b"dgram %d" % i) is True
    # unreliable in general, but nothing is lost on an idle loopback
    await eventually(lambda: len(got) == 20)
    assert {data for _, data in got} == {b"dgram %d" % i for i in range(20)}
    assert {peer for peer, _ in got} == {a.local_did}


# --- misuse by the caller ------------------------------------------------------------------------


async def test_oversize_payload_is_refused(harness: Harness) -> None:
    a, b = await pair(harness)
    b.on_request(kinds.DHT, echo)
    too_big = bytes(MAX_PAYLOAD + 1)
    with pytest.raises(LocalProtocolError):
        await a.send(b.local_did, kinds.DHT, too_big)
    with pytest.raises(LocalProtocolError):
        await a.request(b.local_did, kinds.DHT, too_big, 5.0)
    got: list[int] = []
    b.on_message(kinds.DHT, lambda _peer, p: got.append(len(p)))
    await a.send(b.local_did, kinds.DHT, bytes(MAX_PAYLOAD))  # the limit itself is fine
    await eventually(lambda: got == [MAX_PAYLOAD])


@pytest.mark.parametrize("kind", [kinds.AUTH, kinds.REQUEST, 0x100, -1])
async def test_transport_kinds_are_refused(harness: Harness, kind: Any) -> None:
    a, b = await pair(harness)
    with pytest.raises(LocalProtocolError):
        await a.send(b.local_did, kind, b"x")
    with pytest.raises(LocalProtocolError):
        b.on_message(kind, lambda _peer, _p: None)
