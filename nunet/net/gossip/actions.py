"""What the router core hands back (actions), what handlers get (Message), validator verdicts and
the counters the core keeps."""

from __future__ import annotations

import enum
from collections.abc import Callable

import msgspec


class Verdict(enum.Enum):
    """A topic validator's answer. REJECT: invalid, not delivered nor forwarded, and the peer that
    sent it is penalised. IGNORE: not delivered nor forwarded, no penalty (e.g. not relevant to us
    now)."""

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


class Message(msgspec.Struct, frozen=True):
    """A verified message as subscribers and validators see it. `source` is the peer it came
    from (not necessarily the publisher)."""

    id: bytes
    topic: str
    data: bytes
    publisher: str
    seqno: int
    expiry: float
    source: str


Validator = Callable[[Message], Verdict]


class Send(msgspec.Struct, frozen=True):
    """Send `data` to `peer` on kind GOSSIP."""

    peer: str
    data: bytes


class Deliver(msgspec.Struct, frozen=True):
    """Hand `message` to the local subscribers of its topic."""

    message: Message


class Penalise(msgspec.Struct, frozen=True):
    """`peer` misbehaved; its score is now `score`. For logs and metrics: the core has already
    acted on it."""

    peer: str
    reason: str
    score: float


class Disconnect(msgspec.Struct, frozen=True):
    """`peer`'s score fell below the graylist threshold: close the connection."""

    peer: str
    reason: str


Action = Send | Deliver | Penalise | Disconnect


class GossipStats(msgspec.Struct, gc=False):
    """Counters since start."""

    published: int = 0  # by us
    delivered: int = 0  # accepted messages handed to local subscribers
    duplicates: int = 0  # copies of a message already seen (normal: mesh degree - 1 per message)
    repeats: int = 0  # the same message again from the same peer (a fault)
    forwarded: int = 0  # message copies sent to mesh peers
    not_subscribed: int = 0  # messages for topics we do not follow (dropped)
    expired: int = 0  # messages past their expiry, or expiring too far ahead (ignored)
    invalid: int = 0  # undecodable bodies and bad signatures
    rejected: int = 0  # refused by a topic validator
    ignored: int = 0  # ignored by a topic validator
    validator_errors: int = 0  # a validator raised: counted as ignored
    undecodable: int = 0  # RPCs that did not decode
    graylisted_dropped: int = 0  # RPCs dropped unread from graylisted peers
    graylisted: int = 0  # peers that fell below the graylist threshold
    ihave_sent: int = 0
    iwant_sent: int = 0  # ids asked for
    iwant_served: int = 0  # messages sent in answer to IWANT
    iwant_received: int = 0  # asked-for messages that arrived and were accepted
    broken_promises: int = 0
    graft_sent: int = 0
    prune_sent: int = 0
