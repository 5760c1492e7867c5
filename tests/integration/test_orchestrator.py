"""The orchestrator against real providers (`ProviderService` with the null executor) on a
memnet network: every deployment goes through bids, commits, allocation, start and the reports,
with real stores on both sides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from provider_world import World, make_node, provider_service, until, world

from nunet.crypto.keys import KeyPair
from nunet.errors import IllegalTransition, NotFound, ValidationError
from nunet.executor.api import ExecutionSpec
from nunet.executor.null import NullBehaviour, NullExecutor
from nunet.jobs.lifecycle import AllocationStatus, DeploymentStatus
from nunet.jobs.orchestration import Tuning
from nunet.jobs.orchestrator import DeploymentService
from nunet.jobs.records import (
    AllocationsArgs,
    DeploymentRef,
    ListDeployments,
    LogsArgs,
    NewDeployment,
    ResultsArgs,
)
from nunet.node.node import Node

D = DeploymentStatus
A = AllocationStatus
USER, BOB, CHARLIE = (KeyPair.from_seed(bytes([0x70 + i]) * 32) for i in range(3))
FAST = Tuning(bid_window_s=0.3, retry_s=0.2, probe_interval_s=0.3, call_timeout_s=2.0,
              max_misses=3, shutdown_grace_s=5.0)


def behaviour(spec: ExecutionSpec) -> NullBehaviour:
    """`echo TEXT`, `fail CODE TEXT`, `sleep SECONDS`, `serve` (runs until stopped)."""
    match spec.cmd:
        case ("echo", text):
            return NullBehaviour(stdout=text.encode() + b"\n")
        case ("fail", code, text):
            return NullBehaviour(exit_code=int(code), stderr=text.encode() + b"\n")
        case ("sleep", seconds):
            return NullBehaviour(duration_s=float(seconds), stdout=b"slept\n")
    return NullBehaviour(duration_s=3600)


def alloc(name: str, *, kind: str = "task", cmd: str = '["echo", "hi"]',
          cores: float = 0.5) -> str:
    return f"""
  {name}:
    type: {kind}
    executor: null
    resources: {{cpu: {{cores: {cores}}}, ram: {{size: 0.5}}, disk: {{size: 1}}}}
    execution: {{type: null, cmd: {cmd}}}"""


def ensemble(allocations: str, nodes: str) -> str:
    return f"version: V1\nallocations:{allocations}\nnodes:{nodes}\n"


def node_of(names: str, extra: str = "", name: str = "n1") -> str:
    return f"\n  {name}:\n    allocations: [{names}]\n{extra}"


HELLO = ensemble(alloc("hello", cmd='["echo", "Hello from nunet!"]'), node_of("hello"))


class Cluster:
    def __init__(self, w: World, user: Node, service: DeploymentService,
                 providers: dict[str, Node]) -> None:
        self.w = w
        self.user = user
        self.service = service
        self.providers = providers
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.service_task: asyncio.Task[None] = asyncio.current_task()  # type: ignore[assignment]

    async def deploy(self, text: str, timeout: float = 20.0) -> str:
        return (await self.service.new(NewDeployment(ensemble=text, timeout=timeout))).id

    def status(self, deployment: str) -> DeploymentStatus:
        return self.service.status(DeploymentRef(id=deployment)).status

    async def wait(self, deployment: str, *statuses: DeploymentStatus,
                   timeout: float = 20.0) -> None:
        await until(lambda: self.status(deployment) in statuses, timeout)


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[dict[str, Node]]:
    nodes = {}
    for name, key in (("user", USER), ("bob", BOB), ("charlie", CHARLIE)):
        (tmp_path / name).mkdir()
        nodes[name] = make_node(tmp_path / name, key, onboard=name != "user")
    yield nodes
    for node in nodes.values():
        node.store.close()


async def start_service(w: World, user: Node, tuning: Tuning = FAST) -> tuple[
        DeploymentService, asyncio.Task[None]]:
    service = DeploymentService(user, tuning=tuning)
    return service, await w.start(service)


@pytest.fixture
async def cluster(homes: dict[str, Node]) -> AsyncIterator[Cluster]:
    async with world([USER, BOB, CHARLIE]) as w:
        user = homes["user"]
        user.actors = w.by_did[USER.did]
        providers = {}
        tasks = {}
        services = []
        for name in ("bob", "charlie"):
            node = homes[name]
            node.actors = w.by_did[node.did]
            services.append(provider_service(node.actors, node, {"null": NullExecutor(behaviour)}))
            tasks[name] = await w.start(services[-1])
            providers[name] = node
        service, task = await start_service(w, user)
        c = Cluster(w, user, service, providers)
        c.tasks = tasks
        c.service_task = task
        try:
            yield c
        finally:
            c.service_task.cancel()
            for provider in services:  # their log files are closed by a close, not a stop
                for record in provider.allocation_records():
                    actor = provider.allocation(record.deployment_id, record.name)
                    if actor is not None:
                        await actor.close()
            for running in tasks.values():
                running.cancel()


async def test_a_task_completes_and_its_logs_are_kept(cluster: Cluster) -> None:
    dep = await cluster.deploy(HELLO)
    assert cluster.status(dep) in (D.PREPARING, D.COMMITTING)
    await cluster.wait(dep, D.COMPLETED, D.FAILED)
    view = cluster.service.status(DeploymentRef(id=dep))
    assert view.status is D.COMPLETED, view.reason
    assert [c.status for c in view.history] == [
        D.PREPARING, D.COMMITTING, D.PROVISIONING, D.RUNNING, D.COMPLETED]
    (alloc_view,) = view.allocations
    assert alloc_view.status is A.COMPLETED
    assert alloc_view.exit_code == 0
    provider = alloc_view.provider
    assert provider in (BOB.did, CHARLIE.did)
    assert view.orchestrator.address.inbox_address == dep
    logs = await cluster.service.logs(LogsArgs(id=dep))
    assert b"Hello from nunet!" in logs.data
    assert logs.finished
    # Kept here: the provider may forget it.
    await until(lambda: cluster.service.kept_logs.exists(f"{dep}/hello"))
    for node in cluster.providers.values():
        assert node.resources("free") == node.resources("onboarded")
    manifest = cluster.service.manifest(DeploymentRef(id=dep))
    assert manifest.nodes["n1"].provider == provider
    manifest.nodes["n1"].bid.verify()  # the evidence of what was offered
    assert manifest.ensemble["allocations"]["hello"]["type"] == "task"


async def test_two_nodes_land_on_two_providers(cluster: Cluster) -> None:
    text = ensemble(alloc("one") + alloc("two"), node_of("one") + node_of("two", name="n2"))
    dep = await cluster.deploy(text)
    await cluster.wait(dep, D.COMPLETED, D.FAILED)
    view = cluster.service.status(DeploymentRef(id=dep))
    assert view.status is D.COMPLETED, view.reason
    assert sorted(view.providers.values()) == sorted([BOB.did, CHARLIE.did])
    allocations = cluster.service.allocations(AllocationsArgs(deployment=dep))
    assert {a.name: a.status for a in allocations} == {"one": A.COMPLETED, "two": A.COMPLETED}
    with pytest.raises(ValidationError, match="name one of one, two"):
        await cluster.service.logs(LogsArgs(id=dep))


async def test_a_pinned_node_goes_to_its_peer(cluster: Cluster) -> None:
    for _ in range(2):
        dep = await cluster.deploy(ensemble(alloc("hello"),
                                            node_of("hello", f"    peer: {CHARLIE.did}\n")))
        await cluster.wait(dep, D.COMPLETED, D.FAILED)
        view = cluster.service.status(DeploymentRef(id=dep))
        assert view.status is D.COMPLETED, view.reason
        assert view.providers == {"n1": CHARLIE.did}


async def test_too_big_queues_with_the_reason_then_fails(cluster: Cluster) -> None:
    dep = await cluster.deploy(ensemble(alloc("big", cores=64), node_of("big")), timeout=1.5)
    await until(lambda: "needs 64 cores" in cluster.service.status(DeploymentRef(id=dep)).reason)
    page = cluster.service.list_deployments(ListDeployments(status=D.PREPARING))
    assert [item.id for item in page.items] == [dep]
    assert "needs 64 cores, has 4 free (2 providers)" in page.items[0].reason
    await cluster.wait(dep, D.FAILED)
    reason = cluster.service.status(DeploymentRef(id=dep)).reason
    assert reason.startswith("timed out after 1.5 s while Preparing")
    assert "needs 64 cores" in reason


async def test_a_failing_task_fails_with_code_and_stderr(cluster: Cluster) -> None:
    dep = await cluster.deploy(ensemble(alloc("bad", cmd='["fail", "3", "it broke"]'),
                                        node_of("bad")))
    await cluster.wait(dep, D.FAILED, D.COMPLETED)
    view = cluster.service.status(DeploymentRef(id=dep))
    assert view.status is D.FAILED
    assert view.reason.startswith("allocation bad failed")
    assert "3" in view.reason
    assert "it broke" in view.reason
    assert view.allocations[0].exit_code == 3


async def test_a_service_runs_until_shut_down(cluster: Cluster) -> None:
    dep = await cluster.deploy(ensemble(alloc("web", kind="service", cmd='["serve"]'),
                                        node_of("web")))
    await cluster.wait(dep, D.RUNNING, D.FAILED)
    provider = cluster.service.status(DeploymentRef(id=dep)).providers["n1"]
    node = next(n for n in cluster.providers.values() if n.did == provider)
    assert node.resources("free") != node.resources("onboarded")
    with pytest.raises(IllegalTransition, match="'delete' is not allowed in state 'Running'"):
        cluster.service.delete(DeploymentRef(id=dep))
    cluster.service.shutdown(DeploymentRef(id=dep))
    await cluster.wait(dep, D.COMPLETED)
    view = cluster.service.status(DeploymentRef(id=dep))
    assert view.allocations[0].status is A.STOPPED
    assert node.resources("free") == node.resources("onboarded")
    with pytest.raises(IllegalTransition):
        cluster.service.shutdown(DeploymentRef(id=dep))
    cluster.service.delete(DeploymentRef(id=dep))
    with pytest.raises(NotFound):
        cluster.service.status(DeploymentRef(id=dep))


async def test_listing_pages_by_status(cluster: Cluster) -> None:
    services = [await cluster.deploy(ensemble(alloc("web", kind="service", cmd='["serve"]'),
                                              node_of("web"))) for _ in range(2)]
    task = await cluster.deploy(HELLO)
    for dep in services:
        await cluster.wait(dep, D.RUNNING)
    await cluster.wait(task, D.COMPLETED)
    first = cluster.service.list_deployments(ListDeployments(status=D.RUNNING, limit=1))
    assert (len(first.items), first.total, first.more) == (1, 2, True)
    second = cluster.service.list_deployments(ListDeployments(status=D.RUNNING, limit=1,
                                                              offset=1))
    assert (len(second.items), second.total, second.more) == (1, 2, False)
    assert {first.items[0].id, second.items[0].id} == set(services)
    everything = cluster.service.list_deployments(ListDeployments())
    assert everything.items[0].id == task  # newest first
    assert everything.total == 3


async def test_a_lost_provider_is_replaced(cluster: Cluster) -> None:
    text = ensemble(alloc("web", kind="service", cmd='["serve"]'),
                    node_of("web", "    failure_recovery: redeploy\n"))
    dep = await cluster.deploy(text)
    await cluster.wait(dep, D.RUNNING, D.FAILED)
    first = cluster.service.status(DeploymentRef(id=dep)).providers["n1"]
    cluster.w.hub.partition(USER.did, first)  # the provider is gone, for the orchestrator
    await until(lambda: first in cluster.service.status(DeploymentRef(id=dep)).excluded, 15)
    await cluster.wait(dep, D.RUNNING, D.FAILED)
    view = cluster.service.status(DeploymentRef(id=dep))
    assert view.status is D.RUNNING, view.reason
    assert view.providers["n1"] not in (first, USER.did)
    assert view.allocations[0].attempt == 2
    assert any("stopped answering" in c.reason for c in view.history)
    cluster.service.shutdown(DeploymentRef(id=dep))
    await cluster.wait(dep, D.COMPLETED)


async def test_a_restarted_orchestrator_resumes(cluster: Cluster) -> None:
    dep = await cluster.deploy(ensemble(alloc("slow", cmd='["sleep", "1.5"]'), node_of("slow")))
    await cluster.wait(dep, D.RUNNING)
    # The node stops (its deployment service and the orchestrator actor with it) ...
    cluster.service_task.cancel()
    await until(lambda: cluster.user.actors is not None
                and cluster.user.actors.actor(dep) is None)
    # ... and starts again on the same store: the deployment is picked up, not lost.
    service, task = await start_service(cluster.w, cluster.user)
    assert service.counters["resumed"] == 1
    cluster.service, cluster.service_task = service, task
    await cluster.wait(dep, D.COMPLETED, D.FAILED)
    assert cluster.status(dep) is D.COMPLETED


async def test_bad_requests_are_typed_errors(cluster: Cluster) -> None:
    from nunet.errors import EnsembleInvalid

    with pytest.raises(EnsembleInvalid):
        await cluster.service.new(NewDeployment(ensemble="version: V1\nallocations: {}\n"))
    with pytest.raises(NotFound):
        cluster.service.status(DeploymentRef(id="nope"))
    dep = await cluster.deploy(HELLO)
    with pytest.raises(NotFound, match="no allocation 'other'"):
        await cluster.service.logs(LogsArgs(id=dep, allocation="other"))
    await cluster.wait(dep, D.COMPLETED)
    listing = await cluster.service.results(ResultsArgs(id=dep))
    assert listing.files == ()
