"""Gossip on a 50-node in-memory network (memnet): GossipService end to end, with sparse random
links, partitions and hostile peers speaking the wire format by hand."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from nunet.crypto.keys import KeyPair
from nunet.errors import PeerUnreachable
from nunet.net import kinds
from nunet.net.gossip import GossipParams, Message, Verdict
from nunet.net.gossip.service import GossipService
from nunet.net.gossip.wire import Graft, MessageBody, Publish, Subscribe, encode_rpc, sign_body
from nunet.testing.memnet import MemoryHub, MemoryNetwork, mem_addr

T = "/nunet/deployment"
N = 50
# Gossipsub's timings shrunk 20x so that a test sees many heartbeats in little time.
PARAMS = GossipParams(
    heartbeat_interval=0.05, prune_backoff=1.0, iwant_followup=0.5, fanout_ttl=2.0
)


class Sim:
    def __init__(self, hub: MemoryHub, keys: list[KeyPair], services: list[GossipService]):
        self.hub = hub
        self.keys = keys
        self.ids = [k.did for k in keys]
        self.services = services
        self.nets = [hub.nodes[d] for d in self.ids]
        self.inbox: list[list[Message]] = [[] for _ in keys]

    def subscribe(self, nodes: range | list[int], topic: str = T) -> None:
        for i in nodes:
            self.services[i].subscribe(topic, self.inbox[i].append)

    def neighbours(self, i: int) -> set[int]:
        index = {d: j for j, d in enumerate(self.ids)}
        return {index[d] for d in self.nets[i].connected() if d in index}

    def delivered(self, msg_id: bytes) -> set[int]:
        return {i for i, box in enumerate(self.inbox) if any(m.id == msg_id for m in box)}

    def total(self, counter: str) -> int:
        return sum(getattr(s.router.stats, counter) for s in self.services)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Waits for `condition`; the timeout only bounds a failing test, it is not measured."""
    # Polling: the conditions span fifty routers, there is no one event to wait on.
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@asynccontextmanager
async def network(n: int = N, degree: int = 8, seed: int = 1) -> AsyncIterator[Sim]:
    rng = random.Random(seed)
    hub = MemoryHub()
    keys = [KeyPair.from_seed(rng.randbytes(32)) for _ in range(n)]
    services = [
        GossipService(hub.node(k.did), k, PARAMS, rng=random.Random(seed * 1000 + i))
        for i, k in enumerate(keys)
    ]
    sim = Sim(hub, keys, services)
    async with asyncio.TaskGroup() as tg:
        ready = [asyncio.Event() for _ in services]
        tasks = [tg.create_task(s.run(e.set)) for s, e in zip(services, ready, strict=True)]
        await asyncio.gather(*(e.wait() for e in ready))
        for i in range(n):
            for j in rng.sample([j for j in range(n) if j != i], degree):
                await sim.nets[i].connect(mem_addr(sim.ids[j]))
        try:
            yield sim
        finally:
            for task in tasks:
                task.cancel()
    assert all(net.handler_errors == 0 for net in sim.nets)
    assert all(s.stats()["heartbeat_errors"] == 0 for s in sim.services)


async def settle(sim: Sim, topic: str = T) -> None:
    """Until every subscriber knows which neighbours follow `topic` and its mesh is as full as
    its neighbourhood allows."""

    def meshed() -> bool:
        following = {
            sim.ids[i] for i, s in enumerate(sim.services) if topic in s.router.subscriptions
        }
        for i, s in enumerate(sim.services):
            router = s.router
            if topic not in router.subscriptions:
                continue
            expected = {sim.ids[j] for j in sim.neighbours(i)} & following
            if router.topic_peers(topic) != expected:
                return False
            if len(router.mesh(topic)) < min(PARAMS.d_lo, len(expected)):
                return False
        return True

    await until(meshed)


async def test_publish_reaches_every_subscriber_once() -> None:
    async with network() as sim:
        sim.subscribe(range(40))
        await settle(sim)
        ids = [sim.services[i].publish(T, f"bid request {i}".encode()) for i in (0, 7, 13, 45)]
        await until(
            lambda: all(
                sim.delivered(m) >= set(range(40)) - {p}
                for m, p in zip(ids, (0, 7, 13, 45), strict=True)
            )
        )
        await asyncio.sleep(0.2)  # let stragglers and gossip arrive: still exactly once
        for i in range(40):
            got = [m.id for m in sim.inbox[i]]
            assert sorted(got) == sorted(
                m for m, p in zip(ids, (0, 7, 13, 45), strict=True) if p != i
            )
        assert all(not box for box in sim.inbox[40:])  # non-subscribers get nothing
        # Node 45 is not subscribed: it published through fanout.
        assert sim.services[45].router.fanout(T)
        assert sim.total("repeats") == sim.total("invalid") == 0
        for s in sim.services[:40]:
            assert len(s.router.mesh(T)) <= PARAMS.d_hi


