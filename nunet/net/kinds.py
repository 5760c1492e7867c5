"""Message kinds on the wire (the frame type byte). One registry so no two protocols collide."""

from __future__ import annotations

# transport-internal
AUTH = 0x01  # client proof of its node key, first frame on a connection
REQUEST = 0x02  # [u8 kind][u32 request id][payload]
REPLY = 0x03  # [u32 request id][u8 status][payload]
CLOSE = 0x04  # reason, before closing
CHALLENGE = 0x05  # server: [32 random bytes][16-byte instance id], first frame it sends
ACCEPT = 0x06  # server: the client's AUTH is accepted and this is the peer's connection
# protocols
PING = 0x10
ACTOR = 0x20  # actor envelopes (actors issue)
DHT = 0x30
GOSSIP = 0x40
QOS = 0x50
BENCH = 0x60  # `nunet bench` network stage: echo and upload probes

PROTOCOL_KINDS = frozenset({PING, ACTOR, DHT, GOSSIP, QOS, BENCH})
