"""The network as the protocols above it see it: peers named by DID, kinds of message, requests.

Two implementations must behave alike (tests/conformance runs one suite on both):
- `nunet.net.quic` — QUIC over UDP (aioquic), authenticated to the peers' DIDs;
- `nunet.testing.memnet` — in-process, for unit tests and large simulations (DHT, gossip).

Rules every implementation keeps:
- One connection per peer, reused for everything; `send` and `request` dial on demand using the
  address book (`add_addresses`), and raise `PeerUnreachable` when no address works.
- Messages of one kind to one peer arrive in order, exactly once, or the connection breaks.
- A handler's exception never reaches the network layer's caller: for a request it becomes a
  `RemoteError` at the requester; for a message it is logged and counted.
- `kind` is one byte (see `nunet/net/kinds.py`); payloads are at most `MAX_PAYLOAD` bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

MAX_PAYLOAD = (1 << 20) - 64  # a whole frame, header included, stays within DMS's 1 MiB

MessageHandler = Callable[[str, memoryview], None]
RequestHandler = Callable[[str, memoryview], Awaitable[bytes]]
PeerListener = Callable[[str, bool], None]  # (peer DID, connected?)
DatagramHandler = Callable[[str, bytes], None]


class PeerRecord(msgspec.Struct, frozen=True):
    """Where a peer can be reached: its DID and multiaddr-style addresses
    (`/ip4/127.0.0.1/udp/9000/quic-v1`)."""

    did: str
    addrs: tuple[str, ...]


class Network(Protocol):
    @property
    def local_did(self) -> str: ...

    def listen_addrs(self) -> tuple[str, ...]: ...

    def add_addresses(self, did: str, addrs: tuple[str, ...]) -> None: ...

    def known_addresses(self, did: str) -> tuple[str, ...]: ...

    async def connect(self, addr: str) -> str:
        """Dial `addr` (no DID known yet, e.g. a bootstrap peer); returns the peer's DID."""
        ...

    async def send(self, did: str, kind: int, payload: bytes) -> None: ...

    async def request(self, did: str, kind: int, payload: bytes, timeout: float) -> bytes:
        """Raises PeerUnreachable, RequestTimeout or RemoteError."""
        ...

    def on_message(self, kind: int, handler: MessageHandler) -> None: ...

    def on_request(self, kind: int, handler: RequestHandler) -> None: ...

    def on_peer(self, listener: PeerListener) -> None: ...

    def connected(self) -> tuple[str, ...]: ...

    async def disconnect(self, did: str, reason: str) -> None: ...

    def send_datagram(self, did: str, data: bytes) -> bool:
        """Unreliable (RFC 9221); False when not connected or the send queue is full."""
        ...

    def on_datagram(self, handler: DatagramHandler) -> None: ...
