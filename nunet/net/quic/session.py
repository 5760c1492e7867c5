"""One QUIC connection's protocol core, sans-I/O: datagrams and `now` in; datagrams and events out.

A `Session` wraps an aioquic `QuicConnection` and adds what nunet puts on top of it: the DID
binding (identity.py), one unidirectional stream per direction carrying frames
`[varint len][u8 kind][payload]` (nunet.wire.framing), batching of queued frames into one stream
write per flush, and DATAGRAM frames. It never touches a socket or a clock; `endpoint.py` drives
it and `network.py` makes the decisions it asks for.

Lifecycle (the order of frames on the two streams):

    client                                   server
    TLS handshake (server cert = server key) ->
                                          <- CHALLENGE  (in the server's first flight)
    [Identified(server DID): manager says proceed() or abandon()]
    AUTH, then tentative frames           ->
                                             [Identified(client DID): accept() or reject()]
                                          <- ACCEPT, then frames
    [Opened]                                 frames held after AUTH are released on accept()

Invariants:
- Nothing but CHALLENGE, then ACCEPT, comes first from a server; nothing but AUTH first from a
  client; a violation closes the connection with an application error code and a `Closed` event.
- The server releases no frame of a client before accept(); the client keeps a copy of what it
  wrote between AUTH and ACCEPT (`tentative`), handed back in `Closed.resend` if the server
  rejects the connection as a duplicate, so the manager can send it again on the winner.
- A peer's fault never raises out of a method: it becomes a `Closed` event (and a counter).
- Events come out in the order their causes arrived; `take_events()` hands them over.
"""

from __future__ import annotations

import enum
import logging
import os
from collections import Counter
from collections.abc import Iterable
from typing import Literal

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection

from nunet.crypto.did import did_from_public_key
from nunet.errors import (
    DecodeError,
    FrameTooLarge,
    NunetError,
    PeerIdentityMismatch,
    PeerUnreachable,
    RemoteProtocolError,
    SecurityError,
)
from nunet.net import kinds
from nunet.net.quic import compat
from nunet.net.quic.identity import (
    CHALLENGE_SIZE,
    NodeIdentity,
    certificate_key,
    split_challenge,
    verify_auth,
)
from nunet.net.quic.limits import QuicLimits
from nunet.wire.framing import FrameDecoder, encode_frame, encode_frames

log = logging.getLogger("nunet.net.quic")

ALPN = "nunet/1"
_FRAME_OVERHEAD = 10  # varint length + kind byte, generously: what a queued frame adds on the wire
_DATAGRAM_OVERHEAD = 48  # short header, packet number, AEAD tag, DATAGRAM frame header, slack

Frame = tuple[int, memoryview]


class Code(enum.IntEnum):
    """Application error codes in QUIC CONNECTION_CLOSE (frame type absent)."""

    BYE = 0x0  # graceful close after CLOSE
    PROTOCOL_VIOLATION = 0x10  # garbage, oversize, unknown kind, wrong order, reset stream
    AUTH_FAILED = 0x11
    IDENTITY_MISMATCH = 0x12
    DUPLICATE = 0x13  # simultaneous dial: the other connection wins
    PEER_LIMIT = 0x14
    HANDSHAKE_TIMEOUT = 0x15
    SHUTDOWN = 0x16
    REPLACED = 0x17  # a newer connection from the same peer took over
    ABANDONED = 0x18  # the client already had a connection to this peer


class Phase(enum.Enum):
    HANDSHAKE = "handshake"  # TLS, CHALLENGE, AUTH
    DECIDING = "deciding"  # Identified emitted: waiting for proceed/accept or abandon/reject
    TENTATIVE = "tentative"  # client: AUTH sent, frames flow, no ACCEPT yet
    OPEN = "open"
    CLOSED = "closed"


# --- events -----------------------------------------------------------------------------------