async def test_ihave_iwant_recovers_what_cut_mesh_links_lost() -> None:
    async with network() as sim:
        sim.subscribe(range(N))
        await settle(sim)
        await asyncio.sleep(0.3)
        index = {d: j for j, d in enumerate(sim.ids)}
        target = next(
            i for i in range(N) if len(sim.services[i].router.topic_peers(T)) >= PARAMS.d + 4
        )
        mesh = {index[d] for d in sim.services[target].router.mesh(T)}
        assert mesh
        for m in mesh:
            sim.hub.partition(sim.ids[target], sim.ids[m])
        publisher = next(i for i in range(N) if i != target and i not in sim.neighbours(target))
        msg_id = sim.services[publisher].publish(T, b"through the gossip")
        await until(lambda: target in sim.delivered(msg_id))
        assert sim.services[target].router.stats.iwant_received >= 1
        await until(lambda: sim.delivered(msg_id) >= set(range(N)) - {publisher})


async def test_random_partitions_heal_through_mesh_repair_and_gossip() -> None:
    async with network(seed=2) as sim:
        sim.subscribe(range(N))
        await settle(sim)
        rng = random.Random(5)
        links = sorted({tuple(sorted((i, j))) for i in range(N) for j in sim.neighbours(i)})
        for a, b in rng.sample(links, len(links) // 5):
            sim.hub.partition(sim.ids[a], sim.ids[b])
        publishers = rng.sample(range(N), 10)
        ids = [sim.services[p].publish(T, b"msg %d" % p) for p in publishers]
        await until(
            lambda: all(
                sim.delivered(m) >= set(range(N)) - {p}
                for m, p in zip(ids, publishers, strict=True)
            )
        )
        assert sim.total("repeats") == 0


def raw_peer(sim: Sim, seed: int) -> tuple[KeyPair, MemoryNetwork]:
    """A node that speaks gossip by hand, with no router of its own."""
    key = KeyPair.from_seed(bytes([seed]) * 32)
    return key, sim.hub.node(key.did)


async def test_duplicate_flood_is_suppressed_and_the_flooder_dropped() -> None:
    async with network() as sim:
        sim.subscribe(range(N))
        await settle(sim)
        victim = 3
        key, attacker = raw_peer(sim, 201)
        await attacker.connect(mem_addr(sim.ids[victim]))
        await attacker.send(sim.ids[victim], kinds.GOSSIP, encode_rpc([Subscribe(T), Graft(T)]))
        await until(lambda: key.did in sim.services[victim].router.mesh(T))
        _, item = sign_body(key, MessageBody(key.did, 1, T, b"spam", time.time() + 30))
        for _ in range(50):
            try:
                await attacker.send(sim.ids[victim], kinds.GOSSIP, encode_rpc([item]))
            except PeerUnreachable:  # dropped by the victim
                break
        await until(lambda: key.did not in sim.nets[victim].connected())
        router = sim.services[victim].router
        assert router.score(key.did) < PARAMS.score.graylist_threshold
        assert key.did not in router.mesh(T)
        assert router.stats.repeats >= 10
        await asyncio.sleep(0.2)
        # Delivered once everywhere, the victim forwarded it once per mesh peer at most.
        assert all(sum(m.data == b"spam" for m in box) == 1 for box in sim.inbox)


async def test_forged_signature_is_dropped_and_not_forwarded() -> None:
    async with network() as sim:
        sim.subscribe(range(N))
        await settle(sim)
        victim, honest = 5, 9
        key, attacker = raw_peer(sim, 202)
        await attacker.connect(mem_addr(sim.ids[victim]))
        body = MessageBody(sim.ids[honest], 1, T, b"forged", time.time() + 30)
        _, genuine = sign_body(key, body)  # signed by the wrong key
        forged = Publish(genuine.body, genuine.signature)
        await attacker.send(sim.ids[victim], kinds.GOSSIP, encode_rpc([Subscribe(T), forged]))
        await until(lambda: sim.services[victim].router.stats.invalid == 1)
        await asyncio.sleep(0.2)
        assert all(not box for box in sim.inbox)
        assert sim.total("invalid") == 1  # nobody else ever saw it
        assert sim.services[victim].router.score(key.did) < 0


async def test_validator_rejection_stops_propagation() -> None:
    async with network() as sim:
        sim.subscribe(range(N))
        publisher = 11
        for i in range(N):
            if i != publisher:
                sim.services[i].set_validator(
                    T, lambda m: Verdict.REJECT if m.data.startswith(b"bad") else Verdict.ACCEPT
                )
        await settle(sim)
        forwarded = sim.total("forwarded")
        bad = sim.services[publisher].publish(T, b"bad request")
        neighbours = sim.neighbours(publisher)
        await until(lambda: sim.total("rejected") == len(neighbours))
        await asyncio.sleep(0.2)
        assert sim.delivered(bad) == set()
        assert sim.total("forwarded") == forwarded  # no node passed it on
        for n in neighbours:
            assert sim.services[n].router.score(sim.ids[publisher]) < 0
        good = sim.services[publisher].publish(T, b"good request")
        await until(lambda: sim.delivered(good) == set(range(N)) - {publisher})
