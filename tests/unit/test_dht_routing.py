"""Routing table: k-buckets, LRU order, ping-before-evict, stale contacts, nearest contacts."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nunet.errors import InvalidDID
from nunet.net.dht.ids import bucket_index, node_id
from nunet.net.dht.routing import RoutingTable
from nunet.net.dht.simulation import swarm_keys

KEYS = swarm_keys(400, seed=b"routing-tests")
LOCAL = KEYS[0].did
LOCAL_ID = node_id(LOCAL)


def in_bucket(index: int) -> list[str]:
    return [k.did for k in KEYS[1:] if bucket_index(LOCAL_ID, node_id(k.did)) == index]


FAR = in_bucket(255)  # about half of all keys
NEAR = in_bucket(254)


def table(k: int = 3, stale_after: int = 3) -> RoutingTable:
    return RoutingTable(LOCAL, now=0.0, k=k, stale_after=stale_after)


def bucket_dids(t: RoutingTable, index: int) -> list[str]:
    for info in t.snapshot(0.0):
        if info.index == index:
            return [c.did for c in info.contacts]
    return []


def test_ids_come_from_the_key_and_buckets_from_the_top_differing_bit() -> None:
    assert node_id(LOCAL).bit_length() <= 256
    assert bucket_index(5, 5) == -1
    assert bucket_index(0, 1) == 0
    assert bucket_index(0, 1 << 255) == 255
    with pytest.raises(InvalidDID):
        table().seen("did:key:nonsense", ("/mem/x",), 1.0)


def test_contacts_are_added_until_the_bucket_is_full_in_lru_order() -> None:
    t = table()
    for i, did in enumerate(FAR[:3]):
        assert t.seen(did, (f"/mem/{i}",), float(i)) is None
    assert bucket_dids(t, 255) == FAR[:3]
    assert t.seen(FAR[0], (), 5.0) is None  # heard again: most recently seen now
    assert bucket_dids(t, 255) == [FAR[1], FAR[2], FAR[0]]
    assert t.get(FAR[0]) is not None
    assert t.get(FAR[0]).addrs == ("/mem/0",)  # type: ignore[union-attr]  (kept when none given)
    assert t.seen(LOCAL, ("/mem/me",), 6.0) is None
    assert LOCAL not in t
    assert len(t) == 3


def test_full_bucket_asks_to_ping_the_least_recently_seen_and_keeps_it_if_alive() -> None:
    t = table()
    for did in FAR[:3]:
        t.seen(did, ("/mem/a",), 1.0)
    assert t.seen(FAR[3], ("/mem/b",), 2.0) == FAR[0]
    assert FAR[3] not in t
    # One ping per bucket at a time: more newcomers only wait as replacements.
    assert t.seen(FAR[4], ("/mem/c",), 2.0) is None
    t.ping_result(FAR[0], alive=True, now=3.0)
    assert bucket_dids(t, 255) == [FAR[1], FAR[2], FAR[0]]
    assert FAR[3] not in t
    # The next newcomer triggers a ping of the (new) least recently seen.
    assert t.seen(FAR[5], ("/mem/d",), 4.0) == FAR[1]


def test_dead_least_recently_seen_is_replaced_by_the_freshest_newcomer() -> None:
    t = table()
    for did in FAR[:3]:
        t.seen(did, ("/mem/a",), 1.0)
    assert t.seen(FAR[3], ("/mem/new3",), 2.0) == FAR[0]
    assert t.seen(FAR[4], ("/mem/new4",), 2.5) is None
    t.ping_result(FAR[0], alive=False, now=3.0)
    assert FAR[0] not in t
    assert bucket_dids(t, 255) == [FAR[1], FAR[2], FAR[4]]
    assert t.get(FAR[4]).addrs == ("/mem/new4",)  # type: ignore[union-attr]
    assert t.snapshot(3.0)[0].replacements == 1
    assert t.snapshot(3.0)[0].pinging is None


def test_other_buckets_are_independent() -> None:
    t = table(k=1)
    t.seen(FAR[0], ("/mem/a",), 1.0)
    assert t.seen(NEAR[0], ("/mem/b",), 1.0) is None
    assert NEAR[0] in t


def test_contacts_that_keep_failing_are_dropped_and_any_answer_forgives() -> None:
    t = table(stale_after=2)
    for did in FAR[:3]:
        t.seen(did, ("/mem/a",), 1.0)
    t.seen(FAR[3], ("/mem/r",), 1.0)  # a replacement waits (and a ping is asked for)
    t.failed(FAR[1])
    t.seen(FAR[1], (), 2.0)  # it answered after all
    t.failed(FAR[1])
    assert FAR[1] in t
    t.failed(FAR[1])
    assert FAR[1] not in t
    assert FAR[3] in t  # the replacement took the place
    t.failed("did:key:unknown")  # unknown contacts: nothing happens
    assert t.remove(FAR[3])
    assert not t.remove(FAR[3])


def test_empty_buckets_disappear() -> None:
    t = table(stale_after=1)
    t.seen(NEAR[0], ("/mem/a",), 1.0)
    t.failed(NEAR[0])
    assert t.snapshot(1.0) == []
    assert len(t) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 256) - 1), st.integers(1, 40), st.booleans())
def test_closest_matches_a_brute_force_sort(target: int, n: int, exclude_one: bool) -> None:
    t = table(k=8)
    for i, kp in enumerate(KEYS[1:]):
        did_to_ping = t.seen(kp.did, ("/mem/x",), float(i))
        if did_to_ping is not None:
            t.ping_result(did_to_ping, alive=i % 2 == 0, now=float(i))
    everyone = t.contacts()
    exclude = everyone[len(everyone) // 2].did if exclude_one else None
    pool = [c for c in everyone if c.did != exclude]
    expected = heapq.nsmallest(n, pool, key=lambda c: c.id ^ target)
    assert [c.did for c in t.closest(target, n, exclude)] == [c.did for c in expected]


def test_closest_to_ourselves_starts_with_the_nearest_bucket() -> None:
    t = table(k=20)
    for kp in KEYS[1:]:
        t.seen(kp.did, ("/mem/x",), 0.0)
    got = t.closest(LOCAL_ID, 5)
    assert got == sorted(t.contacts(), key=lambda c: c.id ^ LOCAL_ID)[:5]


def test_refresh_targets_fall_in_the_stale_buckets_ranges() -> None:
    t = table(k=20)
    for kp in KEYS[1:60]:
        t.seen(kp.did, ("/mem/x",), 0.0)
    rng = random.Random(3)
    assert t.refresh_targets(now=10.0, interval=100.0, rng=rng) == []  # young table: nothing
    targets = t.refresh_targets(now=100.0, interval=100.0, rng=rng)
    lowest = min(info.index for info in t.snapshot(0.0))
    assert sorted(bucket_index(LOCAL_ID, x) for x in targets) == list(range(lowest, 256))
    t.touch(targets[-1], 150.0)
    assert t.refresh_targets(now=199.0, interval=100.0, rng=rng) == []  # refreshed at 100
    again = t.refresh_targets(now=240.0, interval=100.0, rng=rng)
    assert bucket_index(LOCAL_ID, targets[-1]) not in {bucket_index(LOCAL_ID, x) for x in again}
