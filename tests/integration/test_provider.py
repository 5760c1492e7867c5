"""The provider side of deployments on a memnet world with real actor systems, a real store and
the null executor: bids and refusals, commits that expire, allocate, the allocation lifecycle,
logs and results, failure recovery, authorization and restart reconciliation."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from provider_world import (
    CAPACITY,
    FAST,
    OTHER,
    PROVIDER,
    USER,
    Orchestrator,
    World,
    ensemble,
    make_node,
    provider_service,
    task_yaml,
    until,
    world,
)

from nunet.actor.handle import ROOT_INBOX, Handle
from nunet.errors import RemoteActorError
from nunet.executor.api import ExecutionSpec
from nunet.executor.null import NullBehaviour, NullExecutor
from nunet.jobs.allocation import AllocationRecord
from nunet.jobs.lifecycle import AllocationStatus
from nunet.jobs.protocol import (
    ALLOCATE,
    ALLOCATION_INFO,
    ALLOCATION_LOGS,
    ALLOCATION_RESULTS,
    ALLOCATION_SHUTDOWN,
    ALLOCATION_START,
    COMMIT,
    REVERT,
    Allocate,
    AllocationReport,
    Commit,
    CommitReply,
    LogsChunk,
    LogsRequest,
    ResultsChunk,
    ResultsRequest,
    Revert,
    decode,
    encode,
)
from nunet.node.node import Node
from nunet.node.resources import Resources, gib

A = AllocationStatus


def behaviour(spec: ExecutionSpec) -> NullBehaviour:
    """`echo TEXT`, `fail CODE STDERR`, `sleep SECONDS` (then prints "slept")."""
    match spec.cmd:
        case ("echo", text):
            return NullBehaviour(stdout=text.encode() + b"\n", stderr=b"to stderr\n")
        case ("fail", code, text):
            return NullBehaviour(exit_code=int(code), stderr=text.encode() + b"\n")
        case ("sleep", seconds):
            return NullBehaviour(duration_s=float(seconds), stdout=b"slept\n")
    return NullBehaviour()


def root_of(node: Node) -> Handle:
    return Handle.for_actor(node.did, node.did, ROOT_INBOX)


@pytest.fixture
async def w() -> AsyncIterator[World]:
    async with world([PROVIDER, USER, OTHER]) as w:
        yield w


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = make_node(tmp_path)
    yield node
    node.store.close()


async def test_task_runs_end_to_end_and_gives_everything_back(w: World, node: Node) -> None:
    executor = NullExecutor(behaviour)
    service = provider_service(w.by_did[PROVIDER.did], node, {"null": executor})
    await w.start(service)
    orch = Orchestrator(w.by_did[USER.did], "dep-hello")
    spec = ensemble(task_yaml(cmd='["echo", "hello from nunet"]'))

    bids = await orch.bids(spec)
    assert len(bids) == 1
    (bid,) = bids[0].bids
    bid.verify()  # signed by the provider's node key
    assert (bid.provider, bid.node, bid.offer.free) == (node.did, "n1", node.resources("free"))
    assert bid.offer.location.city == "Porto"
    assert bid.offer.executors == ("null",)

    handles = await orch.deploy(root_of(node), spec)
    assert list(handles) == ["hello"]
    assert handles["hello"].address.inbox_address == "alloc/dep-hello/hello"
    done = await orch.wait_status("hello", "completed")
    assert done.exit_code == 0
    assert orch.statuses("hello") == ["running", "completed"]
    assert all(s == handles["hello"] for s in orch.senders)
    # Before "completed" was reported, the resources were back and the execution removed.
    assert node.resources("free") == node.resources("onboarded")
    assert await executor.list_managed() == []

    chunk = decode(await orch.actor.invoke(handles["hello"], ALLOCATION_LOGS,
                                           encode(LogsRequest())), LogsChunk)
    assert b"hello from nunet\n" in chunk.data
    assert b"to stderr\n" in chunk.data
    assert chunk.finished
    assert chunk.next_offset == len(chunk.data)
    only_out = decode(await orch.actor.invoke(handles["hello"], ALLOCATION_LOGS,
                                              encode(LogsRequest(stream="stdout"))), LogsChunk)
    assert only_out.data == b"hello from nunet\n"
    info = decode(await orch.actor.invoke(handles["hello"], ALLOCATION_INFO, b""),
                  AllocationReport)
    assert (info.status, info.handle) == ("completed", handles["hello"])
    record = service.repo.get("dep-hello/hello")
    assert (record.status, record.holds_resources) == (A.COMPLETED, False)

    with pytest.raises(RemoteActorError) as err:  # a completed allocation is not restarted
        await orch.actor.invoke(handles["hello"], ALLOCATION_START, b"")
    assert err.value.remote_code == "illegal_transition"

    # After the linger the actor goes; the log is still served from disk.
    actor = service.allocation("dep-hello", "hello")
    assert actor is not None
    await actor.close()
    assert service.allocation("dep-hello", "hello") is None
    with pytest.raises(RemoteActorError):
        await orch.actor.invoke(handles["hello"], ALLOCATION_INFO, b"", timeout=2)
    later = service.read_logs("dep-hello", "hello", LogsRequest(stream="stdout"))
    assert (later.data, later.finished) == (b"hello from nunet\n", True)
    assert await service.delete_deployment("dep-hello") == 1
    assert service.allocation_records("dep-hello") == []
    assert not (node.work_dir / "allocations" / "dep-hello").exists()


async def test_ended_allocations_are_closed_after_their_linger(w: World, node: Node) -> None:
    service = provider_service(w.by_did[PROVIDER.did], node, {"null": NullExecutor(behaviour)},
                               settings=msgspec.structs.replace(FAST, linger_s=0))
    await w.start(service)
    orch = Orchestrator(w.by_did[USER.did], "dep-linger")
    handles = await orch.deploy(root_of(node), ensemble(task_yaml(cmd='["echo", "bye"]')))
    await orch.wait_status("hello", "completed")
    await until(lambda: service.allocation("dep-linger", "hello") is None)
    assert w.by_did[PROVIDER.did].actor(handles["hello"].address.inbox_address) is None
    chunk = service.read_logs("dep-linger", "hello", LogsRequest(stream="stdout"))
    assert (chunk.data, chunk.finished) == (b"bye\n", True)


async def test_refusals_say_why(w: World, tmp_path: Path, node: Node) -> None:
    await w.start(provider_service(w.by_did[PROVIDER.did], node,
                                   {"null": NullExecutor(behaviour)}))
    orch = Orchestrator(w.by_did[USER.did], "dep-refused")
    big = ensemble(task_yaml(ram="64"))
    (answer,) = await orch.bids(big)
    assert answer.bids == ()
    assert "needs 64 GiB RAM, has 8 GiB free" in answer.refusals["n1"]

    docker = ensemble(task_yaml(executor="docker"))
    answer = await orch.ask(root_of(node), docker)
    assert "executor docker not available" in answer.refusals["n1"]

    far = ensemble(task_yaml(node_extra="    location: {accept: [{continent: Asia}]}"))
    answer = await orch.ask(root_of(node), far)
    assert "not accepted" in answer.refusals["n1"]

    excluded = ensemble(task_yaml().replace("nodes:", f"exclude_peers: ['{node.did}']\nnodes:"))
    answer = await orch.ask(root_of(node), excluded)
    assert "excluded" in answer.refusals["n1"]

    # Pinned to another provider: nothing to say about that node.
    pinned = ensemble(task_yaml(node_extra=f"    peer: {OTHER.did}"))
    answer = await orch.ask(root_of(node), pinned)
    assert (answer.bids, answer.refusals) == ((), {})
    # Pinned to this one: a bid.
    mine = ensemble(task_yaml(node_extra=f"    peer: {node.did}"))
    answer = await orch.ask(root_of(node), mine)
    assert [b.node for b in answer.bids] == ["n1"]


async def test_not_onboarded_and_unavailable_executor_refuse(w: World, tmp_path: Path) -> None:
    bare = make_node(tmp_path, onboard=False)
    try:
        await w.start(provider_service(w.by_did[PROVIDER.did], bare,
                                       {"null": NullExecutor(available_reason="broken")}))
        orch = Orchestrator(w.by_did[USER.did], "dep-bare")
        answer = await orch.ask(root_of(bare), ensemble(task_yaml()))
        assert answer.refusals == {"n1": "the provider is not onboarded"}
        bare.onboard(CAPACITY)
        answer = await orch.ask(root_of(bare), ensemble(task_yaml()))
        assert "executor null not available (has none)" in answer.refusals["n1"]
    finally:
        bare.store.close()


async def test_commit_needs_a_bid_and_the_same_orchestrator(w: World, node: Node) -> None:
    service = provider_service(w.by_did[PROVIDER.did], node, {"null": NullExecutor(behaviour)})
    await w.start(service)
    orch = Orchestrator(w.by_did[USER.did], "dep-commit")
    spec = ensemble(task_yaml())
    provider = root_of(node)
    commit = Commit(deployment_id="dep-commit", node="n1", resources=Resources(cpu_cores=0.5),
                    expires_at=orch.actor.system.clock() + 30)
    reply = decode(await orch.actor.invoke(provider, COMMIT, encode(commit)), CommitReply)
    assert (reply.ok, reply.reason) == (False, "no live bid of this provider for that node")

    bids = await orch.ask(provider, spec)
    intruder = Orchestrator(w.by_did[OTHER.did], "dep-commit")
    with pytest.raises(RemoteActorError) as err:
        await intruder.actor.invoke(provider, COMMIT, encode(commit))
    assert err.value.remote_code == "capability_denied"
    assert len(service.reservations) == 0

    reply = await orch.commit(provider, spec, "n1", bids)
    assert reply.ok
    # Someone else cannot revert or allocate it.
    with pytest.raises(RemoteActorError):
        await intruder.actor.invoke(provider, REVERT,
                                    encode(Revert(deployment_id="dep-commit", node="n1")))
    assert len(service.reservations) == 1
    with pytest.raises(RemoteActorError) as err:
        await intruder.actor.invoke(provider, ALLOCATE, encode(Allocate(
            deployment_id="dep-commit", node="n1", ensemble=spec.to_json(),
            orchestrator=intruder.handle)))
    assert err.value.remote_code == "capability_denied"
    # The reservation is counted against the next bid, and the revert gives it back.
    before = service.offer()
    assert before is not None
    assert before.free == node.resources("free") - Resources(
        cpu_cores=0.5, ram_bytes=gib(0.5), disk_bytes=gib(1))
    await orch.actor.invoke(provider, REVERT, encode(Revert(deployment_id="dep-commit",
                                                            node="n1")))
    assert len(service.reservations) == 0
    after = service.offer()
    assert after is not None
    assert after.free == node.resources("free")


async def test_expired_commits_are_swept_again_and_again(w: World, node: Node) -> None:
    now = [1_000_000.0]
    service = provider_service(w.by_did[PROVIDER.did], node, {"null": NullExecutor()},
                               clock=lambda: now[0], commit_ttl_s=10)
    await w.start(service)
    provider = root_of(node)
    spec = ensemble(task_yaml())
    orchestrators = [Orchestrator(w.by_did[USER.did], f"dep-sweep-{i}") for i in range(2)]
    for orch in orchestrators:
        bids = await orch.ask(provider, spec)
        assert (await orch.commit(provider, spec, "n1", bids, ttl=3600)).ok
        now[0] += 5  # the second commit expires 5 s after the first
    assert len(service.reservations) == 2
    now[0] += 1  # the first has lived 11 s: capped at 10 s, it is swept
    await until(lambda: len(service.reservations) == 1)
    assert [r.deployment_id for r in service.reservations] == ["dep-sweep-1"]
    now[0] += 5  # the second expires after the first sweep: swept as well
    await until(lambda: len(service.reservations) == 0)
    assert service.counters["reservations_expired"] == 2
    with pytest.raises(RemoteActorError) as err:
        await orchestrators[1].allocate(provider, spec, "n1")
    assert err.value.remote_code == "not_found"
    assert node.resources("free") == node.resources("onboarded")


async def test_allocate_revalidates_the_ensemble(w: World, node: Node) -> None:
    service = provider_service(w.by_did[PROVIDER.did], node, {"null": NullExecutor(behaviour)})
    await w.start(service)
    orch = Orchestrator(w.by_did[USER.did], "dep-check")
    provider = root_of(node)
    small = ensemble(task_yaml())
    bids = await orch.ask(provider, small)
    assert (await orch.commit(provider, small, "n1", bids)).ok
    garbage = Allocate(deployment_id="dep-check", node="n1", ensemble=b"{not json",
                       orchestrator=orch.handle)
    with pytest.raises(RemoteActorError) as err:
        await orch.actor.invoke(provider, ALLOCATE, encode(garbage))
    assert err.value.remote_code == "ensemble_invalid"
    # An ensemble asking for more than was committed does not get it.
    bigger = ensemble(task_yaml(cores=2))
    with pytest.raises(RemoteActorError) as err:
        await orch.allocate(provider, bigger, "n1")
    assert err.value.remote_code == "capacity_error"
    assert "does not fit its reservation" in str(err.value)
    with pytest.raises(RemoteActorError) as err:
        await orch.allocate(provider, small, "nope")
    assert err.value.remote_code == "validation_error"
    # The reservation survived the refusals; the right ensemble is allocated, twice = once.
    first = await orch.allocate(provider, small, "n1")
    again = await orch.allocate(provider, small, "n1")
    assert first == again
    assert node.resources("allocated") == Resources(cpu_cores=0.5, ram_bytes=gib(0.5),
                                                    disk_bytes=gib(1))
    await orch.actor.invoke(first["hello"], ALLOCATION_SHUTDOWN, b"")
    assert orch.statuses("hello") == ["stopped"]
    assert node.resources("free") == node.resources("onboarded")


async def test_failure_is_reported_with_code_and_stderr(w: World, node: Node) -> None:
    await w.start(provider_service(w.by_did[PROVIDER.did], node,
                                   {"null": NullExecutor(behaviour)}))
    orch = Orchestrator(w.by_did[USER.did], "dep-fail")
    await orch.deploy(root_of(node), ensemble(task_yaml(cmd='["fail", "3", "no such file"]')))
    failed = await orch.wait_status("hello", "failed")
    assert failed.exit_code == 3
    assert failed.reason == "exit code 3; stderr: no such file"
    assert node.resources("free") == node.resources("onboarded")


async def test_restart_policy_restarts_locally_then_gives_up(w: World, node: Node) -> None:
    executor = NullExecutor(behaviour)
    await w.start(provider_service(w.by_did[PROVIDER.did], node, {"null": executor}))
    orch = Orchestrator(w.by_did[USER.did], "dep-restart")
    spec = ensemble(task_yaml(cmd='["fail", "1", "boom"]', extra="    failure_recovery: restart"))
    await orch.deploy(root_of(node), spec)
    await until(lambda: node.resources("free") == node.resources("onboarded"))
    # FAST allows 3 restarts: four runs, each failed; the last failure is final.
    assert orch.statuses("hello") == ["running", "failed", "pending"] * 3 + ["running", "failed"]
    assert executor.started == 4
    assert await executor.list_managed() == []


async def test_service_shutdown_stops_it(w: World, node: Node) -> None:
    executor = NullExecutor(behaviour)
    service = provider_service(w.by_did[PROVIDER.did], node, {"null": executor})
    await w.start(service)
    orch = Orchestrator(w.by_did[USER.did], "dep-svc")
    spec = ensemble(task_yaml(cmd='["sleep", "60"]').replace("type: task", "type: service"))
    handles = await orch.deploy(root_of(node), spec)
    await orch.wait_status("hello", "running")
    assert node.resources("free") != node.resources("onboarded")
    # Only its orchestrator may stop it.
    other = Orchestrator(w.by_did[OTHER.did], "dep-svc")
    with pytest.raises(RemoteActorError) as err:
        await other.actor.invoke(handles["hello"], ALLOCATION_SHUTDOWN, b"")
    assert err.value.remote_code == "capability_denied"
    report = decode(await orch.actor.invoke(handles["hello"], ALLOCATION_SHUTDOWN, b""),
                    AllocationReport)
    assert report.status == "stopped"
    assert orch.statuses("hello") == ["running", "stopped"]
    assert node.resources("free") == node.resources("onboarded")
    assert await executor.list_managed() == []
    # A stopped allocation may be started again by its orchestrator (its failure policy).
    await orch.actor.invoke(handles["hello"], ALLOCATION_START, b"")
    await until(lambda: orch.statuses("hello")[-1] == "running")
    assert orch.statuses("hello")[-2:] == ["pending", "running"]
    assert node.resources("free") != node.resources("onboarded")
    await orch.actor.invoke(handles["hello"], ALLOCATION_SHUTDOWN, b"")
    assert node.resources("free") == node.resources("onboarded")


async def test_results_are_listed_and_read_but_never_outside(w: World, node: Node) -> None:
    await w.start(provider_service(w.by_did[PROVIDER.did], node,
                                   {"null": NullExecutor(behaviour)}))
    orch = Orchestrator(w.by_did[USER.did], "dep-results")
    extra = "    volume: [{type: local, name: out, mountpoint: /out}]"
    handles = await orch.deploy(root_of(node), ensemble(task_yaml(extra=extra)))
    await orch.wait_status("hello", "completed")
    out = node.work_dir / "volumes" / "dep-results" / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "result.txt").write_bytes(b"42\n" * 1000)
    (node.work_dir / "secret").write_text("host secret")
    os.symlink(node.work_dir / "secret", out / "leak")
    handle = handles["hello"]

    async def results(request: ResultsRequest) -> ResultsChunk:
        data = await orch.actor.invoke(handle, ALLOCATION_RESULTS, encode(request))
        return decode(data, ResultsChunk)

    listing = await results(ResultsRequest())
    assert (listing.files, listing.eof) == (("out/sub/result.txt",), True)
    first = await results(ResultsRequest(path="out/sub/result.txt", limit=1000))
    assert (first.data, first.next_offset, first.eof) == (b"42\n" * 333 + b"4", 1000, False)
    rest = await results(ResultsRequest(path="out/sub/result.txt", offset=1000))
    assert (len(rest.data), rest.eof) == (2000, True)
    for bad, code in (("out/../../secret", "unsafe_path"), ("/etc/passwd", "unsafe_path"),
                      ("out/leak", "unsafe_path"), ("out/missing", "not_found"),
                      ("other/x", "not_found")):
        with pytest.raises(RemoteActorError) as err:
            await results(ResultsRequest(path=bad))
        assert err.value.remote_code == code, bad


async def test_restart_reconciliation_readopts_and_cleans(w: World, node: Node) -> None:
    executor = NullExecutor(behaviour)
    system = w.by_did[PROVIDER.did]
    first = provider_service(system, node, {"null": executor})
    task = await w.start(first)
    orch = Orchestrator(w.by_did[USER.did], "dep-rec")
    spec = ensemble(task_yaml("svc", cmd='["sleep", "60"]').replace("type: task",
                                                                      "type: service"))
    handles = await orch.deploy(root_of(node), spec)
    await orch.wait_status("svc", "running")
    lost = ensemble(task_yaml("gone", cmd='["sleep", "60"]'))
    lost_orch = Orchestrator(w.by_did[USER.did], "dep-lost")
    await lost_orch.deploy(root_of(node), lost)
    await lost_orch.wait_status("gone", "running")
    held = node.resources("allocated")
    assert held == Resources(cpu_cores=1, ram_bytes=gib(1), disk_bytes=gib(2))

    task.cancel()  # the provider process "stops"; its executions run on
    await until(task.done)
    running = {m.execution_id for m in await executor.list_managed()}
    assert len(running) == 2
    gone_eid = first.repo.get("dep-lost/gone").execution_id
    await executor.remove(gone_eid)  # this one vanishes while the provider is down
    # A leftover of ours without a record, and someone else's execution.
    await executor.start(ExecutionSpec(execution_id=f"{first.tag}-orphan-1", image="x",
                                       cmd=("sleep", "60")))
    await executor.start(ExecutionSpec(execution_id="someone-else-1", image="x",
                                       cmd=("sleep", "60")))
    # Allocated resources drifted (a crash between a release and its record): settled again.
    node.onboarding.allocate(Resources(cpu_cores=1))

    second = provider_service(system, node, {"null": executor})
    await w.start(second)
    assert second.counters["adopted"] == 1
    assert second.counters["terminated"] == 1
    assert second.counters["orphans_removed"] == 1
    left = {m.execution_id for m in await executor.list_managed()}
    assert left == (running - {gone_eid}) | {"someone-else-1"}
    assert node.resources("allocated") == Resources(cpu_cores=0.5, ram_bytes=gib(0.5),
                                                    disk_bytes=gib(1))
    record: AllocationRecord = second.repo.get("dep-lost/gone")
    assert (record.status, record.holds_resources) == (A.TERMINATED, False)
    await until(lambda: lost_orch.statuses("gone")[-1:] == ["terminated"])
    # The re-adopted allocation reported from its new actor, with the new handle.
    await until(lambda: len(orch.reports) >= 2)
    report = orch.reports[-1]
    assert report.status == "running"
    assert report.handle is not None
    assert report.handle != handles["svc"]
    assert report.handle.address.inbox_address == "alloc/dep-rec/svc"
    stopped = decode(await orch.actor.invoke(report.handle, ALLOCATION_SHUTDOWN, b""),
                     AllocationReport)
    assert stopped.status == "stopped"
    assert node.resources("free") == node.resources("onboarded")
    assert {m.execution_id for m in await executor.list_managed()} == {"someone-else-1"}
    await executor.remove("someone-else-1")
