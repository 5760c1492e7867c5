"""Gossip router knobs: mesh degrees, timings, limits and peer-score weights.

Defaults follow gossipsub v1.1 where it has one. Times are seconds; "per heartbeat" counts and
decays assume the default 1 s heartbeat. Simulations shrink the timings, not the degrees.
"""

from __future__ import annotations

import msgspec

from nunet.errors import ValidationError
from nunet.net.api import MAX_PAYLOAD

# What a Publish adds around its data on the wire: tags, lengths, DID, seqno, topic, expiry,
# signature, and the list header of the batch it travels in.
PUBLISH_OVERHEAD = 512


class ScoreParams(msgspec.Struct, frozen=True, kw_only=True):
    """Peer score = first deliveries (capped, positive) - invalid messages squared
    - behaviour penalties above an allowance, squared. Counters decay every heartbeat."""

    first_delivery_weight: float = 1.0
    first_delivery_cap: float = 20.0
    first_delivery_decay: float = 0.9
    # A bad signature, an undecodable body or a validator's reject.
    invalid_weight: float = -10.0
    invalid_decay: float = 0.99
    # Repeats of a message by the same peer, broken IWANT promises, GRAFT during backoff, RPCs
    # that do not decode. A peer gets `behaviour_allowance` of these for free: races happen.
    behaviour_weight: float = -1.0
    behaviour_allowance: float = 2.0
    behaviour_decay: float = 0.95
    decay_to_zero: float = 0.01
    # Below 0 a peer leaves our meshes; below `gossip_threshold` we neither send it IHAVE nor
    # answer its IHAVE/IWANT; below `publish_threshold` our own messages skip it; below
    # `graylist_threshold` everything it sends is dropped unread and it is disconnected.
    gossip_threshold: float = -10.0
    publish_threshold: float = -50.0
    graylist_threshold: float = -80.0
    # How long a disconnected peer's score is kept, so reconnecting does not wash it clean.
    retain_score: float = 600.0

    def __post_init__(self) -> None:
        if not 0 > self.gossip_threshold >= self.publish_threshold >= self.graylist_threshold:
            raise ValidationError(
                "thresholds must satisfy 0 > gossip >= publish >= graylist",
                path="score.graylist_threshold",
            )
        for name in ("first_delivery_decay", "invalid_decay", "behaviour_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise ValidationError("a decay must be in (0, 1]", path=f"score.{name}")
        if self.invalid_weight > 0 or self.behaviour_weight > 0:
            raise ValidationError("penalty weights must be <= 0", path="score.invalid_weight")


class GossipParams(msgspec.Struct, frozen=True, kw_only=True):
    d: int = 6  # mesh degree aimed at
    d_lo: int = 4  # fewer: graft at the next heartbeat
    d_hi: int = 12  # more: prune back to d
    d_score: int = 4  # when pruning, the best-scoring kept; the rest of d picked at random
    d_lazy: int = 6  # at least this many non-mesh peers get IHAVE per topic per heartbeat
    gossip_factor: float = 0.25  # ... or this share of them, whichever is more
    heartbeat_interval: float = 1.0
    fanout_ttl: float = 60.0  # a topic we publish to without subscribing keeps its fanout
    history_length: int = 5  # heartbeats a message stays in the cache for IWANT
    history_gossip: int = 3  # heartbeats a message is advertised in IHAVE
    seen_ttl: float = 120.0
    seen_capacity: int = 100_000
    message_ttl: float = 60.0  # expiry our own messages get
    # Messages expiring further ahead than this are ignored: once a message drops out of the
    # seen cache a replay must already have expired, so keep it below seen_ttl.
    max_message_ttl: float = 110.0
    max_message_size: int = 256 * 1024  # data bytes of one message
    max_topics_per_peer: int = 128
    prune_backoff: float = 60.0
    max_prune_backoff: float = 3600.0
    iwant_followup: float = 3.0  # a peer that promised a message (IHAVE) must deliver by then
    max_ihave_length: int = 5000  # ids we ask one peer for per heartbeat
    max_ihave_messages: int = 10  # IHAVEs we act on from one peer per heartbeat
    gossip_retransmission: int = 3  # times we answer one peer's IWANT for one message
    flood_publish: bool = True  # our own messages go to every topic peer above publish_threshold
    max_rpc_size: int = 512 * 1024  # a batch for one peer is sent once it grows past this
    score: ScoreParams = msgspec.field(default_factory=ScoreParams)

    def __post_init__(self) -> None:
        if not 1 <= self.d_lo <= self.d <= self.d_hi:
            raise ValidationError("mesh degrees must satisfy 1 <= d_lo <= d <= d_hi", path="d")
        if not 0 <= self.d_score <= self.d:
            raise ValidationError("d_score must be in 0..d", path="d_score")
        if not 1 <= self.history_gossip <= self.history_length:
            raise ValidationError(
                "history_gossip must be in 1..history_length", path="history_gossip"
            )
        if not 0 < self.max_message_ttl < self.seen_ttl:
            raise ValidationError(
                "max_message_ttl must be in (0, seen_ttl)", path="max_message_ttl"
            )
        if not 0 < self.message_ttl <= self.max_message_ttl:
            raise ValidationError("message_ttl must be in (0, max_message_ttl]", path="message_ttl")
        if not 0 < self.max_message_size <= MAX_PAYLOAD - PUBLISH_OVERHEAD:
            raise ValidationError(
                f"max_message_size must be in 1..{MAX_PAYLOAD - PUBLISH_OVERHEAD}",
                path="max_message_size",
            )
        if not self.max_message_size + PUBLISH_OVERHEAD <= self.max_rpc_size <= MAX_PAYLOAD:
            raise ValidationError(
                "max_rpc_size must fit one whole message and stay within MAX_PAYLOAD",
                path="max_rpc_size",
            )
        for name in ("heartbeat_interval", "fanout_ttl", "iwant_followup"):
            if not getattr(self, name) > 0:
                raise ValidationError("must be above 0 seconds", path=name)
        if not 0 <= self.prune_backoff <= self.max_prune_backoff:
            raise ValidationError(
                "prune_backoff must be in 0..max_prune_backoff", path="prune_backoff"
            )
