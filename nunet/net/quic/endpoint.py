"""The asyncio adapter: one UDP socket, the sessions that use it, their timers and their sends.

An `Endpoint` demultiplexes datagrams to sessions by destination connection ID (one socket
serves incoming connections and our own dials, so a peer sees us at our listen address), creates
server sessions for new Initial packets, and drives each session: receive -> let the owner take
its events -> transmit. Transmits are batched per event-loop tick: a session with something to
send is marked dirty and flushed once by a `call_soon`, so frames queued by many `send` calls in
one tick share packets.

Clock: aioquic gets `clock()` (time.monotonic by default) as `now`, never `loop.time()` (1 ms
resolution on uvloop, which throws aioquic's loss and pacing timers off). Timers are armed with
`call_later(at - clock())`; one that fires early (uvloop rounds to the millisecond) re-arms.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import Protocol, cast

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from nunet.net.quic.identity import NodeIdentity
from nunet.net.quic.limits import QuicLimits
from nunet.net.quic.session import Code, Session, quic_configuration

log = logging.getLogger("nunet.net.quic")

Clock = Callable[[], float]


class Owner(Protocol):
    """What the endpoint tells the connection manager."""

    def session_activity(self, conn: Connection) -> None:
        """The session may have new events (take them with `take_events()`)."""
        ...


class Connection:
    """A session and what the adapter and the manager keep for it."""

    __slots__ = (
        "accepted",
        "addr",
        "cids",
        "closing",
        "endpoint",
        "outcome",
        "outgoing",
        "scheduled",
        "session",
        "supersedes",
        "timer",
        "timer_at",
        "write_waiters",
    )

    def __init__(
        self, session: Session, endpoint: Endpoint, addr: NetworkAddress, outgoing: bool
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.addr = addr
        self.outgoing = outgoing
        self.accepted = False  # the manager adopted it as the peer's connection
        self.supersedes: Connection | None = None  # our dial this one won against (held)
        self.cids: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.scheduled = False
        self.write_waiters: list[asyncio.Future[None]] = []
        # a dial's result: set when the connection is usable, abandoned or closed
        self.outcome: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self.closing: asyncio.Future[None] | None = None

    def watch_close(self) -> asyncio.Future[None]:
        """A future done once the QUIC connection is closing or gone (ours or the peer's close)."""
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_future()
        self.check_closed()
        return self.closing

    def check_closed(self) -> None:
        closing = self.closing
        if closing is not None and not closing.done() and self.session.quic_closing:
            closing.set_result(None)

    @property
    def peer_did(self) -> str | None:
        return self.session.peer_did

    def __repr__(self) -> str:
        way = "to" if self.outgoing else "from"
        return f"<Connection {way} {self.session.peer_did or self.addr} {self.session.phase.value}>"


class Endpoint(asyncio.DatagramProtocol):
    def __init__(
        self,
        owner: Owner,
        identity: NodeIdentity,
        limits: QuicLimits,
        metrics: Counter[str],
        known_kinds: bytes,
        clock: Clock,
    ) -> None:
        self._owner = owner
        self._identity = identity
        self._limits = limits
        self._metrics = metrics
        self.known_kinds = known_kinds
        self._clock = clock
        self._floor = 0.0  # `_now()` never returns less: time does not go back for aioquic
        self._server_config = quic_configuration(identity, limits, is_client=False)
        self._client_config = quic_configuration(identity, limits, is_client=True)
        self._cid_length = self._server_config.connection_id_length
        self._cids: dict[bytes, Connection] = {}
        self._dirty: list[Connection] = []
        self._flush_handle: asyncio.Handle | None = None
        self._paused = False
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.family: int = socket.AF_INET
        self.sockname: tuple[str, int] = ("", 0)
        self.connections: set[Connection] = set()

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        family: int,
        owner: Owner,
        identity: NodeIdentity,
        limits: QuicLimits,
        metrics: Counter[str],
        known_kinds: bytes,
        clock: Clock,
    ) -> Endpoint:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _grow_buffers(sock, limits.socket_buffer)
            sock.bind((host, port))
            sock.setblocking(False)
            endpoint = cls(owner, identity, limits, metrics, known_kinds, clock)
            endpoint.family = family
            endpoint.sockname = sock.getsockname()[:2]
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, sock=sock)
        except BaseException:
            sock.close()
            raise
        return endpoint

    # --- asyncio.DatagramProtocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport does not subclass DatagramTransport on 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for conn in list(self.connections):
            self.schedule(conn)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) surface here; QUIC's own timers decide what they mean.
        self._metrics["socket_errors"] += 1

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        self._metrics["packets_in"] += 1
        if not data:
            return
        if data[0] & 0x80:
            conn = self._long_header(data, addr)
        else:
            conn = self._cids.get(data[1 : 1 + self._cid_length])
        if conn is None:
            self._metrics["packets_unmatched"] += 1
            return
        session = conn.session
        try:
            session.receive_datagram(data, addr, self._now())
            if session.cids_issued or session.cids_retired:
                self._update_cids(conn)
            self._owner.session_activity(conn)
        except Exception:  # a bug must cost one connection, never the node
            self._metrics["internal_errors"] += 1
            log.exception("internal error on %r; closing it", conn)
            session.close(Code.PROTOCOL_VIOLATION, "internal error")
            self._owner.session_activity(conn)
        if conn.closing is not None:
            conn.check_closed()
        self.schedule(conn)

    # --- connections ----------------------------------------------------------------------------

    def connect(self, addr: NetworkAddress, expected_did: str | None) -> Connection:
        now = self._now()
        quic = QuicConnection(configuration=self._client_config)
        session = Session(
            self._identity, quic, self._limits, self._metrics, self.known_kinds, now,
            expected_did=expected_did,
        )
        conn = Connection(session, self, addr, outgoing=True)
        self._register(conn, quic.host_cid)
        self.connections.add(conn)
        quic.connect(addr, now)
        self.transmit(conn)
        return conn

    def schedule(self, conn: Connection) -> None:
        """Transmit for `conn` once, at the end of this event-loop tick."""
        if not conn.scheduled:
            conn.scheduled = True
            self._dirty.append(conn)
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self._flush)

    def transmit(self, conn: Connection) -> None:
        session = conn.session
        transport = self.transport
        if not self._paused and transport is not None and not transport.is_closing():
            datagrams = session.datagrams_to_send(self._now())
            if datagrams:
                sendto = transport.sendto
                for data, addr in datagrams:
                    sendto(data, addr)
                self._metrics["packets_out"] += len(datagrams)
        if session.terminated:
            self._forget(conn)
            return
        # Re-armed whenever the deadline moves, as aioquic's own adapter does: keeping an earlier
        # timer instead saves a heap operation per packet but costs a wasted wake-up (a whole
        # handle_timer + transmit) each time a request/reply exchange cancels the ack timer.
        at = session.get_timer()
        if conn.timer is not None and at != conn.timer_at:
            conn.timer.cancel()
            conn.timer = None
        if at is not None and conn.timer is None:
            conn.timer_at = at
            conn.timer = self._loop.call_later(max(0.0, at - self._now()), self._on_timer, conn)
        waiters = conn.write_waiters
        if waiters and session.pending_bytes <= self._limits.send_buffer // 2:
            conn.write_waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def close(self) -> None:
        for conn in list(self.connections):
            self._forget(conn)
        if self.transport is not None:
            self.transport.close()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    # --- internals ------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.scheduled = False
            self.transmit(conn)

    def _now(self) -> float:
        """The clock, never going back (see `_on_timer`)."""
        now = self._clock()
        return now if now > self._floor else self._floor

    def _on_timer(self, conn: Connection) -> None:
        conn.timer = None
        at = conn.timer_at
        if self._clock() < at:
            # uvloop rounds delays to whole milliseconds, so a timer may fire up to 1 ms early:
            # take it as due (aioquic's own adapter does the same) rather than spin until then.
            self._floor = max(self._floor, at)
        session = conn.session
        try:
            session.handle_timer(self._now())
            self._owner.session_activity(conn)
        except Exception:
            self._metrics["internal_errors"] += 1
            log.exception("internal error on %r; closing it", conn)
            session.close(Code.PROTOCOL_VIOLATION, "internal error")
            self._owner.session_activity(conn)
        self.transmit(conn)

    def _long_header(self, data: bytes, addr: NetworkAddress) -> Connection | None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._cid_length)
        except ValueError:
            return None
        conn = self._cids.get(header.destination_cid)
        if conn is not None:
            return conn
        versions = self._server_config.supported_versions
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return None
        if header.version is not None and header.version not in versions:
            assert self.transport is not None
            self.transport.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=versions,
                ),
                addr,
            )
            return None
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return None
        handshaking = sum(1 for c in self.connections if not c.accepted and not c.outgoing)
        if handshaking >= self._limits.max_handshakes:
            self._metrics["handshakes_refused"] += 1
            return None
        quic = QuicConnection(
            configuration=self._server_config,
            original_destination_connection_id=header.destination_cid,
        )
        session = Session(
            self._identity, quic, self._limits, self._metrics, self.known_kinds, self._now()
        )
        conn = Connection(session, self, addr, outgoing=False)
        self._register(conn, header.destination_cid)
        self._register(conn, quic.host_cid)
        self.connections.add(conn)
        self._metrics["connections_in"] += 1
        return conn

    def _register(self, conn: Connection, cid: bytes) -> None:
        self._cids[cid] = conn
        conn.cids.append(cid)

    def _update_cids(self, conn: Connection) -> None:
        session = conn.session
        for cid in session.cids_issued:
            self._register(conn, cid)
        for cid in session.cids_retired:
            if self._cids.get(cid) is conn:
                del self._cids[cid]
        session.cids_issued.clear()
        session.cids_retired.clear()

    def _forget(self, conn: Connection) -> None:
        if conn.closing is not None and not conn.closing.done():
            conn.closing.set_result(None)
        for cid in conn.cids:
            if self._cids.get(cid) is conn:
                del self._cids[cid]
        conn.cids.clear()
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self.connections.discard(conn)


def _grow_buffers(sock: socket.socket, size: int) -> None:
    """Ask for big socket buffers: a burst of datagrams otherwise overflows the default ~200 KiB
    receive buffer. SO_*BUFFORCE passes net.core.rmem_max when we may (CAP_NET_ADMIN)."""
    for force, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
    ):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError as exc:
                log.debug("could not set socket buffer: %s", exc)
