"""QoS single check: probe peers, keep RTT and availability, score them (see README.md)."""

from nunet.net.qos.core import PeerScore, QosConfig, QosCore, QosStats, score_of
from nunet.net.qos.service import MAX_ECHO, PING_PREFIX, PROBE_PREFIX, QosService

__all__ = [
    "MAX_ECHO",
    "PING_PREFIX",
    "PROBE_PREFIX",
    "PeerScore",
    "QosConfig",
    "QosCore",
    "QosService",
    "QosStats",
    "score_of",
]
