"""Shared by the provider tests: a memnet world with a provider node (a real `Node` over a real
store, onboarded on a fixed machine description) running `ProviderService`, and a small fake
orchestrator that drives the deployment protocol and collects the allocation reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

from nunet.actor.handle import Handle
from nunet.actor.runtime import Actor, ActorSystem, Message
from nunet.config.loader import load_config
from nunet.crypto.keys import KeyPair
from nunet.db.repository import Singleton
from nunet.db.store import Store
from nunet.executor.api import Executor
from nunet.jobs.allocation import AllocationSettings
from nunet.jobs.capability import claim, requirement
from nunet.jobs.protocol import (
    ALLOCATE,
    ALLOCATION_START,
    ALLOCATION_STATUS,
    BID_REQUEST,
    CAPABILITY,
    COMMIT,
    TOPIC_DEPLOYMENT,
    Allocate,
    Allocated,
    AllocationReport,
    BidRequest,
    Bids,
    Commit,
    CommitReply,
    decode,
    encode,
)
from nunet.jobs.provider import ProviderService
from nunet.jobs.spec import Ensemble, parse_ensemble
from nunet.node.machine import CPUInfo, DiskInfo, MachineInfo
from nunet.node.node import Node
from nunet.node.onboarding import Capacity, Location, Onboarding, OnboardingState
from nunet.node.resources import gib
from nunet.testing.actors import World as World  # re-exported for the provider tests
from nunet.testing.actors import world as world

KEYS = [KeyPair.from_seed(bytes([0x60 + i]) * 32) for i in range(4)]
PROVIDER, USER, OTHER = KEYS[:3]
MACHINE = MachineInfo(
    cpu=CPUInfo("Test CPU", "AMD", "x86_64", 4, 8, 3000.0, 3500.0, 1 << 25),
    ram_bytes=gib(32),
    disk=DiskInfo("/data", gib(500), gib(200)),
    gpus=(),
    os="Test OS",
    kernel="6.1",
    hostname="box",
)
HERE = Location(city="Porto", country="PT", continent="Europe")
CAPACITY = Capacity(cpu=4, ram=8, disk=100)
FAST = AllocationSettings(linger_s=30, stop_grace_s=1, restart_backoff_s=0.01,
                          health_interval_s=0.2, health_start_period_s=5)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state spread over several objects
            await asyncio.sleep(0.01)


def make_node(tmp: Path, key: KeyPair = PROVIDER, *, onboard: bool = True) -> Node:
    """A real node facade over a real store; onboarding sees a fixed 4-core, 32 GiB machine."""
    store = Store.open(tmp / "db")
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    node = Node(config=load_config(None, env={}).config, keypair=key, store=store,
                context="test", work_dir=work)
    node.onboarding = Onboarding(Singleton(store, "onboarding", OnboardingState),
                                 lambda: MACHINE, HERE)
    if onboard:
        node.onboard(CAPACITY)
    return node


class Orchestrator:
    """A stand-in for the orchestrator: a child actor on the user's node."""

    def __init__(self, system: ActorSystem, deployment_id: str) -> None:
        self.deployment_id = deployment_id
        self.actor: Actor = system.spawn(deployment_id)
        self.reports: list[AllocationReport] = []
        self.senders: list[Handle] = []
        self.actor.add_behavior(ALLOCATION_STATUS, self._on_report, capability=CAPABILITY)

    def _on_report(self, message: Message) -> None:
        self.reports.append(decode(message.payload, AllocationReport))
        self.senders.append(message.envelope.sender)

    @property
    def handle(self) -> Handle:
        return self.actor.handle

    def statuses(self, allocation: str) -> list[str]:
        return [r.status for r in self.reports if r.allocation == allocation]

    def last(self, allocation: str) -> AllocationReport | None:
        mine = [r for r in self.reports if r.allocation == allocation]
        return mine[-1] if mine else None

    async def wait_status(self, allocation: str, status: str, timeout: float = 20.0) -> \
            AllocationReport:
        try:
            await until(lambda: status in self.statuses(allocation), timeout)
        except TimeoutError:
            raise AssertionError(f"no {status!r} for {allocation} in {self.reports}") from None
        return next(r for r in self.reports if r.allocation == allocation and r.status == status)

    def request(self, ensemble: Ensemble, ttl: float = 30.0) -> BidRequest:
        return BidRequest(
            deployment_id=self.deployment_id, orchestrator=self.handle,
            requirements={n: requirement(ensemble, n) for n in ensemble.nodes},
            expires_at=self.actor.system.clock() + ttl,
        )

    async def bids(self, ensemble: Ensemble, *, wait: float = 0.5) -> list[Bids]:
        """Broadcast a bid request; asked again while the gossip mesh is still forming."""
        for _ in range(20):
            replies = await self.actor.broadcast(TOPIC_DEPLOYMENT, BID_REQUEST,
                                                 encode(self.request(ensemble)), timeout=wait)
            if replies:
                break
        return [decode(data, Bids) for _, data in replies]

    async def ask(self, provider: Handle, ensemble: Ensemble) -> Bids:
        data = await self.actor.invoke(provider, BID_REQUEST, encode(self.request(ensemble)))
        return decode(data, Bids)

    async def commit(self, provider: Handle, ensemble: Ensemble, node: str, bids: Bids, *,
                     ttl: float = 30.0) -> CommitReply:
        bid = next(b for b in bids.bids if b.node == node)
        need = requirement(ensemble, node)
        ports = tuple(p.public for p in ensemble.nodes[node].ports)
        commit = Commit(deployment_id=self.deployment_id, node=node,
                        resources=claim(need, bid.offer), ports=ports,
                        expires_at=self.actor.system.clock() + ttl)
        return decode(await self.actor.invoke(provider, COMMIT, encode(commit)), CommitReply)

    async def allocate(self, provider: Handle, ensemble: Ensemble, node: str,
                       ports: tuple[int, ...] = ()) -> dict[str, Handle]:
        request = Allocate(deployment_id=self.deployment_id, node=node,
                           ensemble=ensemble.to_json(), orchestrator=self.handle, ports=ports)
        data = await self.actor.invoke(provider, ALLOCATE, encode(request))
        return decode(data, Allocated).allocations

    async def deploy(self, provider: Handle, ensemble: Ensemble) -> dict[str, Handle]:
        """request -> bid -> commit -> allocate -> start, for every node on `provider`."""
        bids = await self.ask(provider, ensemble)
        handles: dict[str, Handle] = {}
        for node in ensemble.nodes:
            reply = await self.commit(provider, ensemble, node, bids)
            assert reply.ok, reply.reason
            handles.update(await self.allocate(provider, ensemble, node, reply.ports))
        for handle in handles.values():
            await self.actor.invoke(handle, ALLOCATION_START, b"")
        return handles


def provider_service(system: ActorSystem, node: Node, executors: Mapping[str, Executor],
                     **kwargs: object) -> ProviderService:
    kwargs.setdefault("settings", FAST)
    kwargs.setdefault("sweep_interval_s", 0.05)
    return ProviderService(system, node, executors, **kwargs)  # type: ignore[arg-type]


def ensemble(text: str) -> Ensemble:
    return parse_ensemble(text)


def task_yaml(name: str = "hello", *, executor: str = "null", image: str = "busybox",
              cmd: str = '["echo", "hi"]', ram: str = "0.5", extra: str = "",
              node_extra: str = "", cores: float = 0.5, execution_extra: str = "") -> str:
    return f"""
version: V1
allocations:
  {name}:
    type: task
    executor: {executor}
    resources: {{cpu: {{cores: {cores}}}, ram: {{size: {ram}}}, disk: {{size: 1}}}}
    execution: {{type: {executor}, image: {image}, cmd: {cmd}{execution_extra}}}
{extra}
nodes:
  n1:
    allocations: [{name}]
{node_extra}
"""
