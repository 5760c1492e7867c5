"""The knobs of the QUIC transport, with defaults sized for a node with a few hundred peers."""

from __future__ import annotations

import msgspec

from nunet.wire.framing import DEFAULT_MAX_FRAME_SIZE


class QuicLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_peers: int = 512
    """Peers with a connection; an incoming connection over the limit is refused."""
    max_handshakes: int = 256
    """Connections still in their handshake; Initial packets over the limit are dropped."""
    max_streams: int = 4
    """Unidirectional streams a peer may open on one connection (nunet sends on one)."""
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    """Largest frame payload accepted from a peer (1 MiB, as DMS)."""
    send_buffer: int = 4 << 20
    """Bytes queued for one peer (not yet sent) before `send` waits."""
    max_inbound_requests: int = 256
    """Requests from one peer being handled at once; more are answered 'busy'."""
    datagram_queue: int = 1024
    """DATAGRAM frames waiting to be sent per peer before `send_datagram` returns False."""
    max_datagram_size: int = 1350
    """Largest UDP payload sent (QUIC packet size); RFC 9000 allows 1200 and up."""
    stream_window: int = 2 << 20
    """Initial per-stream flow-control window (aioquic doubles it as data flows)."""
    connection_window: int = 4 << 20
    """Initial connection flow-control window."""
    max_receive_span: int = 16 << 20
    """Out-of-order bytes a peer may make us buffer on one stream before it is cut off."""
    socket_buffer: int = 4 << 20
    """SO_RCVBUF / SO_SNDBUF asked for (the kernel may cap it: net.core.rmem_max)."""
    idle_timeout: float = 60.0
    """A connection with no packets for this long is closed (peers reconnect on demand)."""
    max_probe_timeouts: int = 7
    """Probe timeouts in a row, unanswered, before the peer is taken for gone (they back off
    exponentially: ~2 s on a LAN, ~20 s across the world)."""
    handshake_timeout: float = 5.0
    """Dial: TLS handshake plus CHALLENGE; accept: the client's AUTH must arrive within this."""
    dial_timeout: float = 10.0
    """One dial attempt to one address, including waiting out a simultaneous dial."""
    close_timeout: float = 1.0
    """How long a graceful close waits for the peer before closing hard."""
