"""The QUIC session core in memory: two `Session`s (or a session and a raw aioquic client) joined by
a list of datagrams and a fake clock. No sockets, no sleeps."""

from __future__ import annotations

import datetime
import os
import ssl
from collections import Counter
from collections.abc import Callable

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nunet.crypto.keys import KeyPair
from nunet.errors import FrameTooLarge, PeerIdentityMismatch, PeerUnreachable, SecurityError
from nunet.net import kinds
from nunet.net.quic.identity import NodeIdentity
from nunet.net.quic.limits import QuicLimits
from nunet.net.quic.session import (
    ALPN,
    Closed,
    Code,
    Datagram,
    Event,
    Frames,
    Identified,
    Opened,
    Phase,
    Session,
    quic_configuration,
)
from nunet.wire.framing import FrameDecoder, encode_frame, encode_frames

CLIENT_ADDR = ("10.0.0.1", 4000)
SERVER_ADDR = ("10.0.0.2", 9000)
KNOWN = bytes(sorted({kinds.AUTH, kinds.REQUEST, kinds.REPLY, kinds.CLOSE, kinds.CHALLENGE,
                      kinds.ACCEPT, kinds.PING, kinds.DHT}))
LIMITS = QuicLimits(handshake_timeout=2.0, close_timeout=1.0, max_frame_size=4096)

Decide = Callable[[Session, Identified], None]


def _proceed(session: Session, _event: Identified) -> None:
    if session.is_client:
        session.proceed()
    else:
        session.accept()


class Link:
    """A client endpoint (a Session or a raw QuicConnection) and a server Session."""

    def __init__(
        self,
        client: Session | QuicConnection,
        server_identity: NodeIdentity,
        *,
        decide: Decide = _proceed,
        limits: QuicLimits = LIMITS,
    ) -> None:
        self.now = 1000.0
        self.client = client
        self.server_identity = server_identity
        self.server: Session | None = None
        self.decide = decide
        self.limits = limits
        self.server_metrics: Counter[str] = Counter()
        self.events: dict[str, list[Event]] = {"client": [], "server": []}
        self.packets = {"client": 0, "server": 0}
        self.client_quic.connect(SERVER_ADDR, self.now)

    @property
    def client_quic(self) -> QuicConnection:
        return self.client.conn if isinstance(self.client, Session) else self.client

    def run(self, rounds: int = 20, step: float = 0.002) -> None:
        """Exchange datagrams until both sides are quiet (or `rounds` are over)."""
        for _ in range(rounds):
            moved = self._move_client() + self._move_server()
            self.now += step
            self._timers()
            if not moved:
                # quiet, unless a pacing or ack timer is about to let something go
                soon = [t for t in (self.client.get_timer(),
                                    self.server.get_timer() if self.server else None)
                        if t is not None and t - self.now < 0.05]
                if not soon:
                    break
                self.now = max(self.now, min(soon))
                self._timers()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._timers()
        self.run()

    def _timers(self) -> None:
        for side in (self.client, self.server):
            if side is None:
                continue
            timer = side.get_timer()
            if timer is not None and timer <= self.now:
                side.handle_timer(self.now)
                if isinstance(side, Session):
                    self._collect("client" if side is self.client else "server", side)

    def _move_client(self) -> int:
        out = self.client.datagrams_to_send(self.now)
        for data, _addr in out:
            if self.server is None:
                self._make_server(data)
            assert self.server is not None
            self.server.receive_datagram(data, CLIENT_ADDR, self.now)
            self._collect("server", self.server)
        self.packets["client"] += len(out)
        return len(out)

    def _move_server(self) -> int:
        if self.server is None:
            return 0
        out = self.server.datagrams_to_send(self.now)
        for data, _addr in out:
            if isinstance(self.client, Session):
                self.client.receive_datagram(data, SERVER_ADDR, self.now)
                self._collect("client", self.client)
            else:
                self.client.receive_datagram(data, SERVER_ADDR, self.now)
        self.packets["server"] += len(out)
        return len(out)

    def _make_server(self, first: bytes) -> None:
        from aioquic.buffer import Buffer  # type: ignore[attr-defined]
        from aioquic.quic.packet import pull_quic_header

        header = pull_quic_header(Buffer(data=first), host_cid_length=8)
        quic = QuicConnection(
            configuration=quic_configuration(self.server_identity, self.limits, is_client=False),
            original_destination_connection_id=header.destination_cid,
        )
        self.server = Session(
            self.server_identity, quic, self.limits, self.server_metrics, KNOWN, self.now
        )

    def _collect(self, side: str, session: Session) -> None:
        for event in session.take_events():
            self.events[side].append(event)
            if isinstance(event, Identified):
                self.decide(session, event)

    def of(self, side: str, cls: type) -> list[object]:
        return [e for e in self.events[side] if isinstance(e, cls)]

    def frames(self, side: str) -> list[tuple[int, bytes]]:
        out = []
        for event in self.of(side, Frames):
            assert isinstance(event, Frames)
            out.extend((k, bytes(p)) for k, p in event.frames)
        return out

    def closed(self, side: str) -> Closed:
        found = self.of(side, Closed)
        assert len(found) == 1, self.events[side]
        event = found[0]
        assert isinstance(event, Closed)
        return event