class Identified:
    """The peer proved `did` (client: from the server's certificate; server: from AUTH)."""

    __slots__ = ("did", "instance")

    def __init__(self, did: str, instance: bytes) -> None:
        self.did = did
        self.instance = instance


class Opened:
    """Client: the server accepted the connection (ACCEPT)."""

    __slots__ = ()


class Frames:
    """Frames from an open connection, in stream order (payloads are zero-copy views)."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames


class Datagram:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Closed:
    """The connection is unusable from now on (emitted once)."""

    __slots__ = ("by_peer", "code", "error", "reason", "resend")

    def __init__(
        self,
        error: NunetError,
        code: int,
        reason: str,
        by_peer: bool,
        resend: list[bytes] | None = None,
    ) -> None:
        self.error = error
        self.code = code
        self.reason = reason
        self.by_peer = by_peer
        self.resend = resend or []


Event = Identified | Opened | Frames | Datagram | Closed


def quic_configuration(
    identity: NodeIdentity, limits: QuicLimits, *, is_client: bool
) -> QuicConfiguration:
    import ssl

    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        idle_timeout=limits.idle_timeout,
        max_datagram_frame_size=65536,
        max_datagram_size=limits.max_datagram_size,
        max_stream_data=limits.stream_window,
        max_data=limits.connection_window,
        # Chains are not verified: the certificate is self-signed and what it proves is its key
        # (see identity.py), which the session checks against the DID itself.
        verify_mode=ssl.CERT_NONE,
    )
    config.certificate = identity.certificate
    config.private_key = identity.private_key
    return config


class Session:
    """See the module docstring. `metrics` is a counter dict shared with the manager."""

    def __init__(
        self,
        identity: NodeIdentity,
        conn: QuicConnection,
        limits: QuicLimits,
        metrics: Counter[str],
        known_kinds: bytes,
        now: float,
        *,
        expected_did: str | None = None,
    ) -> None:
        self.conn = conn
        self.is_client: bool = conn.configuration.is_client
        self.identity = identity
        self.limits = limits
        self.metrics = metrics
        self.expected_did = expected_did
        self.phase = Phase.HANDSHAKE
        self.peer_did: str | None = None
        self.peer_instance: bytes | None = None
        self.events: list[Event] = []
        self.cids_issued: list[bytes] = []
        self.cids_retired: list[bytes] = []
        self.terminated = False  # aioquic is done with it: the endpoint may forget its CIDs
        self._known = known_kinds
        self._decoders: dict[int, FrameDecoder] = {}
        self._handshake_done = False
        self._challenge: bytes | None = None  # server: sent; client: received
        self._peer_key: bytes | None = None  # client: the server's certificate key
        self._held_in: list[Frame] = []  # server: frames after AUTH, until accept()
        self._deadline: float | None = now + limits.handshake_timeout
        self._goodbye_sent = False
        self._received = 0  # datagrams processed
        # sending
        self._sid: int | None = None
        self._out: list[tuple[int, bytes | memoryview]] = []
        self._out_bytes = 0
        self._written = 0
        self._sent = 0  # of the written bytes, as of the last transmit
        self._unsent = 0
        self._tentative: list[bytes] | None = None
        self.held = False  # output paused while a simultaneous dial is settled
        compat.limit_peer_streams(conn, bidi=0, uni=limits.max_streams)

    # --- input ----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        self.conn.receive_datagram(data, addr, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            self._deadline = None
            if self._goodbye_sent:  # Closed went out with the goodbye
                self._goodbye_sent = False
                self.conn.close(error_code=int(Code.BYE), reason_phrase="peer did not close")
            elif self.phase in (Phase.HANDSHAKE, Phase.DECIDING):
                self.metrics["handshake_timeouts"] += 1
                self._fail(Code.HANDSHAKE_TIMEOUT, "handshake not finished in time",
                           PeerUnreachable("handshake timed out"))
        timer = self.conn.get_timer()
        if timer is not None and now >= timer:
            self.conn.handle_timer(now)
            if (
                self.phase is not Phase.CLOSED
                and compat.probe_timeouts(self.conn) >= self.limits.max_probe_timeouts
            ):
                self.metrics["peers_not_responding"] += 1
                self._close(Code.BYE, "peer not responding")
                self._emit_closed(PeerUnreachable("peer not responding"), Code.BYE,
                                  "peer not responding", by_peer=False)
        self._process(now)

    def get_timer(self) -> float | None:
        timer = self.conn.get_timer()
        deadline = self._deadline
        if deadline is not None and (timer is None or deadline < timer):
            return deadline
        return timer

    def take_events(self) -> list[Event]:
        events = self.events
        self.events = []
        return events

    # --- decisions (asked for by Identified) ----------------------------------------------------

    def proceed(self) -> None:
        """Client: send AUTH; frames queued from now on are tentative until ACCEPT."""
        assert self.is_client
        assert self.phase is Phase.DECIDING
        assert self._peer_key is not None
        assert self._challenge is not None
        self._write_control(kinds.AUTH, self.identity.auth_payload(self._peer_key, self._challenge))
        self._tentative = []
        self.phase = Phase.TENTATIVE

    def accept(self) -> None:
        """Server: send ACCEPT and release the frames that came after AUTH."""
        assert not self.is_client
        assert self.phase is Phase.DECIDING
        self._write_control(kinds.ACCEPT, b"")
        self.phase = Phase.OPEN
        self._deadline = None
        held, self._held_in = self._held_in, []
        if held:
            self._deliver(held)

    def reject(self, code: Code, reason: str) -> None:
        """Server: refuse the connection (the client learns why from the close code); client:
        abandon a connection the manager does not need."""
        self._fail(code, reason, PeerUnreachable(reason), count=False)

    # --- output ---------------------------------------------------------------------------------

    def queue(self, kind: int, payload: bytes | memoryview) -> None:
        """A frame for the next flush (many small ones then share one stream write)."""
        self._out.append((kind, payload))
        self._out_bytes += len(payload) + _FRAME_OVERHEAD

    def write_raw(self, chunks: Iterable[bytes]) -> None:
        """Already-encoded frames (a rejected connection's tentative writes), written before
        anything queued."""
        for chunk in chunks:
            self._write(chunk)

    def take_queue(self) -> list[tuple[int, bytes | memoryview]]:
        out, self._out = self._out, []
        self._out_bytes = 0
        return out

    @property
    def pending_bytes(self) -> int:
        """Bytes queued or written but not yet sent: what backpressure bounds."""
        return self._out_bytes + self._unsent

    @property
    def quic_closing(self) -> bool:
        """The QUIC connection is closing or gone (whoever began it)."""
        return self.terminated or compat.close_event(self.conn) is not None

    @property
    def usable(self) -> bool:
        return self.phase is Phase.OPEN or self.phase is Phase.TENTATIVE

    def send_datagram(self, data: bytes) -> Literal["ok", "closed", "full", "too_big"]:
        if self.phase is not Phase.OPEN:
            return "closed"
        if len(data) > self.max_datagram_payload:
            return "too_big"
        if compat.datagrams_pending(self.conn) >= self.limits.datagram_queue:
            return "full"
        self.conn.send_datagram_frame(data)
        return "ok"

    @property
    def max_datagram_payload(self) -> int:
        return self.limits.max_datagram_size - _DATAGRAM_OVERHEAD

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        if self._out and not self.held and self.phase is not Phase.CLOSED:
            self._flush()
        if self._written > self._sent:  # data goes out now: let it carry the pending ACK
            compat.piggyback_ack(self.conn, now)
        out = self.conn.datagrams_to_send(now)
        if self._sid is not None:
            self._unsent = compat.stream_unsent(self.conn, self._sid, self._written)
            self._sent = self._written - self._unsent
        return out

    def goodbye(self, reason: str, now: float) -> None:
        """Graceful close: CLOSE after everything queued; the peer then closes the connection
        (or we do, after `close_timeout`). Frames still arriving from the peer are dropped."""
        if self.phase is Phase.CLOSED:
            return
        if not self.usable:
            self.close(Code.BYE, reason)
            return
        self.held = False
        self._write_control(kinds.CLOSE, reason.encode("utf-8", "replace")[:256])
        self._goodbye_sent = True
        self._deadline = now + self.limits.close_timeout
        self.phase = Phase.CLOSED
        self._emit_closed(PeerUnreachable(f"disconnected: {reason}"), Code.BYE, reason, False)

    def close(self, code: Code, reason: str) -> None:
        """Close now, dropping anything unsent (also after a goodbye the peer left unanswered)."""
        if self.phase is not Phase.CLOSED:
            self._fail(code, reason, PeerUnreachable(reason), count=False)
        elif compat.close_event(self.conn) is None:
            self._goodbye_sent = False
            self.conn.close(error_code=int(code), reason_phrase=reason)

    def violation(self, reason: str, counter: str = "protocol_violations") -> None:
        """The manager found a frame that breaks the protocol (e.g. a control frame after open)."""
        self.metrics[counter] += 1
        self._fail(Code.PROTOCOL_VIOLATION, reason, RemoteProtocolError(reason))

    def peer_goodbye(self, reason: memoryview) -> None:
        """The peer sent CLOSE: all its frames have arrived; close the connection."""
        text = bytes(reason).decode("utf-8", "replace")
        self._close(Code.BYE, "bye")
        self._emit_closed(PeerUnreachable(f"peer disconnected: {text}"), Code.BYE, text, True)

    # --- internals ------------------------------------------------------------------------------

    def _process(self, now: float) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not None:
            kind = type(event)
            if kind is qe.StreamDataReceived:
                assert isinstance(event, qe.StreamDataReceived)
                self._on_stream(event.stream_id, event.data, event.end_stream)
            elif kind is qe.DatagramFrameReceived:
                assert isinstance(event, qe.DatagramFrameReceived)
                if self.phase is Phase.OPEN:
                    self.events.append(Datagram(event.data))
                else:
                    self.metrics["datagrams_dropped_in"] += 1
            elif kind is qe.ProtocolNegotiated:
                if not self.is_client and self._challenge is None:
                    self._send_challenge()
            elif kind is qe.HandshakeCompleted:
                self._handshake_done = True
                if self.is_client:
                    self._check_server()
            elif kind is qe.ConnectionIdIssued:
                assert isinstance(event, qe.ConnectionIdIssued)
                self.cids_issued.append(event.connection_id)
            elif kind is qe.ConnectionIdRetired:
                assert isinstance(event, qe.ConnectionIdRetired)
                self.cids_retired.append(event.connection_id)
            elif kind is qe.ConnectionTerminated:
                assert isinstance(event, qe.ConnectionTerminated)
                self.terminated = True
                self._on_close(event)
            elif kind is qe.StreamReset or kind is qe.StopSendingReceived:
                self.violation("peer reset a stream")
        if self.phase is not Phase.CLOSED:
            close = compat.close_event(conn)
            if close is not None:
                self._on_close(close)
            else:
                self._received += 1
                # every 16th datagram is often enough: the span can grow ~20 KB in between
                if (
                    not self._received & 15
                    and compat.receive_span(conn) > self.limits.max_receive_span
                ):
                    self.violation("too much out-of-order stream data", "flow_control_abuse")

    def _on_close(self, event: qe.ConnectionTerminated) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        code = event.error_code
        reason = event.reason_phrase
        app = event.frame_type is None
        if app and code == Code.DUPLICATE:
            resend = self._tentative or []
            self._tentative = None
            if self._out:  # queued but not yet written: theirs to resend too
                resend.append(encode_frames(self.take_queue()))
            self.events.append(
                Closed(PeerUnreachable(f"duplicate connection: {reason}"), code, reason, True,
                       resend)
            )
            return
        if app and code == Code.IDENTITY_MISMATCH:
            error: NunetError = PeerIdentityMismatch(reason)
        elif app:
            error = PeerUnreachable(f"closed by peer: {reason or _code_name(code)}")
        elif not self._handshake_done:
            self.metrics["handshake_failures"] += 1
            error = PeerUnreachable(f"handshake failed: {reason or hex(code)}")
        else:
            error = PeerUnreachable(f"connection lost: {reason or hex(code)}")
        self.events.append(Closed(error, code, reason, by_peer=True))

    def _send_challenge(self) -> None:
        self._challenge = os.urandom(CHALLENGE_SIZE)
        self._write_control(kinds.CHALLENGE, self._challenge + self.identity.instance)

    def _check_server(self) -> None:
        cert = compat.peer_certificate(self.conn)
        if cert is None:
            self._fail(Code.AUTH_FAILED, "server sent no certificate",
                       SecurityError("server sent no certificate"))
            return
        try:
            key = certificate_key(cert)
        except SecurityError as exc:
            self.metrics["auth_failures"] += 1
            self._fail(Code.AUTH_FAILED, str(exc), exc)
            return
        did = did_from_public_key(key)
        if did == self.identity.did:
            self._fail(Code.ABANDONED, "dialed ourselves",
                       PeerUnreachable("that address is this node"), count=False)
            return
        if self.expected_did is not None and did != self.expected_did:
            self.metrics["identity_mismatches"] += 1
            msg = f"expected {self.expected_did}, the server proved {did}"
            self._fail(Code.IDENTITY_MISMATCH, "not the DID the client dialed",
                       PeerIdentityMismatch(msg))
            return
        self._peer_key = key
        self.peer_did = did
        self._maybe_identified()

    def _maybe_identified(self) -> None:
        if (
            self.phase is Phase.HANDSHAKE
            and self._peer_key is not None
            and self._challenge is not None
        ):
            assert self.peer_did is not None
            assert self.peer_instance is not None
            self.phase = Phase.DECIDING
            self.events.append(Identified(self.peer_did, self.peer_instance))

    def _on_stream(self, stream_id: int, data: bytes, end: bool) -> None:
        if self.phase is Phase.CLOSED:
            if self._goodbye_sent:
                self._after_goodbye(stream_id, data)
            return
        decoder = self._decoders.get(stream_id)
        if decoder is None:
            if len(self._decoders) >= self.limits.max_streams:
                self.violation("too many streams")
                return
            decoder = self._decoders[stream_id] = FrameDecoder(
                self.limits.max_frame_size, self._known
            )
        try:
            frames = decoder.feed(data)
        except FrameTooLarge as exc:
            self.metrics["frames_too_large"] += 1
            self._fail(Code.PROTOCOL_VIOLATION, "frame too large", exc)
            return
        except DecodeError as exc:
            self.metrics["bad_frames"] += 1
            self._fail(Code.PROTOCOL_VIOLATION, "bad frame", exc)
            return
        if end and decoder.buffered:
            self.violation("stream ended inside a frame", "bad_frames")
            return
        if not frames:
            return
        if self.phase is Phase.OPEN and not self._held_in:
            self._deliver(frames)
        else:
            self._early(frames)

    def _after_goodbye(self, stream_id: int, data: bytes) -> None:
        """Both sides said goodbye at once: the peer's CLOSE ends it without waiting."""
        decoder = self._decoders.get(stream_id)
        try:
            frames = decoder.feed(data) if decoder is not None else []
        except DecodeError:
            frames = [(kinds.CLOSE, memoryview(b""))]
        if any(kind == kinds.CLOSE for kind, _ in frames):
            self._goodbye_sent = False
            self.conn.close(error_code=int(Code.BYE), reason_phrase="bye")

    def _deliver(self, frames: list[Frame]) -> None:
        self.metrics["frames_in"] += len(frames)
        self.events.append(Frames(frames))

    def _early(self, frames: list[Frame]) -> None:
        """Frames before the connection is open: the handshake's control frames come first."""
        for i, (kind, payload) in enumerate(frames):
            phase = self.phase
            if phase is Phase.CLOSED:
                return
            if phase is Phase.OPEN or (phase is Phase.DECIDING and not self.is_client):
                if phase is Phase.OPEN:
                    self._deliver(frames[i:])
                else:
                    self._held_in.extend(frames[i:])
                return
            if self.is_client:
                self._client_control(kind, payload)
            else:
                self._server_control(kind, payload)

    def _client_control(self, kind: int, payload: memoryview) -> None:
        if kind == kinds.CHALLENGE and self._challenge is None:
            try:
                self._challenge, self.peer_instance = split_challenge(payload)
            except DecodeError as exc:
                self.metrics["bad_frames"] += 1
                self._fail(Code.PROTOCOL_VIOLATION, "bad CHALLENGE", exc)
                return
            self._maybe_identified()
        elif kind == kinds.ACCEPT and self.phase is Phase.TENTATIVE:
            self.phase = Phase.OPEN
            self._tentative = None
            self._deadline = None
            self.events.append(Opened())
        else:
            self.violation(f"server sent frame kind {kind:#04x} before ACCEPT")

    def _server_control(self, kind: int, payload: memoryview) -> None:
        if kind != kinds.AUTH or self._challenge is None or self.phase is not Phase.HANDSHAKE:
            self.metrics["auth_failures"] += 1
            self._fail(Code.AUTH_FAILED, "first frame must be AUTH",
                       SecurityError(f"client sent frame kind {kind:#04x} before AUTH"))
            return
        try:
            did, instance = verify_auth(payload, self.identity.public_key, self._challenge)
        except (DecodeError, SecurityError) as exc:
            self.metrics["auth_failures"] += 1
            self._fail(Code.AUTH_FAILED, "AUTH does not verify", exc)
            return
        self.peer_did = did
        self.peer_instance = instance
        self.phase = Phase.DECIDING
        self.events.append(Identified(did, instance))

    def _write_control(self, kind: int, payload: bytes) -> None:
        if self._out and not self.held:
            self._flush()
        self._write(encode_frame(kind, payload))

    def _flush(self) -> None:
        out, self._out = self._out, []
        self._out_bytes = 0
        self.metrics["frames_out"] += len(out)
        self._write(encode_frames(out))

    def _write(self, data: bytes) -> None:
        sid = self._sid
        if sid is None:
            sid = self._sid = self.conn.get_next_available_stream_id(is_unidirectional=True)
        self.conn.send_stream_data(sid, data)
        self._written += len(data)
        self._unsent += len(data)
        if self._tentative is not None:
            self._tentative.append(data)

    def _close(self, code: Code, reason: str) -> None:
        self.phase = Phase.CLOSED
        self._deadline = None
        self.conn.close(error_code=int(code), reason_phrase=reason)

    def _fail(self, code: Code, reason: str, error: NunetError, *, count: bool = True) -> None:
        if self.phase is Phase.CLOSED:
            return
        if count:
            self.metrics["peers_cut_off"] += 1
            log.info("closing connection to %s: %s (%s)", self.peer_did or "?", reason, error)
        self._close(code, reason)
        self._emit_closed(error, code, reason, by_peer=False)

    def _emit_closed(self, error: NunetError, code: int, reason: str, by_peer: bool) -> None:
        self._tentative = None
        self.events.append(Closed(error, code, reason, by_peer))


def _code_name(code: int) -> str:
    try:
        return Code(code).name.lower()
    except ValueError:
        return f"application error {code:#x}"
