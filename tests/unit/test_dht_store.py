"""Record store (N per key, newest seq per publisher, bounded, expiry) and own publications
(republish with a fake clock)."""

from __future__ import annotations

import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import ValidationError
from nunet.net.dht.publish import Publications
from nunet.net.dht.records import Record, RecordKind, check_record, encode_addrs, sign_record
from nunet.net.dht.store import RecordStore

T0 = 1_800_000_000.0
KEYS = [KeyPair.from_seed(bytes([i]) * 32) for i in range(1, 8)]


def provider(kp: KeyPair, seq: int = 1, expires: float = T0 + 100, key: str = "executor/docker"
             ) -> Record:
    return sign_record(kp, RecordKind.PROVIDER, key, encode_addrs(()), seq, int(expires))


def test_newest_seq_per_publisher_wins() -> None:
    store = RecordStore()
    assert store.put(provider(KEYS[0], seq=5))
    assert not store.put(provider(KEYS[0], seq=4))  # a rollback is ignored
    assert not store.put(provider(KEYS[0], seq=5, expires=T0 + 999))  # same seq: first one stays
    assert store.put(provider(KEYS[0], seq=6))
    assert [r.seq for r in store.get(RecordKind.PROVIDER, "executor/docker", T0)] == [6]
    assert len(store) == 1


def test_at_most_n_records_per_key_and_the_longest_lived_stay() -> None:
    store = RecordStore(max_per_key=3)
    for i, kp in enumerate(KEYS[:3]):
        assert store.put(provider(kp, expires=T0 + 100 + i))
    assert not store.put(provider(KEYS[3], expires=T0 + 50))  # would die first: refused
    assert store.put(provider(KEYS[4], expires=T0 + 500))  # displaces the one expiring soonest
    held = {r.publisher for r in store.get(RecordKind.PROVIDER, "executor/docker", T0)}
    assert held == {KEYS[1].did, KEYS[2].did, KEYS[4].did}
    assert len(store) == 3


def test_total_records_are_bounded() -> None:
    store = RecordStore(max_per_key=10, max_records=2)
    assert store.put(provider(KEYS[0], key="a"))
    assert store.put(provider(KEYS[0], key="b"))
    assert not store.put(provider(KEYS[0], key="c"))
    assert not store.put(provider(KEYS[1], key="a"))
    assert store.put(provider(KEYS[0], seq=2, key="a"))  # replacing never needs room
    assert len(store) == 2
    assert store.keys() == 2


def test_expired_records_are_not_returned_and_expire_drops_them() -> None:
    store = RecordStore()
    store.put(provider(KEYS[0], expires=T0 + 10))
    store.put(provider(KEYS[1], expires=T0 + 20))
    store.put(provider(KEYS[2], expires=T0 + 10, key="other"))
    assert len(store.get(RecordKind.PROVIDER, "executor/docker", T0 + 15)) == 1
    assert store.expire(T0 + 15) == 2
    assert len(store) == 1
    assert store.keys() == 1
    assert store.get(RecordKind.PROVIDER, "other", T0) == []
    assert store.remove(RecordKind.PROVIDER, "executor/docker", KEYS[1].did)
    assert not store.remove(RecordKind.PROVIDER, "executor/docker", KEYS[1].did)
    assert len(store) == 0


def test_publications_renew_on_schedule_with_a_fake_clock() -> None:
    pubs = Publications(KEYS[0], ttl=3600, republish_interval=1200)
    first = pubs.publish(RecordKind.PEER, KEYS[0].did, encode_addrs(("/mem/a",)), T0)
    assert first.expires == int(T0) + 3600
    assert check_record(first, T0) is None
    assert pubs.due(T0 + 1199) == []
    renewed = pubs.due(T0 + 1200)
    assert len(renewed) == 1
    again = renewed[0]
    assert again.seq > first.seq
    assert again.expires == int(T0 + 1200) + 3600
    assert again.value == first.value
    assert check_record(again, T0 + 1200) is None
    assert pubs.get(RecordKind.PEER, KEYS[0].did) == again
    assert pubs.due(T0 + 1300) == []  # the clock of the renewal restarted
    # A store holding the first copy takes the renewal and the old one could not come back.
    store = RecordStore()
    store.put(first)
    assert store.put(again)
    assert not store.put(first)
    # Past its expiry the first copy is refused outright.
    assert check_record(first, first.expires) is not None


def test_seq_grows_even_when_the_clock_stands_still() -> None:
    pubs = Publications(KEYS[0], ttl=60, republish_interval=30)
    seqs = [pubs.publish(RecordKind.VALUE, "k", b"v", T0).seq for _ in range(3)]
    assert seqs == sorted(set(seqs))
    assert seqs[0] == int(T0 * 1000)  # ms clock: a restarted node still outranks its old records


def test_withdrawn_publications_are_not_republished() -> None:
    pubs = Publications(KEYS[0], ttl=60, republish_interval=30)
    pubs.publish(RecordKind.PROVIDER, "gpu/a100", b"\x90", T0)
    assert pubs.withdraw(RecordKind.PROVIDER, "gpu/a100")
    assert not pubs.withdraw(RecordKind.PROVIDER, "gpu/a100")
    assert pubs.due(T0 + 100) == []
    assert pubs.records() == []


def test_republish_interval_must_be_shorter_than_ttl() -> None:
    with pytest.raises(ValidationError):
        Publications(KEYS[0], ttl=60, republish_interval=60)