def client_session(identity: NodeIdentity, expected: str | None = None,
                   metrics: Counter[str] | None = None) -> Session:
    quic = QuicConnection(configuration=quic_configuration(identity, LIMITS, is_client=True))
    return Session(identity, quic, LIMITS, metrics if metrics is not None else Counter(), KNOWN,
                   1000.0, expected_did=expected)


def raw_client() -> QuicConnection:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    return QuicConnection(configuration=config)


def server_frames(quic: QuicConnection) -> list[tuple[int, bytes]]:
    """What a raw client received from the server's stream."""
    decoder = FrameDecoder()
    out: list[tuple[int, bytes]] = []
    while (event := quic.next_event()) is not None:
        data = getattr(event, "data", None)
        if getattr(event, "stream_id", None) is not None and data is not None:
            out.extend((k, bytes(p)) for k, p in decoder.feed(data))
    return out


@pytest.fixture(name="ids")
def _ids() -> tuple[NodeIdentity, NodeIdentity]:
    return NodeIdentity(KeyPair.generate()), NodeIdentity(KeyPair.generate())


# --- the good path -------------------------------------------------------------------------------


def test_handshake_binds_both_dids_and_opens(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    client_id, server_id = ids
    client = client_session(client_id, expected=server_id.did)
    link = Link(client, server_id)
    link.run()
    assert link.server is not None
    client_ident = link.of("client", Identified)
    server_ident = link.of("server", Identified)
    assert [e.did for e in client_ident] == [server_id.did]  # type: ignore[attr-defined]
    assert [e.did for e in server_ident] == [client_id.did]  # type: ignore[attr-defined]
    assert server_ident[0].instance == client_id.instance  # type: ignore[attr-defined]
    assert client_ident[0].instance == server_id.instance  # type: ignore[attr-defined]
    assert len(link.of("client", Opened)) == 1
    assert client.phase is Phase.OPEN
    assert link.server.phase is Phase.OPEN


def test_frames_flow_both_ways_in_order_and_coalesce(
    ids: tuple[NodeIdentity, NodeIdentity],
) -> None:
    client_id, server_id = ids
    client = client_session(client_id)
    link = Link(client, server_id)
    link.run()
    assert link.server is not None
    before = link.packets["client"]
    payloads = [i.to_bytes(4, "big") + bytes(60) for i in range(500)]
    for p in payloads:
        client.queue(kinds.PING, p)
    link.server.queue(kinds.DHT, b"back")
    link.run()
    assert link.frames("server") == [(kinds.PING, p) for p in payloads]
    assert link.frames("client") == [(kinds.DHT, b"back")]
    # 500 frames of 66 wire bytes fit ~20 to a 1350-byte packet: far fewer packets than messages
    assert link.packets["client"] - before <= 40


def test_frames_sent_before_accept_are_held_then_released(
    ids: tuple[NodeIdentity, NodeIdentity],
) -> None:
    client_id, server_id = ids
    client = client_session(client_id)
    pending: list[Session] = []

    def later(session: Session, event: Identified) -> None:
        if session.is_client:
            session.proceed()
            session.queue(kinds.PING, b"tentative")  # written right behind AUTH
        else:
            pending.append(session)

    link = Link(client, server_id, decide=later)
    link.run()
    assert link.frames("server") == []  # nothing released before the manager's decision
    pending[0].accept()
    link._collect("server", pending[0])
    assert link.frames("server") == [(kinds.PING, b"tentative")]


def test_datagrams_after_open(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    client_id, server_id = ids
    client = client_session(client_id)
    link = Link(client, server_id)
    assert client.send_datagram(b"early") == "closed"
    link.run()
    assert client.send_datagram(b"x" * 100) == "ok"
    assert client.send_datagram(b"x" * 5000) == "too_big"
    link.run()
    got = [e.data for e in link.of("server", Datagram)]  # type: ignore[attr-defined]
    assert got == [b"x" * 100]


def test_goodbye_makes_the_peer_close(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    client_id, server_id = ids
    client = client_session(client_id)
    link = Link(client, server_id)
    link.run()
    client.queue(kinds.PING, b"last words")
    client.goodbye("leaving", link.now)
    link.run()
    assert link.frames("server") == [(kinds.PING, b"last words"), (kinds.CLOSE, b"leaving")]
    # the server's dispatcher (network.py) turns CLOSE into peer_goodbye
    assert link.server is not None
    link.server.peer_goodbye(memoryview(b"leaving"))
    link._collect("server", link.server)
    link.run()
    assert link.closed("server").by_peer
    assert link.closed("client").code == Code.BYE
    assert client.quic_closing


# --- identity -------------------------------------------------------------------------------------


def test_server_with_another_did_than_expected_is_refused(
    ids: tuple[NodeIdentity, NodeIdentity],
) -> None:
    client_id, server_id = ids
    someone_else = KeyPair.generate().did
    client = client_session(client_id, expected=someone_else)
    link = Link(client, server_id)
    link.run()
    closed = link.closed("client")
    assert isinstance(closed.error, PeerIdentityMismatch)
    assert someone_else in str(closed.error)
    assert server_id.did in str(closed.error)
    assert link.of("client", Identified) == []


def test_certificate_without_the_private_key_fails_the_handshake(
    ids: tuple[NodeIdentity, NodeIdentity],
) -> None:
    """A forged certificate: it carries the victim's key, but the server signs with its own."""
    client_id, server_id = ids
    victim = NodeIdentity(KeyPair.generate())
    server_id.certificate = victim.certificate  # key in cert != key that signs CertificateVerify
    metrics: Counter[str] = Counter()
    client = client_session(client_id, expected=victim.did, metrics=metrics)
    link = Link(client, server_id)
    link.run()
    closed = link.closed("client")
    assert isinstance(closed.error, PeerUnreachable)
    assert "handshake failed" in str(closed.error)
    assert metrics["handshake_failures"] == 1
    assert link.of("client", Identified) == []


def test_non_ed25519_certificate_is_refused(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    client_id, server_id = ids
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_id.did)])
    server_id.private_key = key  # type: ignore[assignment]
    server_id.certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2100, 1, 1)).sign(key, hashes.SHA256())
    )
    client = client_session(client_id)
    link = Link(client, server_id)
    link.run()
    closed = link.closed("client")
    assert isinstance(closed.error, SecurityError)
    assert "Ed25519" in str(closed.error)


