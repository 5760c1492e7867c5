"""`GossipService`: drives a `GossipRouter` over a `Network` (QUIC or memnet), on kind GOSSIP.

A daemon component: `run(started)` registers the handlers, announces itself to the peers already
connected, calls `started()` and runs the heartbeat until cancelled. Sends go through one queue
and one short-lived task per peer, so messages to a peer stay in order and a slow peer delays no
one else. While a peer's send is in flight, what queues up for it is merged into one RPC (up to
`max_rpc_size`), so bursts leave in few messages; a queue holding more than `max_queued_bytes`
loses its oldest batch (gossip recovers lost messages through IHAVE/IWANT), counted in
`stats()["send_drops"]`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec

from nunet.crypto.keys import KeyPair
from nunet.errors import ClosedResourceError, LocalProtocolError, NunetError
from nunet.net import kinds
from nunet.net.api import Network
from nunet.net.gossip.actions import (
    Action,
    Deliver,
    Disconnect,
    Message,
    Penalise,
    Send,
    Validator,
)
from nunet.net.gossip.params import GossipParams
from nunet.net.gossip.router import GossipRouter
from nunet.net.gossip.seen import NATIVE
from nunet.net.gossip.wire import merge_rpcs

log = logging.getLogger("nunet.net.gossip")

Handler = Callable[[Message], Awaitable[None] | None]

_MAX_LOGGED = 4096  # (peer, reason) pairs already logged; forgotten all at once past this


class GossipService:
    def __init__(
        self,
        network: Network,
        keypair: KeyPair,
        params: GossipParams | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        max_queued_bytes: int = 4 << 20,
    ) -> None:
        if keypair.did != network.local_did:
            raise LocalProtocolError("the gossip key must be the network's own node key")
        self._net = network
        self._clock = clock
        # Seqnos from the wall clock in ns: a restarted node does not reuse them.
        self._router = GossipRouter(keypair, params, rng=rng, seqno_start=time.time_ns())
        self._handlers: dict[str, list[Handler]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stopped = False
        self._queues: dict[str, deque[bytes]] = {}
        self._max_queued = max_queued_bytes
        self._queued_bytes: dict[str, int] = {}
        self._logged: set[tuple[str, str]] = set()
        self._counters = {
            "send_drops": 0,
            "send_failures": 0,
            "handler_errors": 0,
            "heartbeat_errors": 0,
        }

    @property
    def router(self) -> GossipRouter:
        """The core, for introspection (mesh, scores, stats); drive it only through this."""
        return self._router

    # --- component -----------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        if self._tg is not None or self._stopped:
            raise LocalProtocolError("a GossipService runs once")
        self._net.on_message(kinds.GOSSIP, self._on_message)
        self._net.on_peer(self._on_peer)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                now = self._clock()
                for peer in self._net.connected():
                    self._apply(self._router.peer_connected(peer, now))
                started()
                interval = self._router.params.heartbeat_interval
                while True:
                    await asyncio.sleep(interval)
                    try:
                        actions = self._router.heartbeat(self._clock())
                    except Exception:
                        # A bug of ours: keep gossiping rather than take the node down with it.
                        self._counters["heartbeat_errors"] += 1
                        log.exception("gossip heartbeat failed")
                        continue
                    self._apply(actions)
        finally:
            self._tg = None
            self._stopped = True

    # --- API -----------------------------------------------------------------------------------

    def subscribe(self, topic: str, handler: Handler) -> None:
        """`handler(message)` for every new, verified, accepted message on `topic` (not for our
        own). It may be a coroutine function; its errors are logged and counted."""
        actions = self._router.subscribe(topic, self._clock())  # checks the topic first
        self._handlers.setdefault(topic, []).append(handler)
        self._apply(actions)

    def unsubscribe(self, topic: str, handler: Handler | None = None) -> None:
        """Removes `handler` (all of them when None); leaves the topic when none is left."""
        handlers = self._handlers.get(topic, [])
        if handler is None:
            handlers.clear()
        elif handler in handlers:
            handlers.remove(handler)
        if not handlers:
            self._handlers.pop(topic, None)
            self._apply(self._router.unsubscribe(topic, self._clock()))

    def publish(self, topic: str, data: bytes) -> bytes:
        """Signs and sends `data` on `topic`; returns the message id. ValidationError when the
        data is too large or the topic's validator refuses it."""
        if self._tg is None:
            if self._stopped:
                raise ClosedResourceError("the gossip service has stopped")
            raise LocalProtocolError("the gossip service is not running yet")
        msg_id, actions = self._router.publish(topic, data, self._clock())
        self._apply(actions)
        return msg_id

    def set_validator(self, topic: str, validator: Validator | None) -> None:
        self._router.set_validator(topic, validator)

    def stats(self) -> dict[str, object]:
        router = self._router
        topics = router.subscriptions | {t for t in self._handlers}
        return {
            **msgspec.structs.asdict(router.stats),
            **self._counters,
            "peers": len(router.peers()),
            "topics": {
                t: {"mesh": len(router.mesh(t)), "peers": len(router.topic_peers(t))}
                for t in sorted(topics)
            },
            "queued_bytes": sum(self._queued_bytes.values()),
            "native_dedup": NATIVE,
        }

    # --- network callbacks -----------------------------------------------------------------------

    def _on_message(self, peer: str, data: memoryview) -> None:
        if self._tg is not None:
            self._apply(self._router.received(peer, data, self._clock()))

    def _on_peer(self, peer: str, connected: bool) -> None:
        if self._tg is None:
            return
        now = self._clock()
        if connected:
            self._apply(self._router.peer_connected(peer, now))
        else:
            queue = self._queues.pop(peer, None)
            if queue is not None:
                queue.clear()  # its drain task ends; nothing re-dials a peer that left
                del self._queued_bytes[peer]
            self._apply(self._router.peer_disconnected(peer, now))

    # --- actions -------------------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        tg = self._tg
        for action in actions:
            if type(action) is Send:
                if tg is not None:
                    self._send(tg, action.peer, action.data)
            elif type(action) is Deliver:
                if tg is not None:
                    self._deliver(tg, action.message)
            elif type(action) is Penalise:
                if self._first_time(action.peer, action.reason):
                    log.info(
                        "gossip: peer %s penalised (score %.1f): %s",
                        action.peer,
                        action.score,
                        action.reason,
                    )
            elif type(action) is Disconnect:
                # A graylisted peer that keeps dialling is refused each time: log it once.
                if self._first_time(action.peer, "disconnect"):
                    log.warning("gossip: disconnecting %s: %s", action.peer, action.reason)
                if tg is not None:
                    tg.create_task(self._disconnect(action.peer, action.reason))

    def _send(self, tg: asyncio.TaskGroup, peer: str, data: bytes) -> None:
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = deque()
            self._queued_bytes[peer] = 0
            tg.create_task(self._drain(peer, queue))
        elif queue and len(queue[-1]) + len(data) <= self._router.params.max_rpc_size:
            merged = merge_rpcs(queue[-1], data)
            self._queued_bytes[peer] += len(merged) - len(queue[-1])
            queue[-1] = merged
            return
        queue.append(data)
        size = self._queued_bytes[peer] + len(data)
        while size > self._max_queued and len(queue) > 1:
            size -= len(queue.popleft())
            self._counters["send_drops"] += 1
        self._queued_bytes[peer] = size

    async def _drain(self, peer: str, queue: deque[bytes]) -> None:
        try:
            while queue:
                data = queue.popleft()
                self._queued_bytes[peer] -= len(data)
                try:
                    await self._net.send(peer, kinds.GOSSIP, data)
                except NunetError as exc:
                    self._counters["send_failures"] += 1
                    log.debug("gossip: send to %s failed: %s", peer, exc)
                    queue.clear()
        finally:
            if self._queues.get(peer) is queue:
                del self._queues[peer]
                del self._queued_bytes[peer]

    async def _disconnect(self, peer: str, reason: str) -> None:
        try:
            await self._net.disconnect(peer, reason)
        except NunetError as exc:
            log.debug("gossip: disconnecting %s failed: %s", peer, exc)

    def _deliver(self, tg: asyncio.TaskGroup, message: Message) -> None:
        for handler in list(self._handlers.get(message.topic, ())):
            try:
                result = handler(message)
                if inspect.isawaitable(result):
                    tg.create_task(self._await_handler(result, message.topic))
            except Exception:
                self._counters["handler_errors"] += 1
                log.exception("gossip handler for %s failed", message.topic)

    async def _await_handler(self, result: Awaitable[None], topic: str) -> None:
        try:
            await result
        except Exception:
            self._counters["handler_errors"] += 1
            log.exception("gossip handler for %s failed", topic)

    def _first_time(self, peer: str, what: str) -> bool:
        """Whether (peer, what) is new to the log; a peer's fault is logged once."""
        key = (peer, what)
        if key in self._logged:
            return False
        if len(self._logged) >= _MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        return True
