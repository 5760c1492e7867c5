"""`QuicNetwork`: the connection manager, nunet's `Network` (nunet/net/api.py) over QUIC.

One connection per peer carries everything (one stream each way, so a peer's frames stay in
order); it is dialed on demand from the address book and adopted as the peer's connection once
the peer's DID is proven (session.py). Decisions the sessions ask for are made here:

- Client side, when the server's DID is known: if we already have a usable connection to that
  peer (same process instance), abandon the new one; otherwise send AUTH and use it right away
  (tentatively: the server may still refuse it as a duplicate).
- Server side, when the client's AUTH verifies (did C, we are S):
  - no connection to C: accept (unless at `max_peers`);
  - a connection from another instance of C (C restarted), or one C dialed earlier (C would not
    dial again if it still had it): it is stale, replace it;
  - our own dial to C, still in progress (both dialed at once): the connection initiated by the
    lower DID wins, on both sides alike. If C < S we accept C's and hold its output until our
    dial is refused, then send our refused frames first, so order is kept; if S < C we refuse
    C's with DUPLICATE, and C sends its refused frames again on ours.

Requests: REQUEST `[u8 kind][u32 id][payload]`, REPLY `[u32 id][u8 status][payload]`; ids are per
peer, so a reply may come back on another connection to the same peer than its request went on.
Handlers run as tasks, at most `max_inbound_requests` per peer; more are answered "busy".

Counters (`metrics`) cover what a misbehaving peer or a lossy network costs; `stats()` adds
messages per packet and the kernel's UDP drop count.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

from nunet.crypto.keys import KeyPair
from nunet.errors import (
    ConfigError,
    LocalProtocolError,
    PeerIdentityMismatch,
    PeerUnreachable,
    RemoteError,
    RequestTimeout,
    ValidationError,
)
from nunet.net import kinds
from nunet.net.api import (
    MAX_PAYLOAD,
    DatagramHandler,
    MessageHandler,
    PeerListener,
    RequestHandler,
)
from nunet.net.quic.addr import QuicAddr, format_sockaddr, parse_addr
from nunet.net.quic.endpoint import Clock, Connection, Endpoint
from nunet.net.quic.identity import NodeIdentity
from nunet.net.quic.limits import QuicLimits
from nunet.net.quic.session import Closed, Code, Datagram, Frames, Identified, Opened

log = logging.getLogger("nunet.net.quic")

_FIRST_PROTOCOL_KIND = 0x10
_REPLY_OK = 0
_REPLY_ERROR = 1
_REPLY_NO_HANDLER = 2
_REPLY_BUSY = 3
_STATUS = [bytes((status,)) for status in range(4)]
_T = TypeVar("_T")
_REGISTRY = frozenset(
    v for k, v in vars(kinds).items() if k.isupper() and type(v) is int and 0 <= v <= 0xFF
)


class _Peer:
    """What we know of one peer while it matters (a connection, a dial, pending requests)."""

    __slots__ = (
        "accept_waiters",
        "conn",
        "connected",
        "dial",
        "did",
        "inbound",
        "next_rid",
        "pending",
        "resend",
        "waiters",
    )

    def __init__(self, did: str) -> None:
        self.did = did
        self.conn: Connection | None = None  # the connection we send on
        self.connected = False  # on_peer(did, True) was reported
        self.dial: asyncio.Task[None] | None = None
        self.waiters: list[asyncio.Future[Connection]] = []  # for a usable connection
        self.accept_waiters: list[asyncio.Future[None]] = []  # for an accepted one
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.next_rid = 0
        self.resend: list[bytes] = []  # frames of a refused dial, to send first on the next
        self.inbound = 0

    def idle(self) -> bool:
        return not (self.conn or self.dial or self.pending or self.waiters or self.inbound)


class QuicNetwork:
    """nunet's `Network` over QUIC. A daemon component: `run(started)` listens, calls `started()`,
    runs until cancelled and then closes every connection cleanly. Tests may use
    `async with QuicNetwork(...)` (start/aclose) instead."""

    def __init__(
        self,
        keypair: KeyPair,
        listen: Iterable[str] = (),
        *,
        limits: QuicLimits | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._identity = NodeIdentity(keypair)
        self._listen = [parse_addr(a) for a in listen]
        for i, addr in enumerate(self._listen):
            if not addr.is_ip or addr.did is not None:
                raise ConfigError(
                    f"listen address {addr} must be /ip4|ip6/IP/udp/PORT/quic-v1",
                    path=f"p2p.listen_address[{i}]",
                )
        self._limits = limits or QuicLimits()
        if self._limits.max_frame_size < MAX_PAYLOAD + 5:
            raise ValidationError("max_frame_size must hold a MAX_PAYLOAD request", path="limits")
        self._clock = clock
        self.metrics: Counter[str] = Counter()
        self._endpoints: list[Endpoint] = []
        self._listening: set[Endpoint] = set()
        self._dialers: dict[int, Endpoint] = {}
        self._peers: dict[str, _Peer] = {}
        self._book: dict[str, tuple[str, ...]] = {}
        self._messages: dict[int, MessageHandler] = {}
        self._requests: dict[int, RequestHandler] = {}
        self._listeners: list[PeerListener] = []
        self._datagram_handlers: list[DatagramHandler] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._known = bytes(sorted(_REGISTRY))
        self._started = False
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        await self.start()
        try:
            started()
            await asyncio.Event().wait()
        finally:
            await self.aclose()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for i, addr in enumerate(self._listen):
            try:
                endpoint = await self._open_endpoint(addr.host, addr.port, addr.family)
            except OSError as exc:
                await self.aclose()
                raise ConfigError(
                    f"cannot listen on {addr}: {exc.strerror or exc}",
                    path=f"p2p.listen_address[{i}]",
                ) from None
            self._dialers.setdefault(endpoint.family, endpoint)
        log.info("QUIC listening on %s as %s", ", ".join(self.listen_addrs()) or "-",
                 self.local_did)

    async def aclose(self) -> None:
        """Say goodbye to every peer, wait up to `close_timeout` for them, then close hard."""
        if self._closing:
            return
        self._closing = True
        now = self._clock()
        leaving = [peer.conn for peer in self._peers.values() if peer.conn is not None]
        for conn in leaving:
            conn.session.goodbye("node shutting down", now)
            self.session_activity(conn)
            conn.endpoint.schedule(conn)
        waiting = [conn.watch_close() for conn in leaving]
        if waiting:
            await asyncio.wait(waiting, timeout=self._limits.close_timeout)
        for endpoint in self._endpoints:
            for conn in list(endpoint.connections):
                conn.session.close(Code.SHUTDOWN, "node shutting down")
                self.session_activity(conn)
                endpoint.transmit(conn)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for peer in self._peers.values():
            if peer.dial is not None:
                peer.dial.cancel()
                tasks.append(peer.dial)
        await asyncio.gather(*tasks, return_exceptions=True)
        for endpoint in self._endpoints:
            endpoint.close()
        self._endpoints.clear()
        self._dialers.clear()

    async def __aenter__(self) -> QuicNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- Network: addresses -----------------------------------------------------------------------

    @property
    def local_did(self) -> str:
        return self._identity.did

    def listen_addrs(self) -> tuple[str, ...]:
        return tuple(
            format_sockaddr(e.sockname, e.family) for e in self._endpoints if e in self._listening
        )

    def add_addresses(self, did: str, addrs: tuple[str, ...]) -> None:
        if did != self.local_did:
            self._book[did] = tuple(dict.fromkeys(self._book.get(did, ()) + tuple(addrs)))

    def known_addresses(self, did: str) -> tuple[str, ...]:
        return self._book.get(did, ())

    # --- Network: handlers ------------------------------------------------------------------------

    def on_message(self, kind: int, handler: MessageHandler) -> None:
        self._check_kind(kind)
        self._messages[kind] = handler
        self._know(kind)

    def on_request(self, kind: int, handler: RequestHandler) -> None:
        self._check_kind(kind)
        self._requests[kind] = handler
        self._know(kind)

    def on_peer(self, listener: PeerListener) -> None:
        self._listeners.append(listener)

    def on_datagram(self, handler: DatagramHandler) -> None:
        self._datagram_handlers.append(handler)

    # --- Network: traffic -------------------------------------------------------------------------

    async def connect(self, addr: str) -> str:
        conn = await self._dial_addr(addr, None)
        did = conn.session.peer_did
        assert did is not None
        self.add_addresses(did, (addr,))
        loop = asyncio.get_running_loop()
        await self._accepted(did, loop.time() + self._limits.dial_timeout)
        return did

    async def send(self, did: str, kind: int, payload: bytes) -> None:
        payload = self._check_payload(kind, payload)
        peer = self._peers.get(did)
        conn = peer.conn if peer is not None else None
        if conn is None or conn.session.pending_bytes >= self._limits.send_buffer:
            conn = await self._writable(did, None)
        conn.session.queue(kind, payload)
        if not conn.scheduled:
            conn.endpoint.schedule(conn)

    async def request(self, did: str, kind: int, payload: bytes, timeout: float) -> bytes:
        payload = self._check_payload(kind, payload)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        peer = self._peers.get(did)
        conn = peer.conn if peer is not None else None
        if conn is None or conn.session.pending_bytes >= self._limits.send_buffer:
            conn = await self._writable(did, deadline)
            peer = self._peers[did]
        assert peer is not None
        rid = peer.next_rid
        peer.next_rid = (rid + 1) & 0xFFFFFFFF
        future: asyncio.Future[bytes] = loop.create_future()
        peer.pending[rid] = future
        conn.session.queue(kinds.REQUEST, bytes((kind,)) + rid.to_bytes(4, "big") + payload)
        if not conn.scheduled:
            conn.endpoint.schedule(conn)
        timer = loop.call_at(deadline, _expire, future, did, timeout)
        self.metrics["requests_out"] += 1
        try:
            return await future
        finally:
            timer.cancel()
            if peer.pending.get(rid) is future:
                del peer.pending[rid]

    def connected(self) -> tuple[str, ...]:
        return tuple(did for did, peer in self._peers.items() if peer.connected)

    async def disconnect(self, did: str, reason: str) -> None:
        peer = self._peers.get(did)
        if peer is None or peer.conn is None:
            return
        conn = peer.conn
        conn.session.goodbye(reason, self._clock())
        self.session_activity(conn)
        conn.endpoint.schedule(conn)

    def send_datagram(self, did: str, data: bytes) -> bool:
        peer = self._peers.get(did)
        conn = peer.conn if peer is not None else None
        if conn is None:
            self.metrics["datagrams_dropped_out"] += 1
            return False
        status = conn.session.send_datagram(data)
        if status != "ok":
            self.metrics[f"datagrams_dropped_{status}"] += 1
            return False
        self.metrics["datagrams_out"] += 1
        if not conn.scheduled:
            conn.endpoint.schedule(conn)
        return True

    @property
    def max_datagram_payload(self) -> int:
        """The largest datagram `send_datagram` takes (one QUIC packet)."""
        return self._limits.max_datagram_size - 48

    def stats(self) -> dict[str, float]:
        """`metrics` plus derived figures: frames per packet sent, UDP receive drops (kernel)."""
        out: dict[str, float] = dict(self.metrics)
        if self.metrics["packets_out"]:
            out["frames_per_packet_out"] = self.metrics["frames_out"] / self.metrics["packets_out"]
        out["udp_drops"] = sum(_udp_drops(e) for e in self._endpoints)
        return out

    # --- events from the sessions ----------------------------------------------------------------

    def session_activity(self, conn: Connection) -> None:
        session = conn.session
        if not session.events:
            return
        for event in session.take_events():
            kind = type(event)
            if kind is Frames:
                assert isinstance(event, Frames)
                self._dispatch(conn, event.frames)
            elif kind is Datagram:
                assert isinstance(event, Datagram)
                self._on_datagram(conn, event.data)
            elif kind is Identified:
                assert isinstance(event, Identified)
                if conn.outgoing:
                    self._decide_dial(conn, event)
                else:
                    self._decide_incoming(conn, event)
            elif kind is Opened:
                self._on_opened(conn)
            elif kind is Closed:
                assert isinstance(event, Closed)
                self._on_closed(conn, event)

    def _dispatch(self, conn: Connection, frames: list[tuple[int, memoryview]]) -> None:
        did = conn.session.peer_did
        assert did is not None
        handlers = self._messages
        for kind, payload in frames:
            handler = handlers.get(kind)
            if handler is not None:
                try:
                    handler(did, payload)
                except Exception:
                    self.metrics["handler_errors"] += 1
                    log.exception("message handler for kind %#x failed", kind)
            elif kind == kinds.REQUEST:
                self._on_request(conn, did, payload)
            elif kind == kinds.REPLY:
                self._on_reply(conn, did, payload)
            elif kind == kinds.CLOSE:
                conn.session.peer_goodbye(payload)
                self.session_activity(conn)
                return
            elif kind >= _FIRST_PROTOCOL_KIND:
                self.metrics["messages_unhandled"] += 1
            else:
                conn.session.violation(f"frame kind {kind:#04x} after the handshake")
                self.session_activity(conn)
                return

    def _on_datagram(self, conn: Connection, data: bytes) -> None:
        did = conn.session.peer_did
        assert did is not None
        self.metrics["datagrams_in"] += 1
        for handler in self._datagram_handlers:
            try:
                handler(did, data)
            except Exception:
                self.metrics["handler_errors"] += 1
                log.exception("datagram handler failed")

    def _decide_dial(self, conn: Connection, event: Identified) -> None:
        session = conn.session
        peer = self._peer(event.did)
        existing = peer.conn
        if existing is not None and existing is not conn and existing.session.usable:
            if existing.session.peer_instance == event.instance:
                session.reject(Code.ABANDONED, "already connected")
                _resolve(conn.outcome, existing)
                return
            peer = self._replace(existing, "peer restarted")
        if self._closing:
            session.reject(Code.SHUTDOWN, "node shutting down")
            _fail(conn.outcome, PeerUnreachable("the network is shutting down"))
            return
        if self._full(peer):
            session.reject(Code.PEER_LIMIT, "peer limit reached")
            _fail(conn.outcome, PeerUnreachable(f"peer limit ({self._limits.max_peers}) reached"))
            return
        session.proceed()
        self.metrics["connections_out"] += 1
        self._adopt(peer, conn)
        _resolve(conn.outcome, conn)

    def _decide_incoming(self, conn: Connection, event: Identified) -> None:
        session = conn.session
        did = event.did
        if self._closing:
            session.reject(Code.SHUTDOWN, "node shutting down")
            return
        peer = self._peer(did)
        existing = peer.conn
        if existing is not None and existing.session.usable:
            stale = (
                existing.session.peer_instance != event.instance
                or not existing.outgoing
                or existing.accepted
            )
            if stale:
                peer = self._replace(existing, "replaced by a newer connection from the peer")
            elif did < self.local_did:
                self.metrics["simultaneous_dials"] += 1
                session.held = True
                conn.supersedes = existing
            else:
                self.metrics["simultaneous_dials"] += 1
                session.reject(Code.DUPLICATE, "simultaneous dial: the lower DID's dial wins")
                return
        elif self._full(peer):
            self.metrics["peers_refused"] += 1
            session.reject(Code.PEER_LIMIT, "peer limit reached")
            return
        session.accept()
        conn.accepted = True
        self._adopt(peer, conn)

    def _on_opened(self, conn: Connection) -> None:
        conn.accepted = True
        did = conn.session.peer_did
        assert did is not None
        peer = self._peer(did)
        if peer.conn is conn:
            self._set_connected(peer)
            return
        winner = peer.conn
        if winner is not None and winner.supersedes is conn:
            # The peer accepted our dial although we accepted its own: it must have lost that
            # one, so ours is the live connection; move what waits on the other to ours.
            moved = winner.session.take_queue()
            winner.supersedes = None
            peer.conn = conn  # first, so that closing the other leaves the peer connected
            winner.session.close(Code.REPLACED, "the peer accepted our dial")
            self.session_activity(winner)
            winner.endpoint.schedule(winner)
            for kind, payload in moved:
                conn.session.queue(kind, payload)
            self._set_connected(peer)
            conn.endpoint.schedule(conn)
        else:
            conn.session.close(Code.ABANDONED, "already connected")
            self.session_activity(conn)

    def _on_closed(self, conn: Connection, event: Closed) -> None:
        error = event.error  # what callers see: always a PeerUnreachable (api.py)
        if not isinstance(error, PeerUnreachable):
            error = PeerUnreachable(f"connection closed: {error}")
        _fail(conn.outcome, error)
        for waiter in conn.write_waiters:
            _fail(waiter, error)
        conn.write_waiters = []
        conn.endpoint.schedule(conn)
        did = conn.session.peer_did
        peer = self._peers.get(did) if did is not None else None
        if peer is None:
            return
        if peer.conn is not None and peer.conn.supersedes is conn:
            winner = peer.conn
            winner.supersedes = None
            winner.session.write_raw(event.resend)
            winner.session.held = False
            winner.endpoint.schedule(winner)
            return
        if peer.conn is not conn:
            return
        peer.conn = None
        if event.resend:
            # Our dial lost a simultaneous dial: the peer's own connection is on its way.
            self.metrics["dials_refused_duplicate"] += 1
            peer.resend = event.resend + peer.resend
            if peer.dial is None or peer.dial.done():
                peer.dial = self._spawn_dial(peer, wait_first=True)
        else:
            for future in peer.pending.values():
                _fail(future, error)
            peer.pending.clear()
            peer.resend = []
            for accept_waiter in peer.accept_waiters:
                _fail(accept_waiter, error)
            peer.accept_waiters.clear()
        if peer.connected:
            peer.connected = False
            self._notify(did, False)  # type: ignore[arg-type]
        if peer.idle():
            del self._peers[peer.did]

    # --- requests --------------------------------------------------------------------------------

    def _on_request(self, conn: Connection, did: str, payload: memoryview) -> None:
        if len(payload) < 5:
            conn.session.violation("REQUEST shorter than its header", "bad_frames")
            self.session_activity(conn)
            return
        self.metrics["requests_in"] += 1
        kind = payload[0]
        rid = payload[1:5].tobytes()
        peer = self._peer(did)
        handler = self._requests.get(kind)
        if handler is None:
            self._reply(peer, rid, _REPLY_NO_HANDLER, f"{self.local_did} does not handle kind "
                        f"{kind:#x}".encode())
        elif peer.inbound >= self._limits.max_inbound_requests:
            self.metrics["requests_refused_busy"] += 1
            self._reply(peer, rid, _REPLY_BUSY, b"busy: too many requests in progress")
        else:
            peer.inbound += 1
            task = asyncio.get_running_loop().create_task(
                self._serve(peer, handler, payload[5:], rid)
            )
            self._tasks.add(task)  # `_serve` takes itself out when done

    async def _serve(
        self, peer: _Peer, handler: RequestHandler, body: memoryview, rid: bytes
    ) -> None:
        status, reply = _REPLY_ERROR, b""
        try:
            result = await handler(peer.did, body)
            if type(result) is not bytes:
                if not isinstance(result, bytearray | memoryview):
                    raise TypeError(f"request handler returned {type(result).__name__}, not bytes")
                result = bytes(result)
            if len(result) > MAX_PAYLOAD - 5:
                raise ValueError(f"reply of {len(result)} bytes is over the limit")
            status, reply = _REPLY_OK, result
        except Exception as exc:
            self.metrics["handler_errors"] += 1
            reply = f"{type(exc).__name__}: {exc}".encode()[:4096]
        finally:
            peer.inbound -= 1
            self._tasks.discard(asyncio.current_task())
        conn = peer.conn
        while conn is not None and conn.session.pending_bytes >= self._limits.send_buffer:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            conn.write_waiters.append(waiter)
            try:
                await waiter
            except PeerUnreachable:
                break  # the connection closed: `_reply` counts the reply as dropped
            conn = peer.conn
        self._reply(peer, rid, status, reply)

    def _reply(self, peer: _Peer, rid: bytes, status: int, body: bytes) -> None:
        conn = peer.conn
        if conn is None:
            self.metrics["replies_dropped"] += 1
            return
        conn.session.queue(kinds.REPLY, b"".join((rid, _STATUS[status], body)))
        if not conn.scheduled:
            conn.endpoint.schedule(conn)

    def _on_reply(self, conn: Connection, did: str, payload: memoryview) -> None:
        if len(payload) < 5:
            conn.session.violation("REPLY shorter than its header", "bad_frames")
            self.session_activity(conn)
            return
        peer = self._peers.get(did)
        future = peer.pending.pop(int.from_bytes(payload[:4], "big"), None) if peer else None
        if future is None or future.done():
            self.metrics["replies_late"] += 1
            return
        status = payload[4]
        if status == _REPLY_OK:
            future.set_result(payload[5:].tobytes())
        else:
            text = payload[5:].tobytes().decode("utf-8", "replace")
            future.set_exception(RemoteError(text))

    # --- connections -----------------------------------------------------------------------------

    async def _writable(self, did: str, deadline: float | None) -> Connection:
        """The peer's connection once it has room in its send buffer (dialing if needed)."""
        while True:
            conn = await self._usable(did, deadline)
            if conn.session.pending_bytes < self._limits.send_buffer:
                return conn
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            conn.write_waiters.append(waiter)
            await _until(waiter, deadline, did)

    async def _usable(self, did: str, deadline: float | None) -> Connection:
        if self._closing or not self._started:
            raise PeerUnreachable("the network is not running")
        if did == self.local_did:
            raise PeerUnreachable("cannot send to this node itself")
        peer = self._peers.get(did)
        if peer is not None and peer.conn is not None:
            return peer.conn
        if peer is None or peer.dial is None:
            if not self._book.get(did):
                raise PeerUnreachable(f"no known address for {did}")
            peer = self._peer(did)
            peer.dial = self._spawn_dial(peer, wait_first=False)
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        peer.waiters.append(waiter)
        return await _until(waiter, deadline, did)

    async def _accepted(self, did: str, deadline: float) -> None:
        await self._usable(did, deadline)
        peer = self._peers[did]
        if not peer.connected:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            peer.accept_waiters.append(waiter)
            await _until(waiter, deadline, did)

    def _spawn_dial(self, peer: _Peer, *, wait_first: bool) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._dial_peer(peer, wait_first))
        return task

    async def _dial_peer(self, peer: _Peer, wait_first: bool) -> None:
        """Get the peer a connection: dial its known addresses in turn. After losing a
        simultaneous dial, first give the peer's own connection time to arrive."""
        failures: list[str] = []
        mismatch = False
        try:
            if wait_first:
                arrival: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
                peer.waiters.append(arrival)
                try:
                    async with asyncio.timeout(self._limits.dial_timeout):
                        await arrival
                    return
                except TimeoutError:
                    if arrival in peer.waiters:
                        peer.waiters.remove(arrival)
            for addr in self._book.get(peer.did, ()):
                try:
                    await self._dial_addr(addr, peer.did)
                    return
                except PeerUnreachable as exc:
                    failures.append(f"{addr}: {exc}")
                    if isinstance(exc, PeerIdentityMismatch):
                        mismatch = True
                        log.warning("dialing %s at %s: %s", peer.did, addr, exc)
            error_type = PeerIdentityMismatch if mismatch else PeerUnreachable
            error = error_type(
                f"cannot reach {peer.did}: " + ("; ".join(failures) or "no known address")
            )
            self.metrics["dial_failures"] += 1
            for waiter in peer.waiters:
                _fail(waiter, error)
            for accept_waiter in peer.accept_waiters:
                _fail(accept_waiter, error)
            peer.waiters.clear()
            peer.accept_waiters.clear()
            for future in peer.pending.values():
                _fail(future, error)
            peer.pending.clear()
            peer.resend = []
        finally:
            peer.dial = None
            if peer.idle() and self._peers.get(peer.did) is peer:
                del self._peers[peer.did]

    async def _dial_addr(self, text: str, expected: str | None) -> Connection:
        try:
            addr = parse_addr(text)
        except ValidationError as exc:
            raise PeerUnreachable(f"bad address: {exc}") from None
        if self._closing or not self._started:
            raise PeerUnreachable("the network is not running")
        if addr.did is not None:
            if expected is not None and addr.did != expected:
                raise PeerIdentityMismatch(f"{text} names {addr.did}, not {expected}")
            expected = addr.did
        sockaddr = await _resolve_addr(addr)
        endpoint = self._dialers.get(addr.family)
        if endpoint is None:
            wildcard = "::" if addr.family == socket.AF_INET6 else "0.0.0.0"
            try:
                endpoint = await self._open_endpoint(wildcard, 0, addr.family, listening=False)
            except OSError as exc:
                raise PeerUnreachable(f"cannot open a socket to dial {text}: {exc}") from None
            self._dialers[addr.family] = endpoint
        conn = endpoint.connect(sockaddr, expected)
        self.metrics["dials"] += 1
        return await asyncio.shield(conn.outcome)

    async def _open_endpoint(
        self, host: str, port: int, family: int, *, listening: bool = True
    ) -> Endpoint:
        endpoint = await Endpoint.open(
            host, port, family, self, self._identity, self._limits, self.metrics, self._known,
            self._clock,
        )
        self._endpoints.append(endpoint)
        if listening:
            self._listening.add(endpoint)
        return endpoint

    def _adopt(self, peer: _Peer, conn: Connection) -> None:
        peer.conn = conn
        if peer.resend:
            chunks, peer.resend = peer.resend, []
            conn.session.write_raw(chunks)
        conn.endpoint.schedule(conn)
        waiters, peer.waiters = peer.waiters, []
        for waiter in waiters:
            _resolve(waiter, conn)
        if conn.accepted:
            self._set_connected(peer)

    def _replace(self, stale: Connection, reason: str) -> _Peer:
        """Close a stale connection; returns the peer's record (closing may have dropped it)."""
        self.metrics["connections_replaced"] += 1
        stale.session.close(Code.REPLACED, reason)
        self.session_activity(stale)
        assert stale.session.peer_did is not None
        return self._peer(stale.session.peer_did)

    def _set_connected(self, peer: _Peer) -> None:
        if not peer.connected:
            peer.connected = True
            waiters, peer.accept_waiters = peer.accept_waiters, []
            for waiter in waiters:
                _resolve(waiter, None)
            self._notify(peer.did, True)

    def _notify(self, did: str, up: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(did, up)
            except Exception:
                self.metrics["handler_errors"] += 1
                log.exception("peer listener failed")

    def _peer(self, did: str) -> _Peer:
        peer = self._peers.get(did)
        if peer is None:
            peer = self._peers[did] = _Peer(did)
        return peer

    def _full(self, peer: _Peer) -> bool:
        if peer.conn is not None:
            return False
        return sum(1 for p in self._peers.values() if p.conn) >= self._limits.max_peers

    def _know(self, kind: int) -> None:
        if kind not in self._known:
            self._known = bytes(sorted({*self._known, kind}))
            for endpoint in self._endpoints:
                endpoint.known_kinds = self._known

    @staticmethod
    def _check_kind(kind: int) -> None:
        if type(kind) is not int or not _FIRST_PROTOCOL_KIND <= kind <= 0xFF:
            raise LocalProtocolError(f"message kind must be an int in 0x10..0xff, not {kind!r}")

    def _check_payload(self, kind: int, payload: bytes) -> bytes:
        self._check_kind(kind)
        if type(payload) is not bytes:
            payload = bytes(payload)  # the caller may reuse its buffer once send returns
        if len(payload) > MAX_PAYLOAD:
            raise LocalProtocolError(
                f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit"
            )
        return payload


def _expire(future: asyncio.Future[bytes], did: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(RequestTimeout(f"no reply from {did} within {timeout:g} s"))


def _resolve(future: asyncio.Future[object] | asyncio.Future[Connection] | asyncio.Future[None],
             value: object) -> None:
    if not future.done():
        future.set_result(value)  # type: ignore[arg-type]


def _fail(future: asyncio.Future[object] | asyncio.Future[Connection] | asyncio.Future[None]
          | asyncio.Future[bytes], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # retrieved: nobody may be waiting on it


async def _until(future: asyncio.Future[_T], deadline: float | None, did: str) -> _T:
    if deadline is None:
        return await future
    try:
        async with asyncio.timeout_at(deadline):
            return await future
    except TimeoutError:
        raise RequestTimeout(f"no connection to {did} in time") from None


async def _resolve_addr(addr: QuicAddr) -> tuple[str, int] | tuple[str, int, int, int]:
    if addr.proto == "ip4":
        return (addr.host, addr.port)
    if addr.proto == "ip6":
        return (addr.host, addr.port, 0, 0)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            addr.host, addr.port, family=addr.family, type=socket.SOCK_DGRAM
        )
    except OSError as exc:
        raise PeerUnreachable(f"cannot resolve {addr.host}: {exc}") from None
    if not infos:
        raise PeerUnreachable(f"{addr.host} has no {addr.proto} address")
    sockaddr = infos[0][4]
    if addr.family == socket.AF_INET6:
        return (str(sockaddr[0]), int(sockaddr[1]), 0, 0)
    return (str(sockaddr[0]), int(sockaddr[1]))


def _udp_drops(endpoint: Endpoint) -> int:
    """The kernel's receive-drop counter for this endpoint's socket (/proc/net/udp*)."""
    transport = endpoint.transport
    if transport is None:
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        inode = os.fstat(sock.fileno()).st_ino
        path = "/proc/net/udp6" if endpoint.family == socket.AF_INET6 else "/proc/net/udp"
        with open(path) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 12 and fields[9] == str(inode):
                    return int(fields[12])
    except (OSError, ValueError):
        return 0
    return 0
