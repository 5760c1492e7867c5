"""The lookup state machine, driven by hand on a synthetic network (ids only, no I/O)."""

from __future__ import annotations

import math
import random

import pytest

from nunet.net.dht.ids import ID_BITS, bucket_index
from nunet.net.dht.lookup import Lookup, Peer, State
from nunet.net.dht.records import Record

K = 20
ALPHA = 3


class SyntheticNet:
    """n nodes with random ids; each knows up to k random nodes in every bucket of its own
    (the shape of a warmed-up Kademlia table)."""

    def __init__(self, n: int, seed: int = 1, k: int = K) -> None:
        rng = random.Random(seed)
        self.ids = {f"n{i}": rng.getrandbits(ID_BITS) for i in range(n)}
        self.k = k
        self.tables: dict[str, list[str]] = {}
        for did, ident in self.ids.items():
            buckets: dict[int, list[str]] = {}
            for other, oid in self.ids.items():
                if other != did:
                    buckets.setdefault(bucket_index(ident, oid), []).append(other)
            self.tables[did] = [
                d for members in buckets.values() for d in rng.sample(members, min(k, len(members)))
            ]

    def peer(self, did: str) -> Peer:
        return (did, self.ids[did], (f"/mem/{did}",))

    def closest_known(self, did: str, target: int, exclude: str | None = None) -> list[Peer]:
        known = [d for d in self.tables[did] if d != exclude]
        return [self.peer(d) for d in sorted(known, key=lambda d: self.ids[d] ^ target)[: self.k]]

    def true_closest(self, target: int, n: int, alive: set[str] | None = None) -> list[str]:
        pool = [d for d in self.ids if alive is None or d in alive]
        return sorted(pool, key=lambda d: self.ids[d] ^ target)[:n]

    def start(self, origin: str, target: int, **kwargs: int) -> Lookup:
        return Lookup(
            target, self.closest_known(origin, target), exclude=origin, k=self.k,
            alpha=ALPHA, **kwargs,
        )


def drive(
    net: SyntheticNet,
    lookup: Lookup,
    *,
    down: frozenset[str] | set[str] = frozenset(),
    values: dict[str, list[Record]] | None = None,
    rng: random.Random | None = None,
) -> list[str]:
    """Runs the lookup, answering in a random order; returns the DIDs in query order and checks
    the alpha limit and ask-once rule on the way."""
    rng = rng or random.Random(0)
    asked: list[str] = []
    waiting: list[str] = []
    while not lookup.done:
        new = lookup.next_queries()
        asked += [c.did for c in new]
        waiting += [c.did for c in new]
        assert len(waiting) <= ALPHA
        assert lookup.in_flight == len(waiting)
        if not waiting:
            break
        did = waiting.pop(rng.randrange(len(waiting)))
        if did in down:
            lookup.on_failure(did)
        else:
            got = (values or {}).get(did, [])
            lookup.on_reply(did, net.closest_known(did, lookup.target, exclude=did), got)
    assert len(asked) == len(set(asked)), "a candidate was asked twice"
    return asked


def test_node_lookup_converges_on_the_true_k_closest() -> None:
    net = SyntheticNet(500)
    rng = random.Random(5)
    hops = []
    for _ in range(40):
        origin = rng.choice(list(net.ids))
        target = rng.getrandbits(ID_BITS)
        lookup = net.start(origin, target)
        asked = drive(net, lookup, rng=rng)
        expected = [d for d in net.true_closest(target, K + 1) if d != origin][:K]
        assert [c.did for c in lookup.closest()] == expected
        assert all(c.state is State.REPLIED for c in lookup.closest())
        assert lookup.queries == len(asked)
        hops.append(lookup.hops)
    assert max(hops) <= math.ceil(math.log2(500))  # O(log N), in practice 2-3 here


def test_lookup_routes_around_nodes_that_fail() -> None:
    net = SyntheticNet(300, seed=2)
    rng = random.Random(9)
    down = set(rng.sample(list(net.ids), 60))
    alive = set(net.ids) - down
    origin = next(d for d in net.ids if d in alive)
    target = rng.getrandbits(ID_BITS)
    lookup = net.start(origin, target)
    drive(net, lookup, down=down, rng=rng)
    expected = [d for d in net.true_closest(target, K + 1, alive) if d != origin][:K]
    assert [c.did for c in lookup.closest()] == expected
    assert lookup.failures > 0
    assert lookup.failures == sum(1 for d in down if d in lookup._by_did
                                  and lookup._by_did[d].state is State.FAILED)


