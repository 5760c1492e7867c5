"""/nunet/hello: what is accepted, what is rejected, what is remembered."""

from __future__ import annotations

from typing import Any

import msgspec

from nunet.crypto.keys import KeyPair
from nunet.net.gossip import TOPIC_HELLO
from nunet.net.gossip.actions import Message, Verdict
from nunet.net.hello import MAX_HEARD, Hello, HelloService

ADDR = "/ip4/10.0.0.7/udp/9000/quic-v1"


class FakeGossip:
    def __init__(self) -> None:
        self.validators: dict[str, Any] = {}
        self.handlers: dict[str, Any] = {}
        self.published: list[tuple[str, bytes]] = []

    def set_validator(self, topic: str, fn: Any) -> None:
        self.validators[topic] = fn

    def subscribe(self, topic: str, fn: Any) -> None:
        self.handlers[topic] = fn

    def publish(self, topic: str, data: bytes) -> bytes:
        self.published.append((topic, data))
        return b"\x01" * 32


class FakeNet:
    local_did = KeyPair.generate().did

    def __init__(self) -> None:
        self.book: dict[str, tuple[str, ...]] = {}

    def add_addresses(self, did: str, addrs: tuple[str, ...]) -> None:
        self.book[did] = addrs


def _message(data: bytes, publisher: str) -> Message:
    return Message(id=b"\0" * 32, topic=TOPIC_HELLO, data=data, publisher=publisher, seqno=1,
                   expiry=0.0, source=publisher)


def _service() -> tuple[HelloService, FakeGossip, FakeNet]:
    gossip, net = FakeGossip(), FakeNet()
    service = HelloService(net, gossip, lambda: (ADDR,), clock=lambda: 42.0)  # type: ignore[arg-type]
    return service, gossip, net


def test_announce_publishes_our_hello() -> None:
    service, gossip, net = _service()
    service.announce()
    topic, data = gossip.published[0]
    assert topic == TOPIC_HELLO
    hello = msgspec.msgpack.decode(data, type=Hello)
    assert (hello.did, hello.addresses) == (net.local_did, (ADDR,))


def test_a_genuine_hello_is_accepted_and_remembered() -> None:
    service, gossip, net = _service()
    did = KeyPair.generate().did
    msg = _message(msgspec.msgpack.encode(Hello(did, (ADDR,), "0.5")), did)
    assert gossip.validators[TOPIC_HELLO](msg) is Verdict.ACCEPT
    gossip.handlers[TOPIC_HELLO](msg)
    assert net.book[did] == (ADDR,)
    assert [p.did for p in service.heard()] == [did]
    assert service.heard()[0].last_seen == 42.0


def test_forged_garbage_and_bad_addresses_are_rejected() -> None:
    service, gossip, net = _service()
    did, other = KeyPair.generate().did, KeyPair.generate().did
    validate = gossip.validators[TOPIC_HELLO]
    forged = _message(msgspec.msgpack.encode(Hello(other, (ADDR,), "0.5")), did)
    assert validate(forged) is Verdict.REJECT
    assert validate(_message(b"\xff\x00garbage", did)) is Verdict.REJECT
    assert validate(_message(b'\xa3\xff\xfe\xfd', did)) is Verdict.REJECT  # invalid UTF-8
    bad_addr = _message(msgspec.msgpack.encode(Hello(did, ("/ip4/x/tcp/1",), "0.5")), did)
    assert validate(bad_addr) is Verdict.REJECT
    gossip.handlers[TOPIC_HELLO](forged)
    assert service.heard() == []
    assert net.book == {}


def test_heard_is_bounded() -> None:
    service, gossip, _ = _service()
    first = None
    for i in range(MAX_HEARD + 5):
        did = f"did:key:z6Mk{i:040d}"
        first = first or did
        gossip.handlers[TOPIC_HELLO](_message(msgspec.msgpack.encode(Hello(did, (), "v")), did))
    heard = service.heard()
    assert len(heard) == MAX_HEARD
    assert first not in {p.did for p in heard}
