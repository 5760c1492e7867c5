"""The sans-I/O DHT core: serving requests, refusing and counting bad peer input."""

from __future__ import annotations

import msgspec
import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import ValidationError
from nunet.net.dht.core import DhtConfig, DhtCore
from nunet.net.dht.ids import id_to_bytes, node_id
from nunet.net.dht.records import Reason, RecordKind, encode_addrs, key_id, sign_record
from nunet.net.dht.simulation import swarm_keys
from nunet.net.dht.wire import (
    FindNode,
    FindValue,
    Nodes,
    PeerInfo,
    Ping,
    Pong,
    Store,
    Stored,
    Values,
)

NOW = 1_800_000_000.0
KEYS = swarm_keys(60, seed=b"core-tests")
ME, ALICE, MALLORY = KEYS[0], KEYS[1], KEYS[2]


def core_with_contacts(n: int = 40) -> DhtCore:
    core = DhtCore(ME, DhtConfig(k=8), NOW)
    for kp in KEYS[1 : n + 1]:
        ping = core.table.seen(kp.did, (f"/mem/{kp.did}",), NOW)
        if ping is not None:
            core.table.ping_result(ping, alive=True, now=NOW)
    return core


def peer_record(kp: KeyPair, seq: int = 1, expires: float = NOW + 600) -> msgspec.Struct:
    return sign_record(kp, RecordKind.PEER, kp.did, encode_addrs((f"/mem/{kp.did}",)), seq,
                       int(expires))


def test_ping_and_find_node() -> None:
    core = core_with_contacts()
    assert core.handle(ALICE.did, Ping(), NOW) == Pong()
    target = node_id(KEYS[30].did)
    reply = core.handle(ALICE.did, FindNode(id_to_bytes(target)), NOW)
    assert isinstance(reply, Nodes)
    expected = [c.did for c in core.table.closest(target, 8, exclude=ALICE.did)]
    assert [c.did for c in reply.contacts] == expected
    assert ALICE.did not in expected  # the asker is never told about itself
    assert core.stats().requests == {"Ping": 1, "FindNode": 1}


def test_store_then_find_value() -> None:
    core = core_with_contacts()
    record = peer_record(ALICE)
    assert core.handle(MALLORY.did, Store((record,)), NOW) == Stored(1)  # type: ignore[arg-type]
    reply = core.handle(KEYS[5].did, FindValue(RecordKind.PEER, ALICE.did), NOW)
    assert isinstance(reply, Values)
    assert reply.records == (record,)
    assert len(reply.contacts) == 8
    # Expired records are not served.
    later = core.handle(KEYS[5].did, FindValue(RecordKind.PEER, ALICE.did), NOW + 601)
    assert isinstance(later, Values)
    assert later.records == ()


def test_own_publication_is_served_and_beats_an_older_copy_of_itself() -> None:
    core = core_with_contacts()
    mine = core.publications.publish(RecordKind.PEER, ME.did, encode_addrs(("/mem/me",)), NOW)
    older = sign_record(ME, RecordKind.PEER, ME.did, encode_addrs(("/mem/old",)), 1, int(NOW) + 60)
    core.handle(ALICE.did, Store((older,)), NOW)
    reply = core.handle(ALICE.did, FindValue(RecordKind.PEER, ME.did), NOW)
    assert isinstance(reply, Values)
    assert reply.records == (mine,)


def test_every_bad_record_in_a_store_is_refused_and_counted_the_good_one_kept() -> None:
    core = core_with_contacts()
    good = peer_record(ALICE)
    forged = sign_record(MALLORY, RecordKind.PEER, ALICE.did, encode_addrs(("/mem/evil",)), 99,
                         int(NOW) + 60)
    expired = peer_record(ALICE, seq=5, expires=NOW - 1)
    bad_sig = msgspec.structs.replace(peer_record(KEYS[3]), signature=bytes(64))
    oversize = sign_record(MALLORY, RecordKind.VALUE, "k", bytes(5000), 1, int(NOW) + 60)
    malformed = msgspec.structs.replace(peer_record(KEYS[4]), kind=77)
    reply = core.handle(
        MALLORY.did, Store((forged, expired, bad_sig, oversize, malformed, good)), NOW
    )
    assert reply == Stored(1)
    assert core.stats().rejected == {
        "wrong_signer": 1, "expired": 1, "bad_signature": 1, "oversize": 1, "malformed": 1,
    }
    assert len(core.store) == 1
    assert core.store.get(RecordKind.PEER, ALICE.did, NOW) == [good]


def test_find_value_for_nonsense_keys_is_refused_and_counted() -> None:
    core = core_with_contacts()
    with pytest.raises(ValidationError):
        core.handle(ALICE.did, FindValue(RecordKind.PEER, "not a did"), NOW)
    with pytest.raises(ValidationError):
        core.handle(ALICE.did, FindValue(42, "k"), NOW)
    assert core.stats().bad_requests == 2


def test_lookup_replies_are_checked_record_by_record() -> None:
    core = core_with_contacts()
    lookup = core.start_lookup(key_id(RecordKind.PEER, ALICE.did), want=1)
    [first, *_] = lookup.next_queries()
    slot = (int(RecordKind.PEER), ALICE.did)
    stray = peer_record(KEYS[7])  # valid, but for another key
    forged = sign_record(MALLORY, RecordKind.PEER, ALICE.did, encode_addrs(("/mem/evil",)), 9,
                         int(NOW) + 60)
    bad_contact = PeerInfo("did:key:zzz", ("/mem/x",))
    reply = Values((stray, forged), (bad_contact, PeerInfo(KEYS[50].did, ("/mem/50",))))
    assert core.lookup_reply(lookup, first.did, reply, slot, NOW)
    assert lookup.records == {}
    assert not lookup.satisfied
    stats = core.stats()
    assert stats.rejected == {Reason.MISMATCH.value: 1, Reason.WRONG_SIGNER.value: 1}
    assert stats.bad_contacts == 1
    # A reply of the wrong type is not an answer.
    [second, *_] = lookup.next_queries() or [c for c in lookup.closest()]
    assert not core.lookup_reply(lookup, second.did, Pong(), slot, NOW)


def test_stats_report_hops_and_lookups() -> None:
    core = core_with_contacts()
    lookup = core.start_lookup(node_id(KEYS[9].did))
    for candidate in lookup.next_queries():
        lookup.on_reply(candidate.did, [])
    while not lookup.done:
        for candidate in lookup.next_queries():
            lookup.on_reply(candidate.did, [])
    core.finish_lookup(lookup, "node", NOW)
    stats = core.stats()
    assert stats.lookups == {"node": 1}
    assert stats.hops == {1: 1}
    assert stats.hops_mean == 1.0
    assert stats.routing_table_size == len(core.table)
    assert msgspec.json.decode(msgspec.json.encode(stats))["hops"] == {"1": 1}
