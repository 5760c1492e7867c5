"""An in-process `Network` (nunet/net/api.py) for unit tests and large simulations.

Hundreds of nodes share one event loop and one `MemoryHub`. Links can be given a one-way delay,
nodes can be taken down (requests to them fail, messages are lost) and partitions can be made,
so DHT, gossip and QoS logic can be tested at scale, deterministically, without sockets.
Semantics follow the QUIC implementation: per-peer ordered delivery, dial on demand from the
address book, handler errors become RemoteError at the requester.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nunet.errors import LocalProtocolError, PeerUnreachable, RemoteError, RequestTimeout
from nunet.net.api import (
    MAX_PAYLOAD,
    DatagramHandler,
    MessageHandler,
    PeerListener,
    RequestHandler,
)

log = logging.getLogger("nunet.testing.memnet")

_FIRST_PROTOCOL_KIND = 0x10  # below: the transport's own frames (nunet/net/kinds.py)


def mem_addr(did: str) -> str:
    return f"/mem/{did}"


class MemoryHub:
    def __init__(self) -> None:
        self.nodes: dict[str, MemoryNetwork] = {}
        self.delay: Callable[[str, str], float] = lambda _a, _b: 0.0
        self.down: set[str] = set()
        self._cut: set[frozenset[str]] = set()
        self.messages_sent = 0

    def node(self, did: str) -> MemoryNetwork:
        net = MemoryNetwork(self, did)
        self.nodes[did] = net
        return net

    def partition(self, a: str, b: str) -> None:
        self._cut.add(frozenset((a, b)))

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        if a is None or b is None:
            self._cut.clear()
        else:
            self._cut.discard(frozenset((a, b)))

    def reachable(self, a: str, b: str) -> bool:
        return (
            b in self.nodes and a not in self.down and b not in self.down
            and frozenset((a, b)) not in self._cut
        )


class MemoryNetwork:
    def __init__(self, hub: MemoryHub, did: str) -> None:
        self._hub = hub
        self._did = did
        self._book: dict[str, tuple[str, ...]] = {}
        self._messages: dict[int, MessageHandler] = {}
        self._requests: dict[int, RequestHandler] = {}
        self._listeners: list[PeerListener] = []
        self._datagram_handlers: list[DatagramHandler] = []
        self._peers: set[str] = set()
        self.handler_errors = 0

    @property
    def local_did(self) -> str:
        return self._did

    def listen_addrs(self) -> tuple[str, ...]:
        return (mem_addr(self._did),)

    def add_addresses(self, did: str, addrs: tuple[str, ...]) -> None:
        if did != self._did:
            self._book[did] = tuple(dict.fromkeys(self._book.get(did, ()) + addrs))

    def known_addresses(self, did: str) -> tuple[str, ...]:
        return self._book.get(did, ())

    async def connect(self, addr: str) -> str:
        did = addr.removeprefix("/mem/")
        if not addr.startswith("/mem/") or not self._hub.reachable(self._did, did):
            raise PeerUnreachable(f"cannot reach {addr}")
        await asyncio.sleep(2 * self._hub.delay(self._did, did))
        self.add_addresses(did, (addr,))
        self._link(did)
        return did

    def _link(self, did: str) -> None:
        for a, b in ((self, did), (self._hub.nodes[did], self._did)):
            if b not in a._peers:
                a._peers.add(b)
                for listener in list(a._listeners):
                    listener(b, True)

    def _ensure(self, did: str) -> MemoryNetwork:
        if did not in self._peers and did not in self._book:
            raise PeerUnreachable(f"no known address for {did}")
        if not self._hub.reachable(self._did, did):
            self._drop(did)
            raise PeerUnreachable(f"{did} is unreachable")
        self._link(did)
        return self._hub.nodes[did]

    def _drop(self, did: str) -> None:
        if did in self._peers:
            self._peers.discard(did)
            for listener in list(self._listeners):
                listener(did, False)

    async def send(self, did: str, kind: int, payload: bytes) -> None:
        _check(kind, payload)
        target = self._ensure(did)
        self._hub.messages_sent += 1
        delay = self._hub.delay(self._did, did)
        loop = asyncio.get_running_loop()
        data = memoryview(bytes(payload))
        if delay > 0:
            loop.call_later(delay, target._deliver, self._did, kind, data)
        else:
            loop.call_soon(target._deliver, self._did, kind, data)

    def _deliver(self, sender: str, kind: int, data: memoryview) -> None:
        if not self._hub.reachable(sender, self._did):
            return
        handler = self._messages.get(kind)
        if handler is None:
            return
        try:
            handler(sender, data)
        except Exception:
            self.handler_errors += 1
            log.exception("message handler for kind %#x failed", kind)

    async def request(self, did: str, kind: int, payload: bytes, timeout: float) -> bytes:
        _check(kind, payload)
        target = self._ensure(did)
        self._hub.messages_sent += 2
        try:
            return await asyncio.wait_for(self._ask(target, kind, bytes(payload)), timeout)
        except TimeoutError:
            raise RequestTimeout(f"no reply from {did} within {timeout:g} s") from None

    async def _ask(self, target: MemoryNetwork, kind: int, payload: bytes) -> bytes:
        delay = self._hub.delay(self._did, target._did)
        if delay:
            await asyncio.sleep(delay)
        if not self._hub.reachable(self._did, target._did):
            await asyncio.sleep(3600)  # lost: the caller's timeout decides
        handler = target._requests.get(kind)
        if handler is None:
            raise RemoteError(f"{target._did} does not handle kind {kind:#x}")
        try:
            reply = await handler(self._did, memoryview(payload))
        except Exception as exc:
            target.handler_errors += 1
            raise RemoteError(f"{type(exc).__name__}: {exc}") from None
        if delay:
            await asyncio.sleep(delay)
        return reply

    def on_message(self, kind: int, handler: MessageHandler) -> None:
        _check_kind(kind)
        self._messages[kind] = handler

    def on_request(self, kind: int, handler: RequestHandler) -> None:
        _check_kind(kind)
        self._requests[kind] = handler

    def on_peer(self, listener: PeerListener) -> None:
        self._listeners.append(listener)

    def connected(self) -> tuple[str, ...]:
        return tuple(d for d in self._peers if self._hub.reachable(self._did, d))

    async def disconnect(self, did: str, reason: str) -> None:
        self._drop(did)
        other = self._hub.nodes.get(did)
        if other is not None:
            other._drop(self._did)

    def send_datagram(self, did: str, data: bytes) -> bool:
        if did not in self._peers or not self._hub.reachable(self._did, did):
            return False
        target = self._hub.nodes[did]
        asyncio.get_running_loop().call_soon(target._datagram, self._did, bytes(data))
        return True

    def _datagram(self, sender: str, data: bytes) -> None:
        for handler in self._datagram_handlers:
            handler(sender, data)

    def on_datagram(self, handler: DatagramHandler) -> None:
        self._datagram_handlers.append(handler)


def _check_kind(kind: int) -> None:
    if type(kind) is not int or not _FIRST_PROTOCOL_KIND <= kind <= 0xFF:
        raise LocalProtocolError(f"message kind must be an int in 0x10..0xff, not {kind!r}")


def _check(kind: int, payload: bytes) -> None:
    """The caller's mistakes, refused as the QUIC transport refuses them."""
    _check_kind(kind)
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(
            f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit"
        )


def _check_network(net: MemoryNetwork) -> None:
    """Static check that MemoryNetwork satisfies the Network protocol."""
    from nunet.net.api import Network

    _: Network = net