# --- a client that does not prove its key ---------------------------------------------------------


def _raw_link(server_id: NodeIdentity) -> tuple[Link, QuicConnection]:
    raw = raw_client()
    link = Link(raw, server_id)
    link.run()
    return link, raw


def test_replayed_auth_on_a_second_connection_is_refused(
    ids: tuple[NodeIdentity, NodeIdentity],
) -> None:
    client_id, server_id = ids
    # connection 1: record the proof the real client sent
    link1, raw1 = _raw_link(server_id)
    challenge1 = dict(server_frames(raw1))[kinds.CHALLENGE][:32]
    proof = client_id.auth_payload(server_id.public_key, challenge1)
    sid = raw1.get_next_available_stream_id(is_unidirectional=True)
    raw1.send_stream_data(sid, encode_frame(kinds.AUTH, proof))
    link1.run()
    assert [e.did for e in link1.of("server", Identified)] == [client_id.did]  # type: ignore[attr-defined]
    # connection 2: the same bytes, another challenge
    link2, raw2 = _raw_link(server_id)
    sid = raw2.get_next_available_stream_id(is_unidirectional=True)
    raw2.send_stream_data(sid, encode_frame(kinds.AUTH, proof))
    link2.run()
    assert link2.of("server", Identified) == []
    assert link2.closed("server").code == Code.AUTH_FAILED
    assert link2.server_metrics["auth_failures"] == 1


