"""The Node facade: the one object the local API and the CLI talk to.

It owns nothing with a lifetime of its own (the daemon owns the store, the API server and, later,
the network); it binds identity, configuration, state and onboarding together and answers the
questions users ask. Keeping the API on this facade (never on internals) lets the actor behaviours
of a later issue call the very same methods.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from nunet import __version__
from nunet.actor.handle import NO_HANDLE
from nunet.actor.handle import ROOT_INBOX as ROOT_INBOX  # re-exported: older imports
from nunet.actor.handle import Address as Address
from nunet.actor.handle import Handle as Handle
from nunet.benchmark.service import BenchmarkService
from nunet.config.schema import Config
from nunet.crypto.keys import KeyPair
from nunet.db.repository import Singleton
from nunet.db.store import Store
from nunet.errors import ClosedResourceError, InvokeTimeout, ValidationError
from nunet.net.dht.core import DhtStats
from nunet.net.dht.service import DhtSnapshot
from nunet.net.hello import HeardPeer
from nunet.node.machine import MachineInfo, detect_disk, detect_machine
from nunet.node.onboarding import Capacity, Location, Metadata, Onboarding, OnboardingState, Status
from nunet.node.resources import Resources

if TYPE_CHECKING:
    from nunet.actor.envelope import Envelope
    from nunet.actor.runtime import ActorSystem
    from nunet.jobs.orchestrator import DeploymentService
    from nunet.net.qos.core import PeerScore
    from nunet.net.stack import NetworkStack
    from nunet.ucan import TrustContext

MAX_ACTOR_WAIT_S = 300.0
REVOKE_TOPIC = "/nunet/cap/revoke"
REVOKE_BEHAVIOR = "/dms/cap/revoke/broadcast"
RESOURCE_KINDS = ("onboarded", "free", "allocated")
# Machine facts change rarely (hot-plugged disks, CPU frequency); re-detecting on every request
# would cost ~ms of /proc and /sys reads, so they are cached briefly.
MACHINE_CACHE_SECONDS = 30.0


class PeerInfo(msgspec.Struct, frozen=True):
    did: str
    addresses: tuple[str, ...] = ()


class PingReply(msgspec.Struct, frozen=True):
    did: str
    rtt_ms: float


class Announced(msgspec.Struct, frozen=True):
    message_id: str


class DhtInfo(msgspec.Struct, frozen=True):
    table: DhtSnapshot
    stats: DhtStats


class Revoked(msgspec.Struct, frozen=True):
    id: str  # the revocation's own id (hex)
    broadcast: bool


class CapReload(msgspec.Struct, frozen=True):
    context: str
    reloaded: bool
    reason: str = ""


class HardwareUsage(msgspec.Struct, frozen=True):
    """What the whole machine uses now (DMS /dms/node/hardware/usage)."""

    cpu_percent: float  # since the previous call (0.0 on the first)
    load_average: tuple[float, float, float]
    ram_used_bytes: int
    ram_total_bytes: int
    disk_used_bytes: int  # on the work directory's file system
    disk_total_bytes: int


class NodeInfo(msgspec.Struct, frozen=True):
    did: str
    context: str
    version: str
    pid: int
    started_at: float
    uptime_s: float
    onboarded: bool
    listen_addresses: tuple[str, ...]


class Node:
    def __init__(
        self,
        *,
        config: Config,
        keypair: KeyPair,
        store: Store,
        context: str,
        work_dir: Path,
        network: NetworkStack | None = None,
        trust: TrustContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.net = network
        self.trust = trust
        self.actors: ActorSystem | None = None  # set by the daemon once the network exists
        self.deployments: DeploymentService | None = None  # set by the daemon after the actors
        self.keypair = keypair
        self.store = store
        self.context = context
        self.work_dir = work_dir
        self._clock = clock
        self.started_at = clock()
        self.benchmark = BenchmarkService(store, work_dir, clock=clock)
        self._machine: MachineInfo | None = None
        self._machine_at = 0.0
        general = config.general
        self.onboarding = Onboarding(
            Singleton(store, "onboarding", OnboardingState),
            # Onboarding checks free disk, which must be current, not the cached figure.
            lambda: detect_machine(self.work_dir),
            Location(
                city=general.host_city,
                country=general.host_country,
                continent=general.host_continent,
            ),
            clock=clock,
        )

    @property
    def did(self) -> str:
        return self.keypair.did

    def handle(self) -> Handle:
        return Handle(
            id=self.did, did=self.did, address=Address(host_id=self.did, inbox_address=ROOT_INBOX)
        )

    def machine(self) -> MachineInfo:
        now = self._clock()
        if self._machine is None or now - self._machine_at > MACHINE_CACHE_SECONDS:
            self._machine = detect_machine(self.work_dir)
            self._machine_at = now
        return self._machine

    def usage(self) -> HardwareUsage:
        import psutil  # lazily: ~25 ms of imports

        memory = psutil.virtual_memory()
        disk = detect_disk(self.work_dir)  # current, not the cached machine facts
        load = os.getloadavg()
        return HardwareUsage(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            load_average=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
            ram_used_bytes=int(memory.total - memory.available),
            ram_total_bytes=int(memory.total),
            disk_used_bytes=disk.total_bytes - disk.free_bytes,
            disk_total_bytes=disk.total_bytes,
        )

    def info(self) -> NodeInfo:
        now = self._clock()
        return NodeInfo(
            did=self.did,
            context=self.context,
            version=__version__,
            pid=os.getpid(),
            started_at=self.started_at,
            uptime_s=round(now - self.started_at, 3),
            onboarded=self.onboarding.status().onboarded,
            listen_addresses=tuple(self.config.p2p.listen_address),
        )

    # --- actor messages from the local API (DMS /actor/{send,invoke,broadcast}) ------------------

    def _actor_system(self) -> ActorSystem:
        if self.actors is None:
            raise ClosedResourceError("this node runs without actors")
        return self.actors

    async def actor_send(self, env: Envelope) -> None:
        """Deliver an envelope a user signed: to one of our actors, its host, or its topic."""
        await self._actor_system().deliver_local(env)

    async def actor_invoke(self, env: Envelope) -> Envelope:
        """Send an invocation and wait for its reply until the envelope expires."""
        if not env.options.reply_to:
            raise ValidationError("an invocation needs a reply behaviour", path="options.reply_to")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Envelope] = loop.create_future()

        def on_reply(answer: Envelope) -> None:
            if not reply.done():
                reply.set_result(answer)

        await self._actor_system().deliver_local(env, reply=on_reply)
        try:
            async with asyncio.timeout(self._wait_s(env)):
                return await reply
        except TimeoutError:
            raise InvokeTimeout(
                f"no reply from {env.to.did} to {env.behavior} before the message expired"
            ) from None

    async def actor_broadcast(self, env: Envelope) -> list[Envelope]:
        """Publish an envelope on its topic and collect the replies until it expires."""
        if not env.options.topic:
            raise ValidationError("a broadcast needs a topic", path="options.topic")
        replies: list[Envelope] = []
        await self._actor_system().deliver_local(env, reply=replies.append)
        await asyncio.sleep(self._wait_s(env))
        return replies

    def _wait_s(self, env: Envelope) -> float:
        # Never longer than the replay window a signed envelope may live anyway.
        return max(0.0, min(env.options.expiry / 1e9 - self._clock(), MAX_ACTOR_WAIT_S))

    # --- deployments (DMS /dms/node/deployment/*): the service is the facade ---------------------

    def deployment_service(self) -> DeploymentService:
        if self.deployments is None:
            raise ClosedResourceError("this node runs without the deployment service")
        return self.deployments

    # --- capabilities (DMS /dms/cap/*) ------------------------------------------------------------

    def reload_capabilities(self, context: str) -> CapReload:
        """Re-read a capability context after `nunet cap` changed its file."""
        if context != self.context:
            return CapReload(context=context, reloaded=False,
                             reason=f"this node runs context {self.context!r}")
        if self.trust is None:
            return CapReload(context=context, reloaded=False, reason="no capability context")
        self.trust.reload()
        if self.actors is not None:
            # Chains chosen for outgoing messages are re-checked every few seconds anyway; a
            # new provide anchor should be used from the very next message.
            for actor in self.actors.all_actors():
                actor.capabilities.refresh()
        return CapReload(context=context, reloaded=True)

    async def broadcast_revocation(self, token: bytes) -> Revoked:
        """Apply a revocation here and gossip it to every node (DMS /dms/cap/revoke/broadcast).

        Revocations authenticate themselves (signed; they bind only chains in which their
        issuer issued a link), so receivers accept them from any signed sender."""
        from nunet.ucan import token_id

        trust = self.trust
        if trust is None:
            raise ClosedResourceError("this node has no capability context")
        trust.add_revocation(token, self._clock())
        system = self._actor_system()
        await system.root.send(NO_HANDLE, REVOKE_BEHAVIOR, token, topic=REVOKE_TOPIC)
        return Revoked(id=token_id(token).hex(), broadcast=True)

    # --- peers (DMS /dms/node/peers/*) -----------------------------------------------------------

    def _stack(self) -> NetworkStack:
        if self.net is None:
            raise ClosedResourceError("this node runs without a network")
        return self.net

    def peer_self(self) -> PeerInfo:
        if self.net is None:
            return PeerInfo(did=self.did, addresses=tuple(self.config.p2p.listen_address))
        return PeerInfo(did=self.did, addresses=self.net.advertised())

    def peers(self) -> list[PeerInfo]:
        if self.net is None:
            return []
        network = self.net.network
        return [
            PeerInfo(did=did, addresses=network.known_addresses(did))
            for did in sorted(network.connected())
        ]

    async def connect(self, address: str) -> PeerInfo:
        stack = self._stack()
        did = await stack.dht.connect(address)
        return PeerInfo(did=did, addresses=stack.network.known_addresses(did))

    async def ping(self, did: str) -> PingReply:
        from nunet.crypto.did import public_key_from_did

        public_key_from_did(did)  # a malformed DID is the caller's error, not "unreachable"
        stack = self._stack()
        if did not in stack.network.connected() and not stack.network.known_addresses(did):
            await stack.dht.find_peer(did)
        seconds = await stack.qos.ping(did)
        return PingReply(did=did, rtt_ms=round(seconds * 1000, 3))

    def dht(self) -> DhtInfo:
        stack = self._stack()
        return DhtInfo(table=stack.dht.routing_table_snapshot(), stats=stack.dht.stats())

    def scores(self) -> dict[str, PeerScore]:
        return self._stack().qos.scores()

    def announce(self) -> Announced:
        return Announced(message_id=self._stack().hello.announce().hex())

    def heard(self) -> list[HeardPeer]:
        return self._stack().hello.heard()

    # --- onboarding (DMS names: Onboard, GetMetadata, Status, ResourceConfig, Offboard) --------

    def onboard(self, capacity: Capacity) -> Metadata:
        return self.onboarding.onboard(capacity)

    def resource_config(self, capacity: Capacity) -> Metadata:
        return self.onboarding.resource_config(capacity)

    def metadata(self) -> Metadata:
        return self.onboarding.metadata()

    def status(self) -> Status:
        return self.onboarding.status()

    def offboard(self, force: bool = False) -> None:
        self.onboarding.offboard(force)

    def resources(self, kind: str) -> Resources:
        if kind == "onboarded":
            return self.onboarding.onboarded_resources()
        if kind == "free":
            return self.onboarding.free_resources()
        if kind == "allocated":
            return self.onboarding.allocated_resources()
        raise ValidationError(
            f"unknown resource kind {kind!r}; expected one of {', '.join(RESOURCE_KINDS)}",
            path="kind",
        )
