"""Gossip pub/sub (see README.md): a sans-I/O router core and its asyncio service."""

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
from nunet.net.gossip.params import GossipParams, ScoreParams
from nunet.net.gossip.router import GossipRouter

TOPIC_HELLO = "/nunet/hello"
TOPIC_DEPLOYMENT = "/nunet/deployment"
TOPIC_STATUS = "/nunet/status"

__all__ = [
    "TOPIC_DEPLOYMENT",
    "TOPIC_HELLO",
    "TOPIC_STATUS",
    "Action",
    "Deliver",
    "Disconnect",
    "GossipParams",
    "GossipRouter",
    "GossipStats",
    "Message",
    "Penalise",
    "ScoreParams",
    "Send",
    "Validator",
    "Verdict",
]