def test_auth_for_another_server_is_refused(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    client_id, server_id = ids
    link, raw = _raw_link(server_id)
    challenge = dict(server_frames(raw))[kinds.CHALLENGE][:32]
    other_server = NodeIdentity(KeyPair.generate())
    proof = client_id.auth_payload(other_server.public_key, challenge)
    raw.send_stream_data(2, encode_frame(kinds.AUTH, proof))
    link.run()
    assert link.closed("server").code == Code.AUTH_FAILED


def test_missing_auth_times_out(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    _, server_id = ids
    link, _raw = _raw_link(server_id)
    assert link.server is not None
    assert link.server.phase is Phase.HANDSHAKE
    link.advance(LIMITS.handshake_timeout + 0.1)
    closed = link.closed("server")
    assert closed.code == Code.HANDSHAKE_TIMEOUT
    assert link.server_metrics["handshake_timeouts"] == 1


@pytest.mark.parametrize(
    ("data", "counter"),
    [
        (encode_frame(kinds.PING, b"hello"), "auth_failures"),  # a frame, but not AUTH
        (b"\xff" * 64, "frames_too_large"),  # garbage: an 8-byte varint far over the limit
        (b"\x05\x99hello", "bad_frames"),  # unknown kind 0x99
    ],
)
def test_anything_but_auth_first_closes_the_connection(
    ids: tuple[NodeIdentity, NodeIdentity], data: bytes, counter: str
) -> None:
    _, server_id = ids
    link, raw = _raw_link(server_id)
    raw.send_stream_data(2, data)
    link.run()
    closed = link.closed("server")
    assert closed.code in (Code.AUTH_FAILED, Code.PROTOCOL_VIOLATION)
    assert link.server_metrics[counter] == 1
    assert link.of("server", Identified) == []


# --- a misbehaving peer after the handshake ------------------------------------------------------


def _open_link(ids: tuple[NodeIdentity, NodeIdentity]) -> tuple[Link, Session]:
    client_id, server_id = ids
    client = client_session(client_id)
    link = Link(client, server_id)
    link.run()
    assert client.phase is Phase.OPEN
    return link, client


def test_oversize_frame_closes_and_counts(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    link, client = _open_link(ids)
    client.queue(kinds.PING, bytes(LIMITS.max_frame_size + 1))
    link.run()
    closed = link.closed("server")
    assert isinstance(closed.error, FrameTooLarge)
    assert link.server_metrics["frames_too_large"] == 1
    assert link.closed("client").by_peer


def test_unknown_kind_closes_and_counts(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    link, client = _open_link(ids)
    client.queue(0x99, b"what is this")
    link.run()
    assert link.closed("server").code == Code.PROTOCOL_VIOLATION
    assert link.server_metrics["bad_frames"] == 1


def test_stream_ending_inside_a_frame_is_a_violation(
    ids: tuple[NodeIdentity, NodeIdentity],
) -> None:
    link, client = _open_link(ids)
    client.conn.send_stream_data(client._sid or 2, encode_frames([(kinds.PING, b"x" * 10)])[:5],
                                 end_stream=True)
    link.run()
    assert link.closed("server").code == Code.PROTOCOL_VIOLATION


def test_duplicate_rejection_hands_back_the_tentative_frames(
    ids: tuple[NodeIdentity, NodeIdentity],
) -> None:
    client_id, server_id = ids
    client = client_session(client_id)

    def refuse(session: Session, _event: Identified) -> None:
        if session.is_client:
            session.proceed()
            session.queue(kinds.PING, b"one")
            session.queue(kinds.PING, b"two")
        else:
            session.reject(Code.DUPLICATE, "the other dial wins")

    link = Link(client, server_id, decide=refuse)
    link._move_client()  # Initial
    link._move_server()  # server flight: the client identifies it, proceeds, queues one, two
    link._move_client()  # AUTH, one, two: the server refuses
    client.queue(kinds.PING, b"three")  # not written yet when the refusal arrives
    link._move_server()
    assert client._out == []
    closed = link.closed("client")
    assert closed.code == Code.DUPLICATE
    decoder = FrameDecoder()
    resent = [(k, bytes(p)) for chunk in closed.resend for k, p in decoder.feed(chunk)]
    assert resent == [(kinds.PING, b"one"), (kinds.PING, b"two"), (kinds.PING, b"three")]


def test_backpressure_counts_unsent_bytes(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    link, client = _open_link(ids)
    for _ in range(200):
        client.queue(kinds.PING, bytes(1000))
    assert client.pending_bytes >= 200 * 1000
    # one flush with no acks coming back: the congestion window keeps most of it unsent
    client.datagrams_to_send(link.now)
    assert 0 < client.pending_bytes < 200 * 1000
    link.run(rounds=200)
    assert client.pending_bytes == 0
    assert len(link.frames("server")) == 200


def test_auth_payload_is_bound_to_its_inputs() -> None:
    me = NodeIdentity(KeyPair.generate())
    server_key = os.urandom(32)
    a = me.auth_payload(server_key, b"c" * 32)
    b = me.auth_payload(server_key, b"d" * 32)
    assert a[:32] == b[:32] == me.public_key
    assert a[32:96] != b[32:96]


def test_a_peer_that_stops_answering_is_given_up(ids: tuple[NodeIdentity, NodeIdentity]) -> None:
    link, client = _open_link(ids)
    client.queue(kinds.PING, b"hello?")
    metrics = client.metrics
    for _ in range(LIMITS.max_probe_timeouts + 2):  # the server is gone: nothing comes back
        client.datagrams_to_send(link.now)
        timer = client.get_timer()
        assert timer is not None
        link.now = timer
        client.handle_timer(link.now)
        link._collect("client", client)
        if link.of("client", Closed):
            break
    closed = link.closed("client")
    assert "not responding" in str(closed.error)
    assert metrics["peers_not_responding"] == 1
