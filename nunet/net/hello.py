"""`/nunet/hello`: nodes announce themselves on gossip (as DMS nodes do) and learn of each other.

A hello carries the publisher's DID, announced addresses and version. The topic validator
rejects a hello that does not decode or whose DID is not its (already verified) publisher, so a
peer relaying forged hellos is penalised by gossip scoring. Heard hellos feed the address book
and `nunet peers heard`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from nunet import __version__
from nunet.codec import DECODE_ERRORS
from nunet.errors import ValidationError
from nunet.net.api import Network
from nunet.net.gossip import TOPIC_HELLO
from nunet.net.gossip.actions import Message, Verdict
from nunet.net.gossip.service import GossipService
from nunet.net.quic.addr import parse_addr

MAX_HEARD = 10_000
# The first hello waits for the gossip mesh to form (a few heartbeats after the first peers).
FIRST_DELAY_S = 3.0
INTERVAL_S = 300.0


class Hello(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    did: str
    addresses: tuple[str, ...]
    version: str


class HeardPeer(msgspec.Struct, frozen=True):
    did: str
    addresses: tuple[str, ...]
    version: str
    last_seen: float


_BAD_HELLO: tuple[type[Exception], ...] = (*DECODE_ERRORS, ValidationError)
_decode = msgspec.msgpack.Decoder(Hello).decode
_encode = msgspec.msgpack.Encoder().encode


def _decoded(message: Message) -> Hello | None:
    try:
        hello = _decode(message.data)
        for addr in hello.addresses:
            parse_addr(addr)
    except _BAD_HELLO:
        return None
    return hello if hello.did == message.publisher else None


class HelloService:
    def __init__(
        self,
        network: Network,
        gossip: GossipService,
        advertised: Callable[[], tuple[str, ...]],
        *,
        clock: Callable[[], float] = time.time,
        interval: float = INTERVAL_S,
    ) -> None:
        self._net = network
        self._gossip = gossip
        self._advertised = advertised
        self._clock = clock
        self._interval = interval
        self._heard: OrderedDict[str, HeardPeer] = OrderedDict()
        gossip.set_validator(TOPIC_HELLO, self._validate)
        gossip.subscribe(TOPIC_HELLO, self._on_hello)

    async def run(self, started: Callable[[], None]) -> None:
        started()
        await asyncio.sleep(FIRST_DELAY_S)
        while True:
            self.announce()
            await asyncio.sleep(self._interval)

    def announce(self) -> bytes:
        """Publish our hello now; returns the gossip message id."""
        hello = Hello(did=self._net.local_did, addresses=self._advertised(), version=__version__)
        return self._gossip.publish(TOPIC_HELLO, _encode(hello))

    def heard(self) -> list[HeardPeer]:
        return sorted(self._heard.values(), key=lambda p: p.did)

    def _validate(self, message: Message) -> Verdict:
        return Verdict.ACCEPT if _decoded(message) is not None else Verdict.REJECT

    def _on_hello(self, message: Message) -> None:
        hello = _decoded(message)
        if hello is None:
            return
        self._net.add_addresses(hello.did, hello.addresses)
        self._heard.pop(hello.did, None)
        self._heard[hello.did] = HeardPeer(
            did=hello.did, addresses=hello.addresses, version=hello.version,
            last_seen=self._clock(),
        )
        while len(self._heard) > MAX_HEARD:
            self._heard.popitem(last=False)
