"""Every use of aioquic internals, in one place (tests/unit/test_quic_compat.py pins each one to the
installed aioquic, so an upgrade that moves them fails there, loudly, not in production).

aioquic's public API has no accessor for these; each is small and read-mostly:
- the peer's certificate after the handshake (the server's DID binding, see identity.py);
- how much of a stream's written data is not yet sent (send-side backpressure);
- how many DATAGRAM frames wait to be sent (aioquic queues them without limit);
- whether a close has begun (aioquic reports a peer's close only after the draining period);
- the peer's stream limits we announce (aioquic hard-codes 128 of each kind);
- how many probe timeouts in a row went unanswered (aioquic never gives up before the idle
  timeout, so a crashed peer would keep a connection for a minute);
- how much out-of-order data a stream holds (see `receive_span`);
- the delayed-ACK deadline, to send a pending ACK with our data instead of alone later.
"""

from __future__ import annotations

from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated
from aioquic.tls import Epoch
from cryptography import x509


def peer_certificate(conn: QuicConnection) -> x509.Certificate | None:
    cert: x509.Certificate | None = conn.tls._peer_certificate
    return cert


def stream_unsent(conn: QuicConnection, stream_id: int, written: int) -> int:
    """Bytes of the `written` bytes given to `send_stream_data` that were never sent yet."""
    stream = conn._streams.get(stream_id)
    if stream is None:
        return 0
    sent: int = stream.sender.highest_offset
    return written - sent


def datagrams_pending(conn: QuicConnection) -> int:
    return len(conn._datagrams_pending)


def close_event(conn: QuicConnection) -> ConnectionTerminated | None:
    """The close in progress (ours or the peer's), as soon as it begins."""
    event: ConnectionTerminated | None = conn._close_event
    return event


def limit_peer_streams(conn: QuicConnection, bidi: int, uni: int) -> None:
    """What the transport parameters announce; call before the handshake starts."""
    for limit, value in ((conn._local_max_streams_bidi, bidi), (conn._local_max_streams_uni, uni)):
        limit.value = limit.sent = value


def receive_span(conn: QuicConnection) -> int:
    """The most bytes any stream makes us hold (received out of order, beyond what was delivered).

    aioquic doubles a stream's window whenever the peer's highest offset passes half of it, so a
    peer that keeps leaving a gap could grow that buffer without bound; the session cuts it off
    past `QuicLimits.max_receive_span`.
    """
    span = 0
    for stream in conn._streams.values():
        receiver = stream.receiver
        held: int = receiver.highest_offset - receiver.starting_offset()
        if held > span:
            span = held
    return span


def probe_timeouts(conn: QuicConnection) -> int:
    """Probe timeouts (PTO) in a row with no acknowledgement from the peer."""
    count: int = conn._loss._pto_count
    return count


def piggyback_ack(conn: QuicConnection, now: float) -> None:
    """Make a delayed ACK due now, so the packet we are about to send carries it.

    aioquic writes an ACK only once its deadline (receipt + 1 ms) has passed, so a reply sent
    sooner goes without it and a lone ACK packet follows; in a request/reply exchange that is
    half a packet more per message each way. RFC 9000 §13.2.1 asks for bundling instead.
    """
    space = conn._spaces.get(Epoch.ONE_RTT)
    if space is not None and space.ack_at is not None and space.ack_at > now:
        space.ack_at = now
