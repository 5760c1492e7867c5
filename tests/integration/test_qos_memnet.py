"""QoS single check on the in-memory network: the four stories of the seed (available,
low-latency, unavailable, high-latency peer), recovery, deadlines, pings and bad echoes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from nunet.errors import PeerUnreachable, RemoteError, RemoteProtocolError
from nunet.net import kinds
from nunet.net.qos import PROBE_PREFIX, QosService
from nunet.testing.memnet import MemoryHub, MemoryNetwork, mem_addr

CHECKER = "did:key:checker"


@dataclass
class World:
    hub: MemoryHub
    checker: QosService
    nets: dict[str, MemoryNetwork]
    delays: dict[str, float] = field(default_factory=dict)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    hub = MemoryHub()
    delays: dict[str, float] = {}
    hub.delay = lambda a, b: delays.get(a, 0.0) + delays.get(b, 0.0)
    nets = {name: hub.node(f"did:key:{name}") for name in
            ("available", "near", "far", "down", "flaky")}
    checker_net = hub.node(CHECKER)
    # Manual rounds (interval is only used by run()); a short deadline keeps the test quick.
    checker = QosService(checker_net, interval=3600, samples=3, deadline=0.5)
    async with asyncio.TaskGroup() as tg:
        tasks = []
        for net in [*nets.values(), checker_net]:
            service = checker if net is checker_net else QosService(net, interval=3600)
            ready = asyncio.Event()
            tasks.append(tg.create_task(service.run(ready.set)))
            await ready.wait()
        for net in nets.values():
            checker_net.add_addresses(net.local_did, (mem_addr(net.local_did),))
        checker.watch(net.local_did for net in nets.values())
        yield World(hub, checker, nets, delays)
        for task in tasks:
            task.cancel()


def did(name: str) -> str:
    return f"did:key:{name}"


async def rounds(world: World, n: int) -> None:
    for _ in range(n):
        await world.checker.probe_round()


async def test_the_four_stories(world: World) -> None:
    world.delays[did("near")] = 0.002  # RTT ~4 ms
    world.delays[did("far")] = 0.12  # RTT ~240 ms
    world.hub.down.add(did("down"))
    await rounds(world, 2)
    scores = world.checker.scores()

    available = scores[did("available")]
    assert available.availability == 1.0
    assert available.consecutive_failures == 0
    assert available.probes == 6
    assert available.score == 100.0

    near = scores[did("near")]
    assert near.availability == 1.0
    assert near.ewma_rtt_ms is not None
    assert near.ewma_rtt_ms >= 4.0  # the link's delay, both ways, is in the RTT

    down = scores[did("down")]
    assert down.availability == 0.0
    assert down.consecutive_failures == 6
    assert down.score == 0.0
    assert down.latest_rtt_ms is None

    far = scores[did("far")]
    assert far.availability == 1.0
    assert far.ewma_rtt_ms is not None
    assert far.ewma_rtt_ms >= 240.0
    assert far.score < near.score  # slower answers, lower score
    assert far.score > down.score  # ... but a slow peer is still better than a dead one
    assert world.checker.score(did("far")) is not None
    assert world.checker.score(did("stranger")) is None
    stats = world.checker.stats()
    assert stats.probes_failed == 6
    assert stats.probes_sent == 5 * 6


async def test_a_peer_that_goes_down_falls_and_recovers_when_it_returns(world: World) -> None:
    flaky = did("flaky")
    await rounds(world, 2)
    healthy = world.checker.score(flaky)
    assert healthy is not None
    assert healthy.score == 100.0
    world.hub.down.add(flaky)
    await rounds(world, 1)
    fallen = world.checker.score(flaky)
    assert fallen is not None
    assert fallen.consecutive_failures == 3
    assert fallen.availability == 0.667  # 6 answers, then 3 failures
    assert fallen.score < 10.0
    world.hub.down.discard(flaky)
    trail = []
    for _ in range(4):
        await rounds(world, 1)
        trail.append(world.checker.score(flaky).score)  # type: ignore[union-attr]
    assert trail == sorted(trail)
    assert trail[0] > fallen.score
    assert trail[-1] >= 85.0  # 3 failures left in a window of 20: not banned, nearly full marks


async def test_no_answer_within_the_deadline_is_a_failure(world: World) -> None:
    slow = world.nets["flaky"]

    async def never_in_time(sender: str, payload: memoryview) -> bytes:
        await asyncio.sleep(5)
        return bytes(payload)

    slow.on_request(kinds.QOS, never_in_time)
    assert await world.checker.probe(slow.local_did) is None
    score = world.checker.score(slow.local_did)
    assert score is not None
    assert score.availability == 0.0


async def test_a_wrong_echo_is_a_failure(world: World) -> None:
    liar = world.nets["flaky"]

    async def wrong(sender: str, payload: memoryview) -> bytes:
        return PROBE_PREFIX + b"\x00" * 8

    liar.on_request(kinds.QOS, wrong)
    liar.on_request(kinds.PING, wrong)
    assert await world.checker.probe(liar.local_did) is None
    assert world.checker.stats().bad_echoes == 1
    with pytest.raises(RemoteProtocolError):
        await world.checker.ping(liar.local_did)


async def test_ping_measures_a_round_trip(world: World) -> None:
    world.delays[did("far")] = 0.05
    rtt = await world.checker.ping(did("far"))
    assert rtt >= 0.1
    world.hub.down.add(did("down"))
    with pytest.raises(PeerUnreachable):
        await world.checker.ping(did("down"))


async def test_echo_handlers_refuse_what_is_not_a_probe(world: World) -> None:
    net = world.hub.nodes[CHECKER]
    target = did("available")
    with pytest.raises(RemoteError):
        await net.request(target, kinds.QOS, b"not a probe", 1.0)
    with pytest.raises(RemoteError):
        await net.request(target, kinds.QOS, PROBE_PREFIX + bytes(100), 1.0)
    with pytest.raises(RemoteError):
        await net.request(target, kinds.PING, bytes(65), 1.0)
    assert await net.request(target, kinds.PING, b"hello", 1.0) == b"hello"


async def test_run_probes_on_its_own_and_peers_that_connect_are_probed() -> None:
    hub = MemoryHub()
    checker_net, peer_net, newcomer_net = (hub.node(did(n)) for n in ("c", "p", "n"))
    checker = QosService(checker_net, interval=0.01, samples=2, deadline=0.5)
    async with asyncio.TaskGroup() as tg:
        tasks = []
        for svc in (QosService(peer_net, interval=3600), QosService(newcomer_net, interval=3600),
                    checker):
            ready = asyncio.Event()
            tasks.append(tg.create_task(svc.run(ready.set)))
            await ready.wait()
        checker_net.add_addresses(did("p"), (mem_addr(did("p")),))
        checker.watch([did("p")])
        # The newcomer talks to the checker: connected peers are probed too.
        newcomer_net.add_addresses(did("c"), (mem_addr(did("c")),))
        await newcomer_net.request(did("c"), kinds.PING, b"hi", 1.0)

        def probed(name: str) -> Callable[[], bool]:
            def check() -> bool:
                score = checker.score(did(name))
                return score is not None and score.probes >= 4
            return check

        async with asyncio.timeout(5):
            while not (probed("p")() and probed("n")()):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert checker.score(did("p")).score == 100.0  # type: ignore[union-attr]
        for task in tasks:
            task.cancel()
