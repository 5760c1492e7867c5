"""Gossip over the real QUIC transport: a few nodes on 127.0.0.1 in one process."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from nunet.crypto.keys import KeyPair
from nunet.net import kinds
from nunet.net.gossip import GossipParams, Message
from nunet.net.gossip.service import GossipService
from nunet.net.quic import QuicLimits, QuicNetwork

T = "/nunet/hello"
FAST = QuicLimits(handshake_timeout=1.0, dial_timeout=2.0, close_timeout=0.2)
PARAMS = GossipParams(heartbeat_interval=0.05, iwant_followup=0.5, prune_backoff=1.0)


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state spread over several nodes
            await asyncio.sleep(0.01)


@asynccontextmanager
async def quic_nodes(n: int) -> AsyncIterator[tuple[list[QuicNetwork], list[GossipService]]]:
    async with AsyncExitStack() as stack:
        keys = [KeyPair.generate() for _ in range(n)]
        nets = [
            await stack.enter_async_context(
                QuicNetwork(k, ["/ip4/127.0.0.1/udp/0/quic-v1"], limits=FAST)
            )
            for k in keys
        ]
        services = [
            GossipService(net, k, PARAMS, rng=random.Random(i))
            for i, (net, k) in enumerate(zip(nets, keys, strict=True))
        ]
        async with asyncio.TaskGroup() as tg:
            ready = [asyncio.Event() for _ in services]
            tasks = [tg.create_task(s.run(e.set)) for s, e in zip(services, ready, strict=True)]
            await asyncio.gather(*(e.wait() for e in ready))
            try:
                yield nets, services
            finally:
                for task in tasks:
                    task.cancel()


async def test_publish_over_quic_reaches_every_subscriber() -> None:
    async with quic_nodes(6) as (nets, services):
        inbox: list[list[Message]] = [[] for _ in services]
        for i, s in enumerate(services):
            s.subscribe(T, inbox[i].append)
        for i in range(6):  # a ring with one chord: several paths, no full mesh
            for j in {(i + 1) % 6, (i + 3) % 6}:
                await nets[i].connect(nets[j].listen_addrs()[0])
        await until(lambda: all(len(s.router.topic_peers(T)) >= 2 for s in services))
        msg_id = services[0].publish(T, b"hello over quic")
        await until(lambda: all(len(box) == 1 for box in inbox[1:]))
        assert all(box[0].id == msg_id for box in inbox[1:])
        assert inbox[0] == []
        await asyncio.sleep(0.2)
        assert all(len(box) <= 1 for box in inbox)


async def test_garbage_over_quic_costs_score_not_the_node() -> None:
    async with quic_nodes(2) as (nets, services):
        inbox: list[Message] = []
        services[0].subscribe(T, inbox.append)
        services[1].subscribe(T, lambda m: None)
        bad = QuicNetwork(KeyPair.generate(), ["/ip4/127.0.0.1/udp/0/quic-v1"], limits=FAST)
        async with bad:
            victim = await bad.connect(nets[0].listen_addrs()[0])
            for _ in range(40):
                await bad.send(victim, kinds.GOSSIP, b"\xc1 not msgpack")
            await until(lambda: services[0].router.score(bad.local_did) < -80)
            await until(lambda: bad.local_did not in nets[0].connected())
        # The victim still works for everyone else.
        await nets[1].connect(nets[0].listen_addrs()[0])
        await until(lambda: len(services[1].router.mesh(T)) == 1)
        services[1].publish(T, b"still alive")
        await until(lambda: [m.data for m in inbox] == [b"still alive"])