def test_value_lookup_stops_once_enough_publishers_answered() -> None:
    net = SyntheticNet(300, seed=3)
    target = random.Random(1).getrandbits(ID_BITS)
    holders = net.true_closest(target, 5)
    origin = next(d for d in net.ids if d not in holders)
    rec = {h: [Record(2, "k", b"", f"pub-{h}", 1, 0, b"")] for h in holders}
    lookup = net.start(origin, target, want=2)
    drive(net, lookup, values=rec)
    assert lookup.done
    assert lookup.satisfied
    assert len(lookup.records) >= 2
    assert lookup.next_queries() == []
    assert lookup.hops >= 1


def test_value_lookup_keeps_the_newest_seq_per_publisher() -> None:
    lookup = Lookup(0, [("a", 1, ()), ("b", 2, ())], exclude="me", k=K, alpha=ALPHA, want=5)
    lookup.next_queries()
    old = Record(2, "k", b"old", "pub", 1, 0, b"")
    new = Record(2, "k", b"new", "pub", 2, 0, b"")
    lookup.on_reply("b", [], [new])
    lookup.on_reply("a", [], [old])
    assert lookup.records == {"pub": new}
    assert lookup.done  # everyone answered, fewer values than wanted: over anyway


def test_no_seeds_means_done_at_once() -> None:
    lookup = Lookup(123, [], exclude="me")
    assert lookup.done
    assert lookup.next_queries() == []
    assert lookup.closest() == []
    assert lookup.hops == 0


def test_self_and_late_or_unknown_answers_are_ignored() -> None:
    lookup = Lookup(0, [("me", 0, ()), ("a", 5, ())], exclude="me", k=K, alpha=ALPHA)
    [only] = lookup.next_queries()
    assert only.did == "a"
    lookup.on_reply("stranger", [("x", 1, ())])
    lookup.on_failure("stranger")
    lookup.on_reply("a", [("me", 0, ()), ("b", 3, ("/mem/b",))])
    lookup.on_reply("a", [("c", 1, ())])  # a second answer from the same node: ignored
    assert lookup.in_flight == 0
    [nxt] = lookup.next_queries()
    assert (nxt.did, nxt.hop, nxt.addrs) == ("b", 2, ("/mem/b",))
    lookup.on_failure("b")
    lookup.on_failure("b")
    assert lookup.in_flight == 0
    assert lookup.done
    assert [c.did for c in lookup.closest()] == ["a"]


def test_alpha_bounds_the_queries_in_flight() -> None:
    seeds = [(f"s{i}", i + 1, ()) for i in range(10)]
    lookup = Lookup(0, seeds, exclude="me", k=K, alpha=ALPHA)
    first = lookup.next_queries()
    assert [c.did for c in first] == ["s0", "s1", "s2"]  # nearest first
    assert lookup.next_queries() == []
    lookup.on_reply("s1", [])
    assert [c.did for c in lookup.next_queries()] == ["s3"]


def test_only_the_k_nearest_are_ever_worth_asking() -> None:
    seeds = [(f"s{i}", i + 1, ()) for i in range(5)]
    lookup = Lookup(0, seeds, exclude="me", k=2, alpha=5)
    assert [c.did for c in lookup.next_queries()] == ["s0", "s1"]
    lookup.on_reply("s0", [])
    lookup.on_reply("s1", [])
    assert lookup.done
    lookup2 = Lookup(0, seeds, exclude="me", k=2, alpha=5)
    lookup2.next_queries()
    lookup2.on_failure("s0")
    assert [c.did for c in lookup2.next_queries()] == ["s2"]  # a failure lets the next in


@pytest.mark.parametrize("n", [50, 200, 1000])
def test_hops_grow_logarithmically(n: int) -> None:
    net = SyntheticNet(n, seed=n)
    rng = random.Random(n)
    hops = []
    for _ in range(20):
        origin = rng.choice(list(net.ids))
        target = net.ids[rng.choice(list(net.ids))]
        lookup = net.start(origin, target)
        drive(net, lookup, rng=rng)
        hops.append(lookup.hops)
    assert sum(hops) / len(hops) <= math.log2(n) / 2
