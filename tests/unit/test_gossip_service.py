"""GossipService, the asyncio adapter: lifecycle, handlers, send queues, over memnet."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import ClosedResourceError, LocalProtocolError, ValidationError
from nunet.net import kinds
from nunet.net.gossip import GossipParams, Message
from nunet.net.gossip.service import GossipService
from nunet.testing.memnet import MemoryHub, MemoryNetwork, mem_addr

T = "/nunet/status"
PARAMS = GossipParams(heartbeat_interval=0.02)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state spread over several objects
            await asyncio.sleep(0.005)


@asynccontextmanager
async def running(*services: GossipService) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        ready = [asyncio.Event() for _ in services]
        tasks = [tg.create_task(s.run(e.set)) for s, e in zip(services, ready, strict=True)]
        await asyncio.gather(*(e.wait() for e in ready))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


def pair(hub: MemoryHub) -> tuple[list[MemoryNetwork], list[GossipService]]:
    keys = [KeyPair.from_seed(bytes([i + 1]) * 32) for i in range(2)]
    nets = [hub.node(k.did) for k in keys]
    services = [
        GossipService(n, k, PARAMS, rng=random.Random(i))
        for i, (n, k) in enumerate(zip(nets, keys, strict=True))
    ]
    return nets, services


async def test_publish_deliver_and_stats() -> None:
    nets, (a, b) = pair(MemoryHub())
    await nets[0].connect(mem_addr(nets[1].local_did))  # before run: picked up at start
    got: list[Message] = []
    b.subscribe(T, got.append)
    async with running(a, b):
        a.subscribe(T, lambda m: None)
        await until(lambda: len(a.router.mesh(T)) == 1)
        msg_id = a.publish(T, b"status ok")
        await until(lambda: len(got) == 1)
        assert got[0].id == msg_id
        assert got[0].publisher == a.router.local
        stats = b.stats()
        assert stats["delivered"] == 1
        assert stats["peers"] == 1
        assert stats["topics"] == {T: {"mesh": 1, "peers": 1}}
        assert stats["handler_errors"] == 0
        assert isinstance(stats["native_dedup"], bool)


async def test_handler_errors_are_counted_and_async_handlers_awaited() -> None:
    nets, (a, b) = pair(MemoryHub())
    done = asyncio.Event()

    def broken(message: Message) -> None:
        raise RuntimeError("handler bug")

    async def slow(message: Message) -> None:
        await asyncio.sleep(0)
        done.set()

    async def broken_async(message: Message) -> None:
        raise RuntimeError("async handler bug")

    async with running(a, b):
        for handler in (broken, slow, broken_async):
            b.subscribe(T, handler)
        a.subscribe(T, lambda m: None)
        await nets[0].connect(mem_addr(nets[1].local_did))
        await until(lambda: len(a.router.mesh(T)) == 1)
        a.publish(T, b"x")
        await asyncio.wait_for(done.wait(), 5)
        await until(lambda: b.stats()["handler_errors"] == 2)


async def test_unsubscribe_leaves_the_topic_when_no_handler_is_left() -> None:
    nets, (a, b) = pair(MemoryHub())
    got: list[Message] = []
    async with running(a, b):
        b.subscribe(T, got.append)
        b.subscribe(T, got.append)
        a.subscribe(T, lambda m: None)
        await nets[0].connect(mem_addr(nets[1].local_did))
        await until(lambda: b.router.local in a.router.topic_peers(T))
        b.unsubscribe(T, got.append)
        assert T in b.router.subscriptions
        b.unsubscribe(T)
        assert T not in b.router.subscriptions
        await until(lambda: b.router.local not in a.router.topic_peers(T))
        a.publish(T, b"nobody listens")
        await asyncio.sleep(0.05)
        assert got == []


async def test_lifecycle_errors() -> None:
    nets, (a, _) = pair(MemoryHub())
    with pytest.raises(LocalProtocolError, match="not running"):
        a.publish(T, b"x")
    with pytest.raises(ValidationError):
        a.subscribe("", lambda m: None)
    assert a.stats()["topics"] == {}  # the bad subscription left nothing behind
    async with running(a):
        with pytest.raises(ValidationError):
            a.publish(T, b"x" * (PARAMS.max_message_size + 1))
        with pytest.raises(LocalProtocolError, match="runs once"):
            await a.run(lambda: None)
    with pytest.raises(ClosedResourceError):
        a.publish(T, b"x")
    with pytest.raises(LocalProtocolError, match="runs once"):
        await a.run(lambda: None)
    with pytest.raises(LocalProtocolError, match="node key"):
        GossipService(nets[0], KeyPair.from_seed(b"\x09" * 32))


class StuckNetwork(MemoryNetwork):
    """Sends to `stuck` never complete: a peer that stopped reading."""

    def __init__(self, hub: MemoryHub, did: str) -> None:
        super().__init__(hub, did)
        self.stuck: str | None = None
        self.gate = asyncio.Event()

    async def send(self, did: str, kind: int, payload: bytes) -> None:
        if did == self.stuck and kind == kinds.GOSSIP:
            await self.gate.wait()
        await super().send(did, kind, payload)


async def test_a_stuck_peer_has_a_bounded_queue_and_delays_no_one_else() -> None:
    hub = MemoryHub()
    keys = [KeyPair.from_seed(bytes([i + 1]) * 32) for i in range(3)]
    net = StuckNetwork(hub, keys[0].did)
    hub.nodes[keys[0].did] = net
    others = [hub.node(k.did) for k in keys[1:]]
    small = GossipParams(heartbeat_interval=0.02, max_message_size=1000, max_rpc_size=2000)
    a = GossipService(net, keys[0], small, max_queued_bytes=5000)
    b, c = (GossipService(n, k, PARAMS) for n, k in zip(others, keys[1:], strict=True))
    got: list[Message] = []
    async with running(a, b, c):
        b.subscribe(T, lambda m: None)
        c.subscribe(T, got.append)
        for other in others:
            await net.connect(mem_addr(other.local_did))
        await until(lambda: len(a.router.topic_peers(T)) == 2)
        net.stuck = keys[1].did
        for i in range(20):
            a.publish(T, bytes([i]) * 1000)
            await asyncio.sleep(0)
        await until(lambda: len(got) == 20)  # c is not held up by b
        assert a.stats()["send_drops"] > 0
        assert 0 < a.stats()["queued_bytes"] <= 5000 + 2000
        net.gate.set()
        await until(lambda: a.stats()["queued_bytes"] == 0)


async def test_a_burst_to_a_peer_leaves_in_few_messages() -> None:
    nets, (a, b) = pair(MemoryHub())
    got: list[Message] = []
    async with running(a, b):
        b.subscribe(T, got.append)
        await nets[0].connect(mem_addr(nets[1].local_did))
        await until(lambda: len(a.router.topic_peers(T)) == 1)
        sent = nets[0]._hub.messages_sent
        for i in range(50):
            a.publish(T, b"%d" % i)  # one tick: all queued behind the first
        await until(lambda: len(got) == 50)
        assert nets[0]._hub.messages_sent - sent <= 2
        assert sorted(int(m.data) for m in got) == list(range(50))


async def test_a_failing_heartbeat_is_logged_and_the_service_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, (a, _) = pair(MemoryHub())
    calls = 0
    heartbeat = a.router.heartbeat

    def flaky(now: float) -> list[object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return heartbeat(now)  # type: ignore[return-value]

    monkeypatch.setattr(a.router, "heartbeat", flaky)
    async with running(a):
        await until(lambda: calls >= 3)
        assert a.stats()["heartbeat_errors"] == 1
