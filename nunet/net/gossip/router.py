"""The gossip router: a sans-I/O pub/sub core in the spirit of gossipsub v1.1.

Events in (`peer_connected`, `peer_disconnected`, `received`, `heartbeat`, `publish`,
`subscribe`, `unsubscribe`), each with `now` (unix seconds: message expiry is compared across
nodes); actions out (`Send`, `Deliver`, `Penalise`, `Disconnect`). No sockets, no clocks, no
tasks: `GossipService` drives it. Everything queued for one peer during one event leaves as one
`Send` (batched items), so control piggybacks on data as in gossipsub.

Invariants:
- A message is delivered and forwarded at most once: its id (blake3 of the signed body) enters
  the seen cache only after its signature verifies, so a forged copy cannot make us drop the
  genuine one. Duplicates cost a hash and a cache lookup, nothing more.
- Nothing unverified is delivered or forwarded. A message is forwarded only to our mesh peers for
  its topic, never back to the peer it came from nor to its publisher, and only after the topic's
  validator accepts it.
- A peer's fault is an event, never an exception: bytes that do not decode, bad signatures,
  validator rejects, the same message twice from one peer, IHAVE promises not kept, GRAFT during
  backoff all cost it score. Below 0 it leaves our meshes at the next heartbeat; below the
  graylist threshold it is disconnected at once and everything it sends is dropped unread.
- Memory is bounded: seen ids and (peer, id) pairs in fixed-size caches, the message cache by
  heartbeats, per-peer topics by `max_topics_per_peer`, IHAVE/IWANT work per peer per heartbeat
  by `max_ihave_messages` / `max_ihave_length`, one peer's batch by `max_rpc_size`.
- Mesh maintenance happens at heartbeats only (and on our own subscribe), so a burst of GRAFTs or
  disconnects cannot make us churn.
Not implemented from gossipsub v1.1: peer exchange on PRUNE, opportunistic grafting, direct
peers, the time-in-mesh and mesh-delivery-deficit score terms, IP colocation, IDONTWANT.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from nunet.crypto.keys import KeyPair
from nunet.errors import DecodeError, LocalProtocolError, SignatureError, ValidationError
from nunet.net.gossip.actions import (
    Action,
    Deliver,
    Disconnect,
    GossipStats,
    Message,
    Penalise,
    Send,
    Validator,
    Verdict,
)
from nunet.net.gossip.mcache import MessageCache
from nunet.net.gossip.params import GossipParams
from nunet.net.gossip.score import PeerScore
from nunet.net.gossip.seen import SeenCache
from nunet.net.gossip.wire import (
    MAX_TOPIC_LENGTH,
    Graft,
    IHave,
    Item,
    IWant,
    MessageBody,
    Prune,
    Publish,
    Subscribe,
    Unsubscribe,
    decode_body,
    decode_rpc,
    encode_item,
    encode_rpc,
    message_id,
    sign_body,
    verify_publish,
)

log = logging.getLogger("nunet.net.gossip")

_ITEM_SIZE = 48  # a control item's wire size, topic excluded: enough for batching estimates
_ID_WIRE_SIZE = 34


class _Peer:
    __slots__ = ("asked", "graylisted", "ihaves", "mask", "topics")

    def __init__(self) -> None:
        self.topics: set[str] = set()
        # Secret per-connection mask: id XOR mask is this peer's key in the repeats cache.
        self.mask = int.from_bytes(os.urandom(32), "little")
        self.ihaves = 0  # IHAVEs acted on this heartbeat
        self.asked = 0  # ids asked of this peer this heartbeat
        self.graylisted = False


class _Outbox:
    __slots__ = ("items", "size")

    def __init__(self) -> None:
        self.items: list[Item | msgspec.Raw] = []
        self.size = 0


def check_topic(topic: object) -> str:
    if not isinstance(topic, str) or not 1 <= len(topic) <= MAX_TOPIC_LENGTH:
        raise ValidationError(
            f"a topic must be a string of 1..{MAX_TOPIC_LENGTH} characters", path="topic"
        )
    return topic


class GossipRouter:
    def __init__(
        self,
        keypair: KeyPair,
        params: GossipParams | None = None,
        *,
        rng: random.Random | None = None,
        seqno_start: int = 0,
    ) -> None:
        self._key = keypair
        self.local = keypair.did
        self.params = p = params or GossipParams()
        self._sp = p.score
        # Peer selection only: nothing here needs unpredictability, and tests want a seed.
        self._rng = rng or random.Random()
        self._seen = SeenCache(p.seen_capacity, p.seen_ttl)
        # (peer, id) pairs: a peer never has a reason to send us the same message twice, and a
        # repeat is spotted within a quarter of seen_ttl. Each message comes from a few peers.
        self._repeats = SeenCache(min(2 * p.seen_capacity, 1 << 26), p.seen_ttl / 4)
        self._mcache = MessageCache(p.history_length, p.history_gossip)
        self._peers: dict[str, _Peer] = {}
        self._scores: dict[str, PeerScore] = {}
        self._topic_peers: dict[str, set[str]] = {}
        self._subscriptions: set[str] = set()
        self._mesh: dict[str, set[str]] = {}
        self._fanout: dict[str, set[str]] = {}
        self._fanout_used: dict[str, float] = {}
        self._backoff: dict[tuple[str, str], float] = {}  # (topic, peer) -> no GRAFT until
        self._promises: dict[bytes, tuple[str, float]] = {}  # id -> (peer, deliver by)
        self._validators: dict[str, Validator] = {}
        self._seqno = seqno_start
        self._out: dict[str, _Outbox] = {}
        self._actions: list[Action] = []
        self.stats = GossipStats()
        self._handlers: dict[type, Callable[[str, _Peer, Any, float], None]] = {
            Publish: self._on_publish,
            Subscribe: self._on_subscribe,
            Unsubscribe: self._on_unsubscribe,
            Graft: self._on_graft,
            Prune: self._on_prune,
            IHave: self._on_ihave,
            IWant: self._on_iwant,
        }

    # --- introspection -------------------------------------------------------------------------

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(self._subscriptions)

    def mesh(self, topic: str) -> frozenset[str]:
        return frozenset(self._mesh.get(topic, ()))

    def fanout(self, topic: str) -> frozenset[str]:
        return frozenset(self._fanout.get(topic, ()))

    def peers(self) -> frozenset[str]:
        return frozenset(self._peers)

    def topic_peers(self, topic: str) -> frozenset[str]:
        """Connected peers that announced `topic`."""
        return frozenset(self._topic_peers.get(topic, ()))

    def score(self, peer: str) -> float:
        score = self._scores.get(peer)
        return 0.0 if score is None else score.value(self._sp)

    # --- local API -----------------------------------------------------------------------------

    def set_validator(self, topic: str, validator: Validator | None) -> None:
        """`validator(message)` decides for every message on `topic`, ours included; None
        removes it. It runs after the signature check, on the event loop: keep it quick."""
        check_topic(topic)
        if validator is None:
            self._validators.pop(topic, None)
        else:
            self._validators[topic] = validator

    def subscribe(self, topic: str, now: float) -> list[Action]:
        check_topic(topic)
        if topic in self._subscriptions:
            return []
        self._subscriptions.add(topic)
        for peer, state in self._peers.items():
            if not state.graylisted:
                self._queue(peer, Subscribe(topic), len(topic) + _ITEM_SIZE)
        # Peers we already publish to (fanout) make a good start for the mesh.
        mesh = {q for q in self._fanout.pop(topic, ()) if self._graftable(topic, q, now)}
        self._fanout_used.pop(topic, None)
        self._mesh[topic] = mesh
        self._fill_mesh(topic, mesh, now)
        for q in mesh:
            self._graft(q, topic)
        return self._flush()

    def unsubscribe(self, topic: str, now: float) -> list[Action]:
        if topic not in self._subscriptions:
            return []
        self._subscriptions.discard(topic)
        for peer, state in self._peers.items():
            if not state.graylisted:
                self._queue(peer, Unsubscribe(topic), len(topic) + _ITEM_SIZE)
        for q in self._mesh.pop(topic, ()):
            self._prune(q, topic, now)
        return self._flush()

    def publish(self, topic: str, data: bytes, now: float) -> tuple[bytes, list[Action]]:
        """Signs and sends a message; returns its id. Our own subscribers are not called.
        ValidationError if the topic's validator does not accept it."""
        check_topic(topic)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValidationError("data must be bytes", path="data")
        data = bytes(data)
        p = self.params
        if len(data) > p.max_message_size:
            raise ValidationError(
                f"data of {len(data)} bytes is over max_message_size ({p.max_message_size})",
                path="data",
            )
        body = MessageBody(self.local, self._seqno, topic, data, now + p.message_ttl)
        self._seqno += 1
        msg_id, item = sign_body(self._key, body)
        verdict = self._validate(
            Message(msg_id, topic, body.data, self.local, body.seqno, body.expiry, self.local)
        )
        if verdict is not Verdict.ACCEPT:
            raise ValidationError(f"the validator of {topic} says {verdict.value}", path="data")
        self._seen.check_and_add(msg_id, now)
        raw = encode_item(item)
        self._mcache.put(msg_id, topic, raw)
        targets: Iterable[str]
        if topic not in self._subscriptions:
            fanout = self._fanout.get(topic)
            if fanout is None:
                fanout = self._fanout[topic] = set()
                self._fill(topic, fanout, p.d, self._sp.publish_threshold, now)
            self._fanout_used[topic] = now
        if p.flood_publish:
            threshold = self._sp.publish_threshold
            targets = [q for q in self._topic_peers.get(topic, ()) if self.score(q) >= threshold]
        elif topic in self._subscriptions:
            targets = self._mesh[topic]
        else:
            targets = self._fanout[topic]
        size = len(raw)
        for q in targets:
            self._queue(q, raw, size)
        self.stats.published += 1
        return msg_id, self._flush()

    # --- network events ------------------------------------------------------------------------

    def peer_connected(self, peer: str, now: float) -> list[Action]:
        self._connect(peer)
        return self._flush()

    def peer_disconnected(self, peer: str, now: float) -> list[Action]:
        state = self._peers.pop(peer, None)
        if state is None:
            return []
        for topic in state.topics:
            self._forget_topic_peer(topic, peer)
        self._leave_meshes(peer)
        self._out.pop(peer, None)
        self._scores[peer].disconnected_at = now
        return self._flush()

    def received(self, peer: str, data: bytes | memoryview, now: float) -> list[Action]:
        """One GOSSIP network message from `peer`."""
        state = self._peers.get(peer)
        if state is None:  # a message can overtake the connection event
            state = self._connect(peer)
        if state.graylisted:
            self.stats.graylisted_dropped += 1
            return self._flush()
        try:
            items = decode_rpc(data)
        except DecodeError:
            self.stats.undecodable += 1
            self._penalise(peer, "rpc does not decode", behaviour=1.0)
            return self._flush()
        handlers = self._handlers
        for item in items:
            handlers[type(item)](peer, state, item, now)
            if state.graylisted:
                break
        return self._flush()

    def heartbeat(self, now: float) -> list[Action]:
        """Mesh upkeep, gossip, expiry of promises, backoffs, fanout and scores. Call every
        `params.heartbeat_interval` seconds."""
        self._check_promises(now)
        for topic, mesh in self._mesh.items():
            self._maintain_mesh(topic, mesh, now)
        self._maintain_fanout(now)
        self._emit_gossip()
        self._mcache.shift()
        self._decay(now)
        self._backoff = {k: until for k, until in self._backoff.items() if until > now}
        self._seen.expire(now)
        self._repeats.expire(now)
        return self._flush()

    # --- received items ------------------------------------------------------------------------

    def _on_publish(self, peer: str, state: _Peer, item: Publish, now: float) -> None:
        msg_id = message_id(item.body)
        pair = (int.from_bytes(msg_id, "little") ^ state.mask).to_bytes(32, "little")
        if not self._repeats.check_and_add(pair, now):
            self.stats.repeats += 1
            self._penalise(peer, "sent the same message twice", behaviour=1.0)
            return
        if self._seen.contains(msg_id, now):
            self.stats.duplicates += 1
            return
        try:
            body = decode_body(item.body)
        except DecodeError:
            self.stats.invalid += 1
            self._penalise(peer, "message body does not decode", invalid=1.0)
            return
        topic = body.topic
        if topic not in self._subscriptions:
            self.stats.not_subscribed += 1
            return
        # Stale or too far ahead: may be a relay's or a publisher's clock, not malice.
        if not now < body.expiry <= now + self.params.max_message_ttl:
            self.stats.expired += 1
            return
        if len(body.data) > self.params.max_message_size:
            self.stats.invalid += 1
            self._penalise(peer, "message over max_message_size", invalid=1.0)
            return
        try:
            verify_publish(body, item)
        except SignatureError:
            self.stats.invalid += 1
            self._penalise(peer, "bad message signature", invalid=1.0)
            return
        self._seen.check_and_add(msg_id, now)
        message = Message(msg_id, topic, body.data, body.publisher, body.seqno, body.expiry, peer)
        verdict = self._validate(message)
        if verdict is Verdict.REJECT:
            self.stats.rejected += 1
            self._penalise(peer, f"message rejected by the validator of {topic}", invalid=1.0)
            return
        if verdict is Verdict.IGNORE:
            self.stats.ignored += 1
            return
        self._scores[peer].first_deliveries += 1.0
        if self._promises.pop(msg_id, None) is not None:
            self.stats.iwant_received += 1
        raw = encode_item(item)
        self._mcache.put(msg_id, topic, raw)
        self._actions.append(Deliver(message))
        self.stats.delivered += 1
        size = len(raw)
        publisher = body.publisher
        for q in self._mesh[topic]:
            if q != peer and q != publisher:
                self._queue(q, raw, size)
                self.stats.forwarded += 1

    def _on_subscribe(self, peer: str, state: _Peer, item: Subscribe, now: float) -> None:
        topic = item.topic
        if topic in state.topics:
            return
        if len(state.topics) >= self.params.max_topics_per_peer:
            return  # ignored: some implementation limit of ours, not necessarily its fault
        state.topics.add(topic)
        self._topic_peers.setdefault(topic, set()).add(peer)

    def _on_unsubscribe(self, peer: str, state: _Peer, item: Unsubscribe, now: float) -> None:
        topic = item.topic
        if topic in state.topics:
            state.topics.discard(topic)
            self._forget_topic_peer(topic, peer)
        mesh = self._mesh.get(topic)
        if mesh is not None:
            mesh.discard(peer)
        fanout = self._fanout.get(topic)
        if fanout is not None:
            fanout.discard(peer)

    def _on_graft(self, peer: str, state: _Peer, item: Graft, now: float) -> None:
        topic = item.topic
        mesh = self._mesh.get(topic)
        if mesh is None:
            # Not a topic of ours: say no, without making it wait.
            self._queue(peer, Prune(topic, 0.0), len(topic) + _ITEM_SIZE)
            self.stats.prune_sent += 1
            return
        if peer in mesh:
            return
        if self._backoff.get((topic, peer), 0.0) > now:
            self._penalise(peer, "GRAFT during backoff", behaviour=1.0)
            self._prune(peer, topic, now)
            return
        if self.score(peer) < 0 or len(mesh) >= self.params.d_hi:
            self._prune(peer, topic, now)
            return
        if topic not in state.topics and len(state.topics) < self.params.max_topics_per_peer:
            state.topics.add(topic)  # a GRAFT implies the subscription
            self._topic_peers.setdefault(topic, set()).add(peer)
        mesh.add(peer)

    def _on_prune(self, peer: str, state: _Peer, item: Prune, now: float) -> None:
        p = self.params
        mesh = self._mesh.get(item.topic)
        if mesh is not None:
            mesh.discard(peer)
        wait = min(item.backoff if item.backoff > 0 else p.prune_backoff, p.max_prune_backoff)
        self._backoff[(item.topic, peer)] = now + wait

    def _on_ihave(self, peer: str, state: _Peer, item: IHave, now: float) -> None:
        p = self.params
        if self.score(peer) < self._sp.gossip_threshold:
            return
        state.ihaves += 1
        if state.ihaves > p.max_ihave_messages or item.topic not in self._subscriptions:
            return
        budget = p.max_ihave_length - state.asked
        want: list[bytes] = []
        promises = self._promises
        deadline = now + p.iwant_followup
        for msg_id in item.ids:
            if len(want) >= budget:
                break
            if msg_id in promises or self._seen.contains(msg_id, now):
                continue
            promises[msg_id] = (peer, deadline)
            want.append(msg_id)
        if want:
            state.asked += len(want)
            self.stats.iwant_sent += len(want)
            self._queue(peer, IWant(want), _ITEM_SIZE + _ID_WIRE_SIZE * len(want))

    def _on_iwant(self, peer: str, state: _Peer, item: IWant, now: float) -> None:
        p = self.params
        if self.score(peer) < self._sp.gossip_threshold:
            return
        for msg_id in item.ids[: p.max_ihave_length]:
            raw = self._mcache.serve(msg_id, peer, p.gossip_retransmission)
            if raw is not None:
                self.stats.iwant_served += 1
                self._queue(peer, raw, len(raw))

    # --- heartbeat -----------------------------------------------------------------------------

    def _check_promises(self, now: float) -> None:
        broken = [i for i, (_, deadline) in self._promises.items() if deadline <= now]
        for msg_id in broken:
            peer, _ = self._promises.pop(msg_id)
            if peer in self._peers:
                self.stats.broken_promises += 1
                self._penalise(peer, "did not deliver a message it advertised", behaviour=1.0)

    def _maintain_mesh(self, topic: str, mesh: set[str], now: float) -> None:
        p = self.params
        for q in sorted(mesh):
            if self.score(q) < 0:
                mesh.discard(q)
                self._prune(q, topic, now)
        if len(mesh) < p.d_lo:
            for q in self._fill_mesh(topic, mesh, now):
                self._graft(q, topic)
        elif len(mesh) > p.d_hi:
            # Keep the best few by score, the rest at random, so a clique of high scorers
            # cannot take the whole mesh.
            ranked = sorted(mesh)
            self._rng.shuffle(ranked)
            ranked.sort(key=self.score, reverse=True)
            keep = set(ranked[: p.d_score])
            rest = ranked[p.d_score :]
            keep.update(self._rng.sample(rest, p.d - len(keep)))
            for q in sorted(mesh - keep):
                mesh.discard(q)
                self._prune(q, topic, now)

    def _maintain_fanout(self, now: float) -> None:
        p = self.params
        threshold = self._sp.publish_threshold
        for topic in list(self._fanout):
            if self._fanout_used[topic] + p.fanout_ttl < now:
                del self._fanout[topic], self._fanout_used[topic]
                continue
            fanout = self._fanout[topic]
            subscribed = self._topic_peers.get(topic, set())
            for q in sorted(fanout):
                if q not in subscribed or self.score(q) < threshold:
                    fanout.discard(q)
            if len(fanout) < p.d:
                self._fill(topic, fanout, p.d, threshold, now)

    def _emit_gossip(self) -> None:
        p = self.params
        threshold = self._sp.gossip_threshold
        for topic, ids in self._mcache.gossip_ids().items():
            exclude = self._mesh.get(topic)
            if exclude is None:
                exclude = self._fanout.get(topic)
                if exclude is None:
                    continue
            candidates = [
                q
                for q in sorted(self._topic_peers.get(topic, ()))
                if q not in exclude and self.score(q) >= threshold
            ]
            count = min(len(candidates), max(p.d_lazy, int(p.gossip_factor * len(candidates))))
            if count == 0:
                continue
            if len(ids) > p.max_ihave_length:
                ids = self._rng.sample(ids, p.max_ihave_length)
            size = _ITEM_SIZE + len(topic) + _ID_WIRE_SIZE * len(ids)
            for q in self._rng.sample(candidates, count):
                self._queue(q, IHave(topic, ids), size)
                self.stats.ihave_sent += 1

    def _decay(self, now: float) -> None:
        sp = self._sp
        for state in self._peers.values():
            state.ihaves = 0
            state.asked = 0
        gone = []
        for peer, score in self._scores.items():
            score.decay(sp)
            left = score.disconnected_at
            if left is not None and (score.idle() or now - left > sp.retain_score):
                gone.append(peer)
        for peer in gone:
            del self._scores[peer]

    # --- helpers -------------------------------------------------------------------------------

    def _connect(self, peer: str) -> _Peer:
        if peer == self.local:
            raise LocalProtocolError("a node cannot be its own gossip peer")
        state = self._peers.get(peer)
        if state is not None:
            return state
        state = self._peers[peer] = _Peer()
        score = self._scores.get(peer)
        if score is None:
            score = self._scores[peer] = PeerScore()
        score.disconnected_at = None
        value = score.value(self._sp)
        if value < self._sp.graylist_threshold:
            state.graylisted = True
            self._actions.append(
                Disconnect(peer, f"gossip score {value:.1f} is below the graylist threshold")
            )
            return state
        for topic in sorted(self._subscriptions):
            self._queue(peer, Subscribe(topic), len(topic) + _ITEM_SIZE)
        return state

    def _penalise(
        self, peer: str, reason: str, *, invalid: float = 0.0, behaviour: float = 0.0
    ) -> None:
        score = self._scores[peer]
        score.invalid += invalid
        score.behaviour += behaviour
        value = score.value(self._sp)
        self._actions.append(Penalise(peer, reason, value))
        state = self._peers.get(peer)
        if state is not None and not state.graylisted and value < self._sp.graylist_threshold:
            state.graylisted = True
            self.stats.graylisted += 1
            self._leave_meshes(peer)
            self._out.pop(peer, None)
            self._actions.append(
                Disconnect(
                    peer,
                    f"gossip score {value:.1f} is below the graylist threshold (last: {reason})",
                )
            )

    def _validate(self, message: Message) -> Verdict:
        validator = self._validators.get(message.topic)
        if validator is None:
            return Verdict.ACCEPT
        try:
            verdict = validator(message)
        except Exception:
            self.stats.validator_errors += 1
            log.exception("gossip validator for %s failed; message ignored", message.topic)
            return Verdict.IGNORE
        if not isinstance(verdict, Verdict):
            self.stats.validator_errors += 1
            log.error(
                "gossip validator for %s returned %r, not a Verdict; message ignored",
                message.topic,
                verdict,
            )
            return Verdict.IGNORE
        return verdict

    def _graftable(self, topic: str, peer: str, now: float) -> bool:
        state = self._peers.get(peer)
        return (
            state is not None
            and not state.graylisted
            and self.score(peer) >= 0
            and self._backoff.get((topic, peer), 0.0) <= now
        )

    def _fill_mesh(self, topic: str, mesh: set[str], now: float) -> list[str]:
        """Adds random eligible topic peers to `mesh` up to d; returns the ones added."""
        want = self.params.d - len(mesh)
        if want <= 0:
            return []
        candidates = [
            q
            for q in sorted(self._topic_peers.get(topic, ()))
            if q not in mesh and self._graftable(topic, q, now)
        ]
        added = self._rng.sample(candidates, min(want, len(candidates)))
        mesh.update(added)
        return added

    def _fill(self, topic: str, peers: set[str], size: int, threshold: float, now: float) -> None:
        candidates = [
            q
            for q in sorted(self._topic_peers.get(topic, ()))
            if q not in peers and self.score(q) >= threshold
        ]
        want = min(size - len(peers), len(candidates))
        if want > 0:
            peers.update(self._rng.sample(candidates, want))

    def _graft(self, peer: str, topic: str) -> None:
        self._queue(peer, Graft(topic), len(topic) + _ITEM_SIZE)
        self.stats.graft_sent += 1

    def _prune(self, peer: str, topic: str, now: float) -> None:
        backoff = self.params.prune_backoff
        self._backoff[(topic, peer)] = now + backoff
        self._queue(peer, Prune(topic, backoff), len(topic) + _ITEM_SIZE)
        self.stats.prune_sent += 1

    def _leave_meshes(self, peer: str) -> None:
        for mesh in self._mesh.values():
            mesh.discard(peer)
        for fanout in self._fanout.values():
            fanout.discard(peer)

    def _forget_topic_peer(self, topic: str, peer: str) -> None:
        peers = self._topic_peers.get(topic)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._topic_peers[topic]

    def _queue(self, peer: str, item: Item | msgspec.Raw, size: int) -> None:
        box = self._out.get(peer)
        if box is None:
            box = self._out[peer] = _Outbox()
        elif box.size + size > self.params.max_rpc_size:
            self._actions.append(Send(peer, encode_rpc(box.items)))
            box.items = []
            box.size = 0
        box.items.append(item)
        box.size += size

    def _flush(self) -> list[Action]:
        actions = self._actions
        for peer, box in self._out.items():
            actions.append(Send(peer, encode_rpc(box.items)))
        self._out.clear()
        self._actions = []
        return actions
