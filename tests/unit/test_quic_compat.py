"""Pins each aioquic internal that nunet/net/quic/compat.py uses to the installed aioquic: an
upgrade that renames or changes one fails here, not in a running node."""

from __future__ import annotations

import aioquic
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicFrameType, QuicStreamFrame
from test_quic_session import LIMITS, Link, client_session

from nunet.crypto.keys import KeyPair
from nunet.net.quic import compat
from nunet.net.quic.identity import NodeIdentity, certificate_key


def _open() -> tuple[Link, QuicConnection, QuicConnection]:
    server_id = NodeIdentity(KeyPair.generate())
    client = client_session(NodeIdentity(KeyPair.generate()))
    link = Link(client, server_id)
    link.run()
    assert link.server is not None
    return link, client.conn, link.server.conn


def test_version_is_the_one_these_pins_were_written_for() -> None:
    # Not a pin by itself: a reminder to re-read compat.py when aioquic moves.
    major, minor = (int(x) for x in aioquic.__version__.split(".")[:2])
    assert (major, minor) >= (1, 2)


def test_peer_certificate_is_the_servers() -> None:
    link, client, server = _open()
    cert = compat.peer_certificate(client)
    assert cert is not None
    assert certificate_key(cert) == link.server_identity.public_key
    assert compat.peer_certificate(server) is None  # clients present no certificate


def test_stream_unsent_follows_the_sender() -> None:
    link, client, _ = _open()
    sid = client.get_next_available_stream_id(is_unidirectional=True)
    client.send_stream_data(sid, bytes(100_000))
    assert compat.stream_unsent(client, sid, 100_000) == 100_000
    client.datagrams_to_send(link.now)
    unsent = compat.stream_unsent(client, sid, 100_000)
    assert 0 <= unsent < 100_000
    assert compat.stream_unsent(client, 999, 5) == 0  # unknown stream: nothing unsent


def test_datagrams_pending_counts_the_queue() -> None:
    link, client, _ = _open()
    for _ in range(3):
        client.send_datagram_frame(b"d")
    assert compat.datagrams_pending(client) == 3
    client.datagrams_to_send(link.now)
    assert compat.datagrams_pending(client) == 0


def test_close_event_appears_as_soon_as_a_close_begins() -> None:
    link, client, server = _open()
    assert compat.close_event(client) is None
    client.close(error_code=0x42, reason_phrase="testing")
    event = compat.close_event(client)
    assert event is not None
    assert event.error_code == 0x42
    for data, _ in client.datagrams_to_send(link.now):
        server.receive_datagram(data, ("10.0.0.1", 4000), link.now)
    peer_view = compat.close_event(server)
    assert peer_view is not None
    assert peer_view.error_code == 0x42
    assert peer_view.frame_type is None  # an application close, as session.py expects


def test_limit_peer_streams_reaches_the_peer() -> None:
    _, client, server = _open()
    assert client._remote_max_streams_uni == LIMITS.max_streams
    assert client._remote_max_streams_bidi == 0
    assert server._local_max_streams_uni.sent == LIMITS.max_streams


def test_receive_span_sees_out_of_order_data() -> None:
    _, _client, server = _open()
    assert compat.receive_span(server) == 0
    stream = server._get_or_create_stream(QuicFrameType.STREAM_BASE, 6)
    stream.receiver.handle_frame(QuicStreamFrame(offset=5000, data=b"x"))
    assert compat.receive_span(server) == 5001


def test_probe_timeouts_count_unanswered_probes() -> None:
    link, client, _ = _open()
    assert compat.probe_timeouts(client) == 0
    sid = client.get_next_available_stream_id(is_unidirectional=True)
    client.send_stream_data(sid, b"into the void")
    now = link.now
    client.datagrams_to_send(now)  # sent, never acknowledged
    for _ in range(3):
        timer = client.get_timer()
        assert timer is not None
        now = timer
        client.handle_timer(now)
        client.datagrams_to_send(now)
    assert compat.probe_timeouts(client) == 3


def test_piggyback_ack_makes_the_pending_ack_due() -> None:
    from aioquic.tls import Epoch

    link, client, server = _open()
    sid = client.get_next_available_stream_id(is_unidirectional=True)
    client.send_stream_data(sid, b"ping")
    for data, _ in client.datagrams_to_send(link.now):
        server.receive_datagram(data, ("10.0.0.1", 4000), link.now)
    space = server._spaces[Epoch.ONE_RTT]
    assert space.ack_at is not None
    assert space.ack_at > link.now  # delayed: aioquic would send it alone, later
    compat.piggyback_ack(server, link.now)
    assert space.ack_at == link.now
    server.send_stream_data(3, b"pong")
    assert len(server.datagrams_to_send(link.now)) == 1  # pong and the ACK in one packet
    assert space.ack_at is None
