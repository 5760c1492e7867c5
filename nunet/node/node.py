"""The Node facade: the one object the local API and the CLI talk to.

It owns nothing with a lifetime of its own (the daemon owns the store, the API server and, later,
the network); it binds identity, configuration, state and onboarding together and answers the
questions users ask. Keeping the API on this facade (never on internals) lets the actor behaviours
of a later issue call the very same methods.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from nunet import __version__
from nunet.benchmark.service import BenchmarkService
from nunet.config.schema import Config
from nunet.crypto.keys import KeyPair
from nunet.db.repository import Singleton
from nunet.db.store import Store
from nunet.errors import ClosedResourceError, ValidationError
from nunet.net.dht.core import DhtStats
from nunet.net.dht.service import DhtSnapshot
from nunet.net.hello import HeardPeer
from nunet.node.machine import MachineInfo, detect_machine
from nunet.node.onboarding import Capacity, Location, Metadata, Onboarding, OnboardingState, Status
from nunet.node.resources import Resources

if TYPE_CHECKING:
    from nunet.net.qos.core import PeerScore
    from nunet.net.stack import NetworkStack

ROOT_INBOX = "root"
RESOURCE_KINDS = ("onboarded", "free", "allocated")
# Machine facts change rarely (hot-plugged disks, CPU frequency); re-detecting on every request
# would cost ~ms of /proc and /sys reads, so they are cached briefly.
MACHINE_CACHE_SECONDS = 30.0


class Address(msgspec.Struct, frozen=True):
    host_id: str
    inbox_address: str


class Handle(msgspec.Struct, frozen=True):
    """How other actors name this node's root actor (DMS: `{id, did, address}`)."""

    id: str
    did: str
    address: Address


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.net = network
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
