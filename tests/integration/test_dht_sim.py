"""The DHT on the in-memory network: many nodes in one loop, bootstrapping from one, finding
each other, providers and values; forged records, dead nodes, unreachable bootstrap peers,
ping-before-evict, and expiry/republish under a fake clock."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable

import msgspec
import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import InvalidDID, PeerUnreachable, RemoteError, ValidationError
from nunet.net import kinds
from nunet.net.api import PeerRecord
from nunet.net.dht import DhtConfig, DhtService, RecordKind
from nunet.net.dht.ids import bucket_index, node_id
from nunet.net.dht.records import Record, encode_addrs, record_addrs, sign_record
from nunet.net.dht.simulation import start, swarm, swarm_keys
from nunet.net.dht.wire import (
    FindValue,
    PeerInfo,
    Store,
    Stored,
    Values,
    decode_reply,
    decode_request,
    encode,
)
from nunet.testing.memnet import MemoryHub, mem_addr

log = logging.getLogger(__name__)


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Polls until `predicate()` is true: it watches state no event is set for."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_fifty_nodes_from_one_bootstrap_find_every_address_record() -> None:
    async with swarm(50) as nodes:
        assert all(node.bootstrapped for node in nodes)
        for a in nodes:
            found = await asyncio.gather(*(a.find_peer(b.did) for b in nodes))
            for b, record in zip(nodes, found, strict=True):
                assert record == PeerRecord(b.did, (mem_addr(b.did),))
        # find_peer fed the network's address book.
        assert nodes[3]._net.known_addresses(nodes[40].did) == (mem_addr(nodes[40].did),)
        assert sum(n.stats().query_failures for n in nodes) == 0


@pytest.mark.parametrize("n", [50, 200])
async def test_lookups_converge_in_log_n_hops(n: int, record_property: object) -> None:
    async with swarm(n) as nodes:
        rng = random.Random(n)
        hops, queries = [], []
        for _ in range(100):
            a, b = rng.sample(nodes, 2)
            result = await a.lookup_value(RecordKind.PEER, b.did)
            assert [r.publisher for r in result.records] == [b.did]
            hops.append(result.hops)
            queries.append(result.queries)
        mean = sum(hops) / len(hops)
        log.warning("DHT %d nodes: hops mean %.2f max %d; queries mean %.1f", n, mean,
                    max(hops), sum(queries) / len(queries))
        record_property("hops_mean", mean)  # type: ignore[operator]
        record_property("hops_max", max(hops))  # type: ignore[operator]
        assert mean <= math.log2(n) / 2
        assert max(hops) <= math.ceil(math.log2(n))
        assert sum(queries) / len(queries) < n / 2  # far from asking everyone


async def test_provider_records_are_found_with_their_addresses() -> None:
    async with swarm(40) as nodes:
        providers = nodes[5:10]
        for node in providers:
            assert await node.provide("executor/docker") > 0
        await nodes[7].provide("gpu/a100")
        for asker in (nodes[0], nodes[20], nodes[39], nodes[6]):
            found = await asker.find_providers("executor/docker")
            assert sorted(found, key=lambda p: p.did) == sorted(
                (PeerRecord(p.did, (mem_addr(p.did),)) for p in providers), key=lambda p: p.did
            )
        assert await nodes[30].find_providers("gpu/a100") == [
            PeerRecord(nodes[7].did, (mem_addr(nodes[7].did),))
        ]
        assert await nodes[30].find_providers("executor/firecracker") == []
        assert len(await nodes[31].find_providers("executor/docker", limit=2)) == 2
        assert nodes[8].unprovide("executor/docker")
        assert "provider:executor/docker" in nodes[5].routing_table_snapshot().publications


async def test_values_put_and_get() -> None:
    async with swarm(30) as nodes:
        assert await nodes[1].put("config/greeting", b"hello") > 0
        assert await nodes[2].put("config/greeting", b"hi") > 0
        assert await nodes[1].put("config/greeting", b"hello again") > 0  # replaces its own
        got = await nodes[25].get("config/greeting")
        assert sorted((r.publisher, r.value) for r in got) == sorted(
            [(nodes[1].did, b"hello again"), (nodes[2].did, b"hi")]
        )
        assert await nodes[25].get("nothing/here") == []
        with pytest.raises(ValidationError):
            await nodes[1].put("too/big", bytes(3000))
        with pytest.raises(ValidationError):
            await nodes[1].provide("k" * 300)
        with pytest.raises(ValidationError):
            await nodes[1].find_providers("")
        assert len(await nodes[26].get("config/greeting")) == 2  # the refusals changed nothing


async def test_forged_and_expired_records_do_not_poison_lookups() -> None:
    hub = MemoryHub()
    keys = swarm_keys(30)
    victim_key = keys[7]
    evil_keys = swarm_keys(8, seed=b"evil")
    evil_dids = {k.did for k in evil_keys}
    now = int(time.time())
    evil_addrs = encode_addrs(("/mem/evil",))

    def forgeries(attacker: KeyPair, key: str) -> tuple[Record, ...]:
        wrong_signer = sign_record(attacker, RecordKind.PEER, key, evil_addrs, 2**40, now + 60)
        genuine = sign_record(victim_key, RecordKind.PEER, key, encode_addrs(("/mem/v",)),
                              2**40, now + 60)
        tampered = msgspec.structs.replace(genuine, value=evil_addrs)
        replayed = sign_record(victim_key, RecordKind.PEER, key, evil_addrs, 2**41, now - 10)
        other_key = sign_record(attacker, RecordKind.PEER, attacker.did, evil_addrs, 1, now + 60)
        return (wrong_signer, tampered, replayed, other_key)

    def turn_evil(service: DhtService, attacker: KeyPair) -> None:
        honest_handler = service._on_request

        async def evil_handler(sender: str, payload: memoryview) -> bytes:
            request = decode_request(payload)
            reply = decode_reply(await honest_handler(sender, payload))
            if isinstance(request, FindValue) and isinstance(reply, Values):
                # Drops the genuine records it holds, serves forgeries and a bogus contact.
                bogus = (PeerInfo("did:key:zNotAKey", ("/mem/x",)),)
                return encode(Values(forgeries(attacker, request.key), bogus + reply.contacts))
            return encode(reply)

        service._net.on_request(kinds.DHT, evil_handler)

    # Attackers answer at once, honest nodes after 1 ms: whenever an attacker is asked, its
    # forgeries are what the lookup sees first.
    hub.delay = lambda a, b: 0.0 if a in evil_dids or b in evil_dids else 0.001
    async with swarm(30, hub=hub) as nodes, asyncio.TaskGroup() as tg:
        tasks, attackers = [], []
        for kp in evil_keys:
            attacker = DhtService(hub.node(kp.did), kp, [mem_addr(nodes[0].did)])
            tasks.append(await start(tg, attacker))
            await attacker.wait_bootstrapped()
            turn_evil(attacker, kp)
            attackers.append(attacker)
        victim = nodes[7]
        assert victim.did == victim_key.did
        genuine = PeerRecord(victim.did, (mem_addr(victim.did),))
        for node in nodes:
            if node is victim:
                continue
            result = await node.lookup_value(RecordKind.PEER, victim.did)
            assert [record_addrs(r) for r in result.records] == [genuine.addrs]
            assert await node.find_peer(victim.did) == genuine
        rejected: dict[str, int] = {}
        for node in nodes:
            for reason, count in node.stats().rejected.items():
                rejected[reason] = rejected.get(reason, 0) + count
        assert set(rejected) == {"wrong_signer", "bad_signature", "expired", "mismatch"}
        assert sum(n.stats().bad_contacts for n in nodes) > 0
        # Pushing forgeries with STORE does not work either.
        before = sum(len(n.core.store) for n in nodes)
        payload = encode(Store(forgeries(evil_keys[0], victim.did)))
        stored = decode_reply(await attackers[0]._net.request(nodes[3].did, kinds.DHT, payload, 1))
        assert stored == Stored(0)
        assert sum(len(n.core.store) for n in nodes) == before
        for task in tasks:
            task.cancel()


async def test_garbage_requests_are_refused_and_counted() -> None:
    async with swarm(3) as nodes:
        target = nodes[1]
        for payload in (b"", b"\xc1garbage", encode(FindValue(1, "not-a-did"))):
            with pytest.raises(RemoteError):
                await nodes[0]._net.request(target.did, kinds.DHT, payload, 1.0)
        assert target.stats().bad_requests == 3


async def test_dead_nodes_are_routed_around_and_dropped() -> None:
    hub = MemoryHub()
    config = DhtConfig(request_timeout=0.2, stale_after=1)
    async with swarm(40, hub=hub, config=config) as nodes:
        dead = nodes[20:30]
        dead_dids = {n.did for n in dead}
        for node in dead:
            hub.down.add(node.did)
        alive = [n for n in nodes if n not in dead]

        def dead_contacts() -> int:
            return sum(d in a.core.table for a in alive for d in dead_dids)

        before = dead_contacts()
        rng = random.Random(4)
        for _ in range(40):
            a, b = rng.sample(alive, 2)
            result = await a.lookup_value(RecordKind.PEER, b.did)
            assert [r.publisher for r in result.records] == [b.did]
        assert sum(n.stats().query_failures for n in alive) > 0
        # A contact that failed is dropped (stale_after=1) and, being dead, never heard again.
        assert dead_contacts() < before


async def test_unreachable_bootstrap_peer_is_logged_and_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="nunet.net.dht")
    hub = MemoryHub()
    key_a, key_b = swarm_keys(2, seed=b"bootstrap")
    seed_node = DhtService(hub.node(key_a.did), key_a)
    config = DhtConfig(bootstrap_backoff=0.01, bootstrap_backoff_max=0.04)
    ghost = "/mem/did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    joiner = DhtService(hub.node(key_b.did), key_b, [mem_addr(key_a.did), ghost], config=config,
                        rng=random.Random(1))
    async with asyncio.TaskGroup() as tg:
        tasks = [await start(tg, seed_node)]
        hub.down.add(key_a.did)
        tasks.append(await start(tg, joiner))  # starts (ready) though nobody answers
        assert not joiner.bootstrapped

        def warnings_about(addr: str) -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if f"bootstrap peer {addr} unreachable" in r.getMessage()]

        await eventually(lambda: len(warnings_about(mem_addr(key_a.did))) >= 4)
        delays = [float(m.rsplit("retrying in ", 1)[1].split()[0])
                  for m in warnings_about(mem_addr(key_a.did))]
        assert delays[:4] == [0.01, 0.02, 0.04, 0.04]  # doubles, then capped
        hub.down.discard(key_a.did)
        await asyncio.wait_for(joiner.wait_bootstrapped(), 5)
        assert key_a.did in joiner.core.table
        assert key_b.did in seed_node.core.table
        assert await joiner.find_peer(key_a.did) == PeerRecord(key_a.did, (mem_addr(key_a.did),))
        # The address nobody answers on is still being retried, without harm.
        count = len(warnings_about(ghost))
        await eventually(lambda: len(warnings_about(ghost)) > count)
        for task in tasks:
            task.cancel()


async def test_empty_routing_table_bootstraps_again() -> None:
    hub = MemoryHub()
    key_a, key_b = swarm_keys(2, seed=b"rejoin")
    config = DhtConfig(bootstrap_backoff=0.01, stale_after=1, request_timeout=0.1)
    a = DhtService(hub.node(key_a.did), key_a, config=config)
    b = DhtService(hub.node(key_b.did), key_b, [mem_addr(key_a.did)], config=config)
    async with asyncio.TaskGroup() as tg:
        tasks = [await start(tg, a), await start(tg, b)]
        await b.wait_bootstrapped()
        hub.down.add(key_a.did)
        result = await b.lookup_value(RecordKind.PEER, key_a.did)
        assert result.records == ()
        assert result.failures == 1
        assert len(b.core.table) == 0  # the only contact failed
        hub.down.discard(key_a.did)
        await b.maintain_once()
        await eventually(lambda: key_a.did in b.core.table)
        for task in tasks:
            task.cancel()


async def test_ping_before_evict_over_the_network() -> None:
    hub = MemoryHub()
    keys = swarm_keys(200, seed=b"evict")
    hub_key = keys[0]
    home = node_id(hub_key.did)
    far = [k for k in keys[1:] if bucket_index(home, node_id(k.did)) == 255]
    a, b, c = far[:3]
    config = DhtConfig(k=1, ping_timeout=0.2, request_timeout=0.2)
    hub_node = DhtService(hub.node(hub_key.did), hub_key, config=config)
    async with asyncio.TaskGroup() as tg:
        tasks = [await start(tg, hub_node)]

        async def join(kp: KeyPair) -> DhtService:
            svc = DhtService(hub.node(kp.did), kp, [mem_addr(hub_key.did)], config=config)
            tasks.append(await start(tg, svc))
            await svc.wait_bootstrapped()
            return svc

        await join(a)
        assert hub_node.core.table.contacts()[0].did == a.did
        hub.down.add(a.did)
        await join(b)  # bucket full: hub pings a, a is dead, b takes its place
        await eventually(lambda: b.did in hub_node.core.table)
        assert a.did not in hub_node.core.table
        await join(c)  # b answers its ping: it stays, c only waits as a replacement
        await eventually(lambda: hub_node.core.table.snapshot(0)[0].pinging is None)
        assert [x.did for x in hub_node.core.table.contacts()] == [b.did]
        assert hub_node.routing_table_snapshot().buckets[0].replacements >= 1
        for task in tasks:
            task.cancel()


async def test_records_expire_and_publishers_republish_under_a_fake_clock() -> None:
    clock = FakeClock()
    config = DhtConfig(record_ttl=600, republish_interval=200, maintenance_interval=3600,
                       refresh_interval=10**7)
    async with swarm(12, config=config, clock=clock) as nodes:
        keeper, quitter = nodes[3], nodes[4]
        assert await keeper.provide("executor/docker") > 0
        assert await quitter.provide("executor/docker") > 0
        quitter.unprovide("executor/docker")

        def holders(publisher: str) -> int:
            return sum(
                any(r.publisher == publisher
                    for r in n.core.store.get(RecordKind.PROVIDER, "executor/docker", clock()))
                for n in nodes
            )

        first_seq = max(r.seq for n in nodes
                        for r in n.core.store.get(RecordKind.PROVIDER, "executor/docker", clock())
                        if r.publisher == keeper.did)
        assert holders(keeper.did) > 0
        assert holders(quitter.did) > 0
        for step in range(4):  # 4 x 200 s: past the 600 s ttl of the first copies
            clock.now += 200
            for node in nodes:
                await node.maintain_once()
            log.debug("step %d: keeper held by %d", step, holders(keeper.did))
            assert holders(keeper.did) > 0
        assert holders(quitter.did) == 0  # withdrawn: its copies died at their expiry
        renewed = [r for n in nodes
                   for r in n.core.store.get(RecordKind.PROVIDER, "executor/docker", clock())]
        assert all(r.publisher == keeper.did and r.seq > first_seq for r in renewed)
        found = await nodes[10].find_providers("executor/docker")
        assert [p.did for p in found] == [keeper.did]
        assert sum(len(n.core.store) for n in nodes) > 0
        # The peer records were renewed as well: everyone is still findable.
        assert await nodes[0].find_peer(nodes[11].did) == PeerRecord(
            nodes[11].did, (mem_addr(nodes[11].did),))


async def test_snapshot_and_stats_are_json() -> None:
    async with swarm(10) as nodes:
        await nodes[2].find_peer(nodes[9].did)
        snap = msgspec.json.decode(msgspec.json.encode(nodes[2].routing_table_snapshot()))
        assert snap["did"] == nodes[2].did
        assert snap["size"] == sum(len(b["contacts"]) for b in snap["buckets"])
        assert snap["bootstrapped"] is True
        assert f"peer:{nodes[2].did}" in snap["publications"]
        stats = msgspec.json.decode(msgspec.json.encode(nodes[2].stats()))
        assert stats["lookups"]["self"] == 1
        assert stats["queries"] > 0


async def test_find_peer_edge_cases() -> None:
    async with swarm(10) as nodes:
        assert await nodes[0].find_peer(nodes[0].did) == PeerRecord(
            nodes[0].did, (mem_addr(nodes[0].did),))
        stranger = KeyPair.from_seed(b"\x42" * 32).did
        assert await nodes[0].find_peer(stranger) is None
        with pytest.raises(InvalidDID):
            await nodes[0].find_peer("did:key:not-base58!")


async def test_changed_listen_addresses_are_republished() -> None:
    async with swarm(15) as nodes:
        mover = nodes[6]
        await mover.provide("executor/docker")
        moved = ("/ip4/192.0.2.7/udp/9000/quic-v1",)
        mover._net.listen_addrs = lambda: moved  # type: ignore[method-assign]
        await mover.maintain_once()
        assert await nodes[1].find_peer(mover.did) == PeerRecord(mover.did, moved)
        assert await nodes[2].find_providers("executor/docker") == [PeerRecord(mover.did, moved)]


async def test_connect_adds_a_peer_and_joins_through_it() -> None:
    hub = MemoryHub()
    keys = swarm_keys(3, seed=b"connect")
    a, b, ghost = (DhtService(hub.node(k.did), k) for k in keys)
    async with asyncio.TaskGroup() as tg:
        tasks = [await start(tg, a), await start(tg, b), await start(tg, ghost)]
        hub.down.add(ghost.did)
        with pytest.raises(PeerUnreachable):
            await b.connect(mem_addr(ghost.did))
        assert await b.connect(mem_addr(a.did)) == a.did
        assert a.did in b.core.table
        assert b.did in a.core.table
        assert await a.find_peer(b.did) == PeerRecord(b.did, (mem_addr(b.did),))
        assert await b.connect(mem_addr(b.did)) == b.did  # ourselves: nothing to do
        for task in tasks:
            task.cancel()


async def test_advertised_addresses_leave_out_wildcards() -> None:
    hub = MemoryHub()
    key_a, key_b = swarm_keys(2, seed=b"advertise")
    wild = ("/ip4/0.0.0.0/udp/9000/quic-v1", "/ip6/::/udp/9000/quic-v1", mem_addr(key_b.did))
    a = DhtService(hub.node(key_a.did), key_a)
    b = DhtService(hub.node(key_b.did), key_b, [mem_addr(key_a.did)], advertise=lambda: wild)
    async with asyncio.TaskGroup() as tg:
        tasks = [await start(tg, a), await start(tg, b)]
        await b.wait_bootstrapped()
        assert await a.find_peer(b.did) == PeerRecord(b.did, (mem_addr(key_b.did),))
        assert a.core.table.get(b.did).addrs == (mem_addr(key_b.did),)  # type: ignore[union-attr]
        for task in tasks:
            task.cancel()


async def test_a_node_listed_as_its_own_bootstrap_peer_does_not_wait_for_itself() -> None:
    hub = MemoryHub()
    [key] = swarm_keys(1, seed=b"self-bootstrap")
    node = DhtService(hub.node(key.did), key, [mem_addr(key.did)])
    async with asyncio.TaskGroup() as tg:
        task = await start(tg, node)
        await asyncio.wait_for(node.wait_bootstrapped(), 5)
        assert len(node.core.table) == 0
        task.cancel()
