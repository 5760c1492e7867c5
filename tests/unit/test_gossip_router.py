"""The gossip router core, sans I/O: routers wired together in memory with a fake clock."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable

import msgspec
import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import LocalProtocolError, ValidationError
from nunet.net.gossip import (
    Action,
    Deliver,
    Disconnect,
    GossipParams,
    GossipRouter,
    Message,
    Penalise,
    Send,
    Verdict,
)
from nunet.net.gossip.wire import (
    Graft,
    IHave,
    Item,
    IWant,
    MessageBody,
    Prune,
    Publish,
    Subscribe,
    Unsubscribe,
    decode_rpc,
    encode_rpc,
    sign_body,
)

T = "/nunet/hello"
T2 = "/nunet/status"
START = 1_700_000_000.0


def key(i: int) -> KeyPair:
    return KeyPair.from_seed(bytes([i + 1]) * 32)


class Net:
    """Routers, links and a FIFO of in-flight RPCs; `run()` delivers until quiet."""

    def __init__(self, n: int, params: GossipParams | None = None, seed: int = 1) -> None:
        self.keys = [key(i) for i in range(n)]
        self.ids = [k.did for k in self.keys]
        self.params = params or GossipParams()
        self.routers = {
            k.did: GossipRouter(k, self.params, rng=random.Random(seed + i))
            for i, k in enumerate(self.keys)
        }
        self.now = START
        self.links: set[frozenset[str]] = set()
        self.cut: set[tuple[str, str]] = set()  # one-way message loss
        self.wire: deque[tuple[str, str, bytes]] = deque()
        self.delivered: dict[str, list[Message]] = {d: [] for d in self.ids}
        self.events: dict[str, list[Action]] = {d: [] for d in self.ids}
        self.sent_items: list[tuple[str, str, Item]] = []

    def __getitem__(self, i: int) -> GossipRouter:
        return self.routers[self.ids[i]]

    def apply(self, node: str, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.wire.append((node, action.peer, action.data))
            elif isinstance(action, Deliver):
                self.delivered[node].append(action.message)
            else:
                self.events[node].append(action)

    def link(self, a: int, b: int) -> None:
        x, y = self.ids[a], self.ids[b]
        self.links.add(frozenset((x, y)))
        self.apply(x, self.routers[x].peer_connected(y, self.now))
        self.apply(y, self.routers[y].peer_connected(x, self.now))

    def unlink(self, a: int, b: int) -> None:
        x, y = self.ids[a], self.ids[b]
        self.links.discard(frozenset((x, y)))
        self.apply(x, self.routers[x].peer_disconnected(y, self.now))
        self.apply(y, self.routers[y].peer_disconnected(x, self.now))

    def run(self) -> None:
        while self.wire:
            src, dst, data = self.wire.popleft()
            if frozenset((src, dst)) not in self.links or (src, dst) in self.cut:
                continue
            for item in decode_rpc(data):
                self.sent_items.append((src, dst, item))
            self.apply(dst, self.routers[dst].received(src, data, self.now))

    def heartbeat(self, rounds: int = 1, dt: float = 1.0) -> None:
        for _ in range(rounds):
            self.now += dt
            for did, router in self.routers.items():
                self.apply(did, router.heartbeat(self.now))
            self.run()

    def subscribe(self, nodes: Iterable[int], topic: str = T) -> None:
        for i in nodes:  # one after the other: each sees the earlier ones' announcements
            self.apply(self.ids[i], self[i].subscribe(topic, self.now))
            self.run()

    def publish(self, i: int, data: bytes, topic: str = T) -> bytes:
        msg_id, actions = self[i].publish(topic, data, self.now)
        self.apply(self.ids[i], actions)
        self.run()
        return msg_id

    def items(self, kind: type, src: int | None = None, dst: int | None = None) -> list[Item]:
        return [
            item
            for s, d, item in self.sent_items
            if isinstance(item, kind)
            and (src is None or s == self.ids[src])
            and (dst is None or d == self.ids[dst])
        ]


def full_mesh(n: int, params: GossipParams | None = None) -> Net:
    net = Net(n, params)
    for a in range(n):
        for b in range(a + 1, n):
            net.link(a, b)
    net.run()
    return net


class Peer:
    """A hand-driven remote peer talking to one router: crafts RPCs, reads what it gets back."""

    def __init__(self, router: GossipRouter, i: int = 90, net: Net | None = None) -> None:
        self.net = net  # where the router's sends to others go, if anywhere
        self.key = key(i)
        self.did = self.key.did
        self.router = router
        self.inbox: list[Item] = []
        self.other: list[Action] = []
        self.delivered: list[Message] = []
        self.absorb(router.peer_connected(self.did, START))

    def absorb(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if action.peer == self.did:
                    self.inbox.extend(decode_rpc(action.data))
                elif self.net is not None:
                    self.net.wire.append((self.router.local, action.peer, action.data))
            elif isinstance(action, Deliver):
                self.delivered.append(action.message)
            else:
                self.other.append(action)

    def send(self, items: list[Item], now: float = START) -> None:
        self.absorb(self.router.received(self.did, encode_rpc(list(items)), now))

    def send_raw(self, data: bytes, now: float = START) -> None:
        self.absorb(self.router.received(self.did, data, now))

    def got(self, kind: type) -> list[Item]:
        return [i for i in self.inbox if isinstance(i, kind)]

    def penalties(self) -> list[Penalise]:
        return [a for a in self.other if isinstance(a, Penalise) and a.peer == self.did]

    def disconnects(self) -> list[Disconnect]:
        return [a for a in self.other if isinstance(a, Disconnect) and a.peer == self.did]


def signed(
    publisher: KeyPair,
    data: bytes = b"x",
    topic: str = T,
    expiry: float = START + 30,
    seqno: int = 1,
) -> tuple[bytes, Publish]:
    return sign_body(publisher, MessageBody(publisher.did, seqno, topic, data, expiry))


def subscribed_router(i: int = 0, params: GossipParams | None = None) -> GossipRouter:
    router = GossipRouter(key(i), params, rng=random.Random(i))
    router.subscribe(T, START)
    return router


# --- dissemination --------------------------------------------------------------------------------


def test_pair_forms_a_mesh_and_delivers_once() -> None:
    net = full_mesh(2)
    net.subscribe([0, 1])
    assert net[0].mesh(T) == {net.ids[1]}
    assert net[1].mesh(T) == {net.ids[0]}
    assert net[0].topic_peers(T) == {net.ids[1]}
    msg_id = net.publish(0, b"hello")
    [message] = net.delivered[net.ids[1]]
    assert message.id == msg_id
    assert (message.topic, message.data) == (T, b"hello")
    assert message.publisher == message.source == net.ids[0]
    assert message.expiry == START + net.params.message_ttl
    assert net.delivered[net.ids[0]] == []  # the publisher's own subscribers are not called
    assert net[0].stats.published == 1
    assert net[1].stats.delivered == 1


def test_line_forwards_hop_by_hop() -> None:
    net = Net(4)
    for a, b in ((0, 1), (1, 2), (2, 3)):
        net.link(a, b)
    net.subscribe(range(4))
    net.publish(0, b"far")
    for i in (1, 2, 3):
        assert [m.data for m in net.delivered[net.ids[i]]] == [b"far"]
    assert net.delivered[net.ids[3]][0].source == net.ids[2]
    assert net.delivered[net.ids[3]][0].publisher == net.ids[0]
    assert sum(r.stats.duplicates for r in net.routers.values()) == 0


def test_duplicates_are_counted_and_not_delivered_again() -> None:
    net = full_mesh(5)
    net.subscribe(range(5))
    net.publish(0, b"x")
    for i in range(1, 5):
        assert len(net.delivered[net.ids[i]]) == 1
    assert sum(r.stats.duplicates for r in net.routers.values()) > 0
    assert sum(r.stats.repeats for r in net.routers.values()) == 0
    assert all(not e for e in net.events.values())  # no penalties among honest peers


def test_not_forwarded_back_to_the_sender_nor_to_the_publisher() -> None:
    net = full_mesh(3)
    net.subscribe(range(3))
    net.publish(0, b"x")
    publishes = [(s, d) for s, d, i in net.sent_items if isinstance(i, Publish)]
    assert all(d != net.ids[0] for _, d in publishes)
    assert len(set(publishes)) == len(publishes)


def test_messages_on_other_topics_are_dropped() -> None:
    net = full_mesh(2)
    net.subscribe([1], T2)
    net.subscribe([0], T)
    # Node 1 is not subscribed to T: node 0's message is not sent to it at all.
    net.publish(0, b"x", T)
    assert net.delivered[net.ids[1]] == []
    peer = Peer(net[1])
    peer.send([signed(peer.key)[1]])
    assert peer.router.stats.not_subscribed == 1
    assert peer.penalties() == []


def test_publisher_outside_the_topic_uses_fanout() -> None:
    params = GossipParams(flood_publish=False, fanout_ttl=5.0)
    net = full_mesh(4, params)
    net.subscribe([1, 2, 3])
    net.publish(0, b"from outside")
    assert net[0].fanout(T)
    assert net[0].fanout(T) <= {net.ids[1], net.ids[2], net.ids[3]}
    assert net[0].mesh(T) == frozenset()
    for i in (1, 2, 3):
        assert [m.data for m in net.delivered[net.ids[i]]] == [b"from outside"]
    net.heartbeat(7)
    assert net[0].fanout(T) == frozenset()  # unused for longer than fanout_ttl


def test_subscribing_turns_fanout_into_mesh() -> None:
    net = full_mesh(4, GossipParams(flood_publish=False))
    net.subscribe([1, 2, 3])
    net.publish(0, b"x")
    fanout = net[0].fanout(T)
    net.subscribe([0])
    assert fanout <= net[0].mesh(T)
    assert net[0].fanout(T) == frozenset()
    assert all(net.ids[0] in net[i].mesh(T) for i in range(1, 4) if net.ids[i] in fanout)


def test_without_flood_publish_only_the_mesh_gets_it() -> None:
    net = full_mesh(10, GossipParams(flood_publish=False, d=2, d_lo=2, d_hi=3, d_score=1))
    net.subscribe(range(10))
    net.heartbeat()
    net.sent_items.clear()
    net.publish(0, b"x")
    first_hop = {d for s, d, i in net.sent_items if isinstance(i, Publish) and s == net.ids[0]}
    assert first_hop == net[0].mesh(T)
    assert all(len(net.delivered[net.ids[i]]) == 1 for i in range(1, 10))


# --- mesh upkeep ----------------------------------------------------------------------------------


def test_heartbeat_fills_the_mesh_to_d() -> None:
    net = Net(15)
    for i in range(1, 15):
        net.link(0, i)
    net.subscribe(range(1, 15))
    net.subscribe([0])
    assert len(net[0].mesh(T)) == net.params.d
    net.heartbeat(3)
    assert net.params.d_lo <= len(net[0].mesh(T)) <= net.params.d_hi
    # Mesh links are symmetric.
    for peer in net[0].mesh(T):
        assert net.ids[0] in net.routers[peer].mesh(T)


def test_grafts_beyond_d_hi_are_pruned_and_heartbeat_trims_to_d() -> None:
    router = subscribed_router()
    peers = [Peer(router, 20 + i) for i in range(16)]
    for p in peers:
        p.send([Subscribe(T), Graft(T)])
    accepted = [p for p in peers if not p.got(Prune)]
    assert len(router.mesh(T)) == len(accepted) == router.params.d_hi
    # Grafts alone never push the mesh past d_hi; put it there directly to test the trim.
    router._mesh[T].update(p.did for p in peers)
    for p in peers:
        p.inbox.clear()
    actions = router.heartbeat(START + 1)
    for p in peers:
        p.absorb(actions)
    assert len(router.mesh(T)) == router.params.d
    pruned = [p for p in peers if p.got(Prune)]
    assert len(pruned) == 16 - router.params.d
    assert all(pr.backoff == router.params.prune_backoff for p in pruned for pr in p.got(Prune))
    assert {p.did for p in pruned}.isdisjoint(router.mesh(T))


def test_graft_for_a_topic_we_do_not_follow_is_pruned_without_backoff() -> None:
    router = subscribed_router()
    peer = Peer(router)
    peer.send([Graft(T2)])
    assert peer.got(Prune) == [Prune(T2, 0.0)]
    assert peer.penalties() == []


def test_graft_during_backoff_is_penalised() -> None:
    router = subscribed_router()
    peer = Peer(router)
    peer.send([Subscribe(T), Graft(T)])
    assert peer.did in router.mesh(T)
    peer.send([Prune(T, 30.0)], START + 1)
    assert peer.did not in router.mesh(T)
    peer.send([Graft(T)], START + 2)  # still in the backoff it asked for
    assert peer.did not in router.mesh(T)
    assert [p.reason for p in peer.penalties()] == ["GRAFT during backoff"]
    assert peer.got(Prune)[-1].topic == T
    peer.send([Graft(T)], START + 100)  # backoff over: accepted
    assert peer.did in router.mesh(T)


def test_unsubscribe_prunes_the_mesh_and_tells_everyone() -> None:
    net = full_mesh(3)
    net.subscribe(range(3))
    net.apply(net.ids[0], net[0].unsubscribe(T, net.now))
    net.run()
    assert net[0].subscriptions == frozenset()
    assert all(net.ids[0] not in net[i].mesh(T) for i in (1, 2))
    assert all(net.ids[0] not in net[i].topic_peers(T) for i in (1, 2))
    assert len(net.items(Prune, src=0)) == 2
    assert len(net.items(Unsubscribe, src=0)) == 2
    assert net[0].unsubscribe(T, net.now) == []


def test_new_peer_learns_our_subscriptions() -> None:
    router = subscribed_router()
    router.subscribe(T2, START)
    peer = Peer(router)
    assert sorted(s.topic for s in peer.got(Subscribe)) == sorted([T, T2])


def test_disconnect_forgets_the_peer() -> None:
    net = full_mesh(3)
    net.subscribe(range(3))
    net.unlink(0, 1)
    assert net.ids[1] not in net[0].mesh(T) | net[0].topic_peers(T) | net[0].peers()
    net.publish(0, b"x")
    assert len(net.delivered[net.ids[1]]) == 1  # through node 2
    assert net[0].peer_disconnected(net.ids[1], net.now) == []  # twice is harmless


def test_own_did_is_not_a_peer() -> None:
    router = subscribed_router()
    with pytest.raises(LocalProtocolError):
        router.peer_connected(router.local, START)


# --- gossip: IHAVE / IWANT ------------------------------------------------------------------------


def test_ihave_iwant_recovers_a_message_the_mesh_lost() -> None:
    params = GossipParams(flood_publish=False, d=1, d_lo=1, d_hi=1, d_score=0, d_lazy=1)
    net = full_mesh(3, params)
    net.subscribe(range(3))
    mesh_peer = next(iter(net[0].mesh(T)))
    other = next(i for i in (1, 2) if net.ids[i] != mesh_peer)
    # Node `other` is not in node 0's mesh; cut every path that could carry the message to it.
    net.cut |= {(net.ids[0], net.ids[other]), (mesh_peer, net.ids[other])}
    net.publish(0, b"lost")
    assert net.delivered[net.ids[other]] == []
    net.cut.clear()
    net.heartbeat()
    [message] = net.delivered[net.ids[other]]
    assert message.data == b"lost"
    assert net.routers[net.ids[other]].stats.iwant_received == 1
    assert net.items(IHave, dst=other)
    assert net.items(IWant, src=other)


def test_ihave_asks_only_for_unseen_ids_and_honours_limits() -> None:
    router = subscribed_router(params=GossipParams(max_ihave_messages=2, max_ihave_length=3))
    peer = Peer(router)
    seen_id, item = signed(peer.key, b"known")
    peer.send([Subscribe(T), item])
    fresh = [bytes([i]) * 32 for i in range(1, 6)]
    peer.send([IHave(T, [seen_id, *fresh])])
    assert peer.got(IWant) == [IWant(fresh[:3])]  # at most max_ihave_length ids a heartbeat
    peer.send([IHave(T, fresh)])  # already promised or over the budget: nothing more
    assert len(peer.got(IWant)) == 1
    peer.send([IHave(T2, [bytes(32)])])  # a topic we do not follow: ignored
    assert len(peer.got(IWant)) == 1


def test_broken_promise_is_penalised() -> None:
    router = subscribed_router()
    peer = Peer(router)
    peer.send([Subscribe(T), IHave(T, [bytes(32)])])
    assert peer.got(IWant)
    peer.absorb(router.heartbeat(START + 1))
    assert router.stats.broken_promises == 0
    peer.absorb(router.heartbeat(START + 1 + router.params.iwant_followup))
    assert router.stats.broken_promises == 1
    assert [p.reason for p in peer.penalties()] == ["did not deliver a message it advertised"]


def test_iwant_is_served_a_limited_number_of_times() -> None:
    router = subscribed_router()
    peer = Peer(router)
    peer.send([Subscribe(T)])
    msg_id, actions = router.publish(T, b"cached", START)
    peer.absorb(actions)
    peer.inbox.clear()
    for _ in range(5):
        peer.send([IWant([msg_id, bytes(32)])])
    assert len(peer.got(Publish)) == router.params.gossip_retransmission
    # Forgotten after history_length heartbeats.
    other = Peer(router, 91)
    for h in range(router.params.history_length):
        router.heartbeat(START + h + 1)
    other.send([IWant([msg_id])], START + 10)
    assert other.got(Publish) == []


# --- validation and scoring ---------------------------------------------------------------------


def test_bad_signature_is_rejected_penalised_and_does_not_poison() -> None:
    net = Net(3)
    net.link(0, 1)
    net.link(1, 2)
    net.subscribe(range(3))
    attacker = Peer(net[1], 50)
    attacker.send([Subscribe(T), Graft(T)])
    msg_id, genuine = signed(net.keys[0], b"genuine")
    forged = Publish(genuine.body, bytes(64))
    net.sent_items.clear()
    attacker.send([forged])
    net.apply(net.ids[1], [])  # nothing was delivered or forwarded
    assert attacker.delivered == []
    assert not attacker.got(Publish)
    assert net[1].stats.invalid == 1
    assert [p.reason for p in attacker.penalties()] == ["bad message signature"]
    assert net[1].score(attacker.did) == net.params.score.invalid_weight
    # The genuine message with the same id still goes through.
    net.apply(net.ids[0], [Send(net.ids[1], encode_rpc([genuine]))])
    net.run()
    assert [m.id for m in net.delivered[net.ids[1]]] == [msg_id]
    assert [m.id for m in net.delivered[net.ids[2]]] == [msg_id]


def test_body_that_does_not_decode_is_invalid() -> None:
    router = subscribed_router()
    peer = Peer(router)
    peer.send([Publish(b"\x93\x01\x02\x03", bytes(64))])
    assert router.stats.invalid == 1
    assert [p.reason for p in peer.penalties()] == ["message body does not decode"]


def test_expired_and_far_future_messages_are_ignored() -> None:
    router = subscribed_router()
    peer = Peer(router)
    _, old = signed(peer.key, expiry=START)
    _, future = signed(peer.key, expiry=START + router.params.max_message_ttl + 1, seqno=2)
    peer.send([old, future])
    assert router.stats.expired == 2
    assert peer.delivered == []
    assert peer.penalties() == []  # could be a clock: not held against the peer


def test_oversize_data_is_invalid() -> None:
    router = subscribed_router(params=GossipParams(max_message_size=10))
    peer = Peer(router)
    peer.send([signed(peer.key, b"x" * 11)[1]])
    assert peer.delivered == []
    assert router.stats.invalid == 1


@pytest.mark.parametrize(
    ("verdict", "penalised"), [(Verdict.REJECT, True), (Verdict.IGNORE, False)]
)
def test_validator_stops_propagation(verdict: Verdict, penalised: bool) -> None:
    net = Net(3)
    net.link(0, 1)
    net.link(1, 2)
    net.subscribe(range(3))
    seen: list[Message] = []

    def validator(message: Message) -> Verdict:
        seen.append(message)
        return verdict if message.data.startswith(b"bad") else Verdict.ACCEPT

    net[1].set_validator(T, validator)
    net.publish(0, b"bad thing")
    assert [m.data for m in seen] == [b"bad thing"]
    assert net.delivered[net.ids[1]] == net.delivered[net.ids[2]] == []
    assert net.items(Publish, src=1) == []
    penalties = [a for a in net.events[net.ids[1]] if isinstance(a, Penalise)]
    assert bool(penalties) is penalised
    assert (net[1].score(net.ids[0]) < 0) is penalised
    net.publish(0, b"good thing")
    assert [m.data for m in net.delivered[net.ids[2]]] == [b"good thing"]
    net[1].set_validator(T, None)
    net.publish(0, b"bad again")
    assert [m.data for m in net.delivered[net.ids[2]]] == [b"good thing", b"bad again"]


@pytest.mark.parametrize("validator", [lambda m: 1 / 0, lambda m: True])
def test_broken_validator_means_ignore(validator: Callable[[Message], Verdict]) -> None:
    router = subscribed_router()
    router.set_validator(T, validator)
    peer = Peer(router)
    peer.send([signed(peer.key)[1]])
    assert peer.delivered == []
    assert peer.penalties() == []
    assert router.stats.validator_errors == 1
    assert router.stats.ignored == 1


def test_own_message_refused_by_own_validator() -> None:
    router = subscribed_router()
    router.set_validator(T, lambda m: Verdict.REJECT)
    with pytest.raises(ValidationError, match="reject"):
        router.publish(T, b"x", START)
    assert router.stats.published == 0


@pytest.mark.parametrize(
    ("topic", "data", "field"),
    [
        ("", b"x", "topic"),
        ("x" * 257, b"x", "topic"),
        (5, b"x", "topic"),
        (T, "x", "data"),
        (T, b"x" * (256 * 1024 + 1), "data"),
    ],
)
def test_publish_bad_arguments(topic: object, data: object, field: str) -> None:
    router = subscribed_router()
    with pytest.raises(ValidationError) as info:
        router.publish(topic, data, START)  # type: ignore[arg-type]
    assert info.value.path == field


def test_bytes_like_data_is_accepted() -> None:
    router = subscribed_router()
    msg_id, _ = router.publish(T, memoryview(b"abc"), START)
    assert len(msg_id) == 32


def test_duplicate_flood_is_suppressed_and_the_peer_dropped() -> None:
    net = Net(2)
    net.link(0, 1)
    net.subscribe([0, 1])
    flooder = Peer(net[0], 60, net)
    flooder.send([Subscribe(T), Graft(T)])
    assert flooder.did in net[0].mesh(T)
    _, item = signed(flooder.key, b"spam")
    for _ in range(30):
        flooder.send([item])
    net.run()
    assert len(flooder.delivered) == 1  # delivered once
    assert len(net.delivered[net.ids[1]]) == 1  # forwarded once
    assert net[0].stats.repeats >= 10
    assert net[0].score(flooder.did) < net.params.score.graylist_threshold
    assert flooder.did not in net[0].mesh(T)
    [disconnect] = flooder.disconnects()
    assert "graylist" in disconnect.reason
    # Graylisted: read no more, and refused again on reconnection.
    dropped = net[0].stats.graylisted_dropped
    flooder.send([signed(flooder.key, b"more", seqno=2)[1]])
    assert net[0].stats.graylisted_dropped == dropped + 1
    flooder.absorb(net[0].peer_disconnected(flooder.did, START))
    flooder.absorb(net[0].peer_connected(flooder.did, START + 1))
    assert len(flooder.disconnects()) == 2


def test_mild_misbehaviour_leaves_the_mesh_at_the_heartbeat_and_decays() -> None:
    router = subscribed_router()
    peer = Peer(router)
    peer.send([Subscribe(T), Graft(T)])
    peer.send_raw(b"garbage")
    peer.send([Publish(b"\x90", bytes(64))])  # invalid body: -10
    assert -80 < router.score(peer.did) < 0
    assert peer.did in router.mesh(T)
    peer.inbox.clear()
    peer.absorb(router.heartbeat(START + 1))
    assert peer.did not in router.mesh(T)
    assert peer.got(Prune) == [Prune(T, router.params.prune_backoff)]
    for h in range(2, 1000):
        router.heartbeat(START + h)
    assert router.score(peer.did) == 0.0


def test_garbage_is_penalised_after_the_allowance() -> None:
    router = subscribed_router()
    peer = Peer(router)
    for _ in range(2):
        peer.send_raw(b"\xc1")
    assert router.score(peer.did) == 0
    assert router.stats.undecodable == 2
    peer.send_raw(b"\xc1")
    assert router.score(peer.did) < 0


def test_score_outlives_a_reconnect() -> None:
    router = subscribed_router()
    peer = Peer(router)
    peer.send([Publish(b"\x90", bytes(64))])
    before = router.score(peer.did)
    router.peer_disconnected(peer.did, START + 1)
    router.heartbeat(START + 2)
    router.peer_connected(peer.did, START + 3)
    assert before * 0.99 <= router.score(peer.did) < 0


# --- batching -------------------------------------------------------------------------------------


def test_one_send_per_peer_per_event_and_big_batches_split() -> None:
    params = GossipParams(max_message_size=60_000, max_rpc_size=130_000)
    router = GossipRouter(key(0), params)
    peer = Peer(router)
    peer.send([Subscribe(T)])
    router.subscribe(T, START)
    assert router.mesh(T) == {peer.did}
    ids = []
    for i in range(4):
        msg_id, actions = router.publish(T, bytes([i]) * 50_000, START)
        ids.append(msg_id)
        assert [type(a) for a in actions] == [Send]
    peer.inbox.clear()
    actions = router.received(peer.did, encode_rpc([IWant(ids)]), START)
    sends = [a for a in actions if isinstance(a, Send)]
    assert len(sends) == 2  # 4 x 50 kB under a 130 kB batch limit
    assert all(len(s.data) <= params.max_rpc_size for s in sends)
    served = [i for s in sends for i in decode_rpc(s.data)]
    assert [msgspec.msgpack.decode(p.body)[1] for p in served if isinstance(p, Publish)] == [
        router._seqno - 4 + i for i in range(4)
    ]
