"""Whatever a peer sends, the router answers with actions (a penalty, a reply), never an
exception, and delivers nothing it could not verify."""

from __future__ import annotations

import random
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nunet.crypto.keys import KeyPair
from nunet.net.gossip import Deliver, Disconnect, GossipRouter, Penalise, Send
from nunet.net.gossip.wire import (
    Graft,
    IHave,
    IWant,
    MessageBody,
    Prune,
    Publish,
    Subscribe,
    Unsubscribe,
    encode_rpc,
    sign_body,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Generating nested structures is what costs here, not the router: fewer, smaller examples.
FUZZ_NESTED = settings(FUZZ, max_examples=120)
START = 1_700_000_000.0
LOCAL = KeyPair.from_seed(b"\x01" * 32)
PEER = KeyPair.from_seed(b"\x02" * 32)
TOPICS = ["/nunet/hello", "/nunet/status", "x"]


def router() -> GossipRouter:
    r = GossipRouter(LOCAL, rng=random.Random(0))
    for topic in TOPICS[:2]:
        r.subscribe(topic, START)
    r.peer_connected(PEER.did, START)
    return r


def feed(r: GossipRouter, data: bytes, now: float = START) -> list[Any]:
    actions = r.received(PEER.did, data, now)
    assert all(isinstance(a, Send | Penalise | Disconnect) for a in actions)
    return actions


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    r = router()
    feed(r, data)
    r.heartbeat(START + 1)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=70),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@FUZZ_NESTED
@given(st.lists(st.tuples(st.integers(-1, 8), st.lists(msgpack_values, max_size=4)), max_size=6))
def test_item_shaped_garbage(items: list[tuple[int, list[Any]]]) -> None:
    """Arrays that look like items (a small tag, then fields of any type)."""
    r = router()
    feed(r, msgspec.msgpack.encode([[tag, *fields] for tag, fields in items]))


ids = st.binary(min_size=32, max_size=32)
topics = st.sampled_from(TOPICS) | st.text(min_size=1, max_size=8)
bodies = st.builds(
    lambda pub, seq, topic, data, dt: msgspec.msgpack.encode(
        MessageBody(pub, seq, topic, data, START + dt)
    ),
    st.sampled_from([PEER.did, LOCAL.did, "did:key:z6Mk", "nobody"]),
    st.integers(0, 2**64 - 1),
    topics,
    st.binary(max_size=40),
    st.floats(-200, 200),
) | st.binary(max_size=80)
items = st.one_of(
    st.builds(Publish, bodies, st.binary(min_size=64, max_size=64)),
    st.builds(Subscribe, topics),
    st.builds(Unsubscribe, topics),
    st.builds(Graft, topics),
    st.builds(Prune, topics, st.floats(0, 1e9)),
    st.builds(IHave, topics, st.lists(ids, max_size=8)),
    st.builds(IWant, st.lists(ids, max_size=8)),
)


@FUZZ_NESTED
@given(st.lists(st.lists(items, max_size=8), max_size=5), st.floats(0, 200))
def test_well_formed_but_unsigned_items(batches: list[list[Any]], dt: float) -> None:
    """Valid RPCs with forged or random signatures: answered, never delivered."""
    r = router()
    for batch in batches:
        feed(r, encode_rpc(batch))
    r.heartbeat(START + dt)
    assert r.stats.delivered == 0


@FUZZ_NESTED
@given(st.lists(items, max_size=8), st.integers(0, 40))
def test_signed_messages_among_garbage(batch: list[Any], at: int) -> None:
    """A genuine message is delivered exactly once wherever it sits among junk."""
    r = router()
    msg_id, genuine = sign_body(PEER, MessageBody(PEER.did, 1, TOPICS[0], b"ok", START + 30))
    batch.insert(min(at, len(batch)), genuine)
    delivered = [a for a in feed_all(r, encode_rpc(batch)) if isinstance(a, Deliver)]
    assert [d.message.id for d in delivered] == [msg_id] or r.stats.graylisted
    assert not [a for a in feed_all(r, encode_rpc([genuine])) if isinstance(a, Deliver)]


def feed_all(r: GossipRouter, data: bytes) -> list[Any]:
    return list(r.received(PEER.did, data, START))
