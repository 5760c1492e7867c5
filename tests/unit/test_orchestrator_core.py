"""The orchestration core without I/O: bids in, actions out, a clock passed in."""

from __future__ import annotations

import msgspec
import pytest

from nunet.actor.handle import ROOT_INBOX, Handle
from nunet.crypto.keys import KeyPair
from nunet.errors import IllegalTransition
from nunet.jobs.capability import Offer
from nunet.jobs.lifecycle import AllocationStatus, DeploymentStatus
from nunet.jobs.orchestration import (
    Action,
    DeploymentCore,
    FetchLogs,
    Finished,
    Probe,
    RequestBids,
    SendAllocate,
    SendCommit,
    SendRevert,
    StartAllocation,
    StopAllocation,
    Tuning,
    new_record,
)
from nunet.jobs.protocol import AllocationReport, Bid, Bids, CommitReply
from nunet.jobs.spec import Ensemble, parse_ensemble
from nunet.node.resources import GPU, Resources, gib

D = DeploymentStatus
A = AllocationStatus
T0 = 1_700_000_000.0
P = [KeyPair.from_seed(bytes([0x60 + i]) * 32) for i in range(4)]
ORCH = Handle.for_actor(KeyPair.from_seed(b"\x55" * 32).did, P[3].did, "dep1")
TUNING = Tuning(retry_s=2.0, probe_interval_s=5.0, max_misses=3, max_restarts=2)

ALLOC = ("{type: %s, executor: null, resources: {cpu: {cores: 1}, ram: {size: 1}, "
         "disk: {size: 1}%s}, execution: {type: null}, failure_recovery: %s%s}")


def alloc(kind: str = "task", *, gpus: int = 0, recovery: str = "stay_down",
          deps: tuple[str, ...] = ()) -> str:
    gpu = f", gpus: [{', '.join(['{}'] * gpus)}]" if gpus else ""
    dep = f", depends_on: [{', '.join(deps)}]" if deps else ""
    return ALLOC % (kind, gpu, recovery, dep)


def ensemble(allocations: dict[str, str], nodes: dict[str, str]) -> Ensemble:
    lines = ["version: V1", "allocations:"]
    lines += [f"  {name}: {spec}" for name, spec in allocations.items()]
    lines += ["nodes:"] + [f"  {name}: {spec}" for name, spec in nodes.items()]
    return parse_ensemble("\n".join(lines))


ONE = ensemble({"a1": alloc()}, {"n1": "{allocations: [a1]}"})


def make(ens: Ensemble = ONE, *, timeout: float = 60.0) -> DeploymentCore:
    return DeploymentCore(new_record("dep1", ens, T0, timeout), ens, ORCH, TUNING)


def root(key: KeyPair) -> Handle:
    return Handle.for_actor(key.did, key.did, ROOT_INBOX)


def bid(key: KeyPair, node: str = "n1", *, price: float = 1.0, gpus: int = 0,
        deployment: str = "dep1", expires: float = T0 + 60, sign_with: KeyPair | None = None,
        cores: float = 4) -> Bid:
    free = Resources(cpu_cores=cores, ram_bytes=gib(8), disk_bytes=gib(50),
                     gpus=tuple(GPU(i, "NVIDIA", "RTX", gib(8)) for i in range(gpus)))
    unsigned = Bid(deployment_id=deployment, node=node, provider=key.did, handle=root(key),
                   offer=Offer(peer=key.did, free=free, executors=("docker", "null"),
                               price=price),
                   expires_at=expires, nonce=b"n" * 16)
    return unsigned.sign(sign_with or key)


def one(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def only(actions: list[Action], kind: type) -> object:
    found = one(actions, kind)
    assert len(found) == 1, actions
    return found[0]


def report(core: DeploymentCore, name: str, status: str, **kw: object) -> AllocationReport:
    a = core.rec.allocations[name]
    return AllocationReport(deployment_id="dep1", allocation=name, node=a.node,
                            provider=a.provider, status=status, at=T0, **kw)  # type: ignore[arg-type]


def send(core: DeploymentCore, name: str, status: str, now: float = T0 + 3,
         **kw: object) -> list[Action]:
    a = core.rec.allocations[name]
    assert a.handle is not None
    return core.on_report(report(core, name, status, **kw), a.handle.did, None, now)


def place(core: DeploymentCore, providers: dict[str, KeyPair], now: float = T0 + 1,
          ) -> list[Action]:
    """Bids from `providers` (node -> key), every commit accepted, every node allocated."""
    rb = only(core.start(now) if core.rec.rounds == 0 else core.tick(now), RequestBids)
    assert isinstance(rb, RequestBids)
    replies = [(k.did, Bids((bid(k, node),))) for node, k in providers.items()]
    actions = core.on_bids(rb.round, replies, {}, now)
    return commit_and_allocate(core, actions, now)


def commit_and_allocate(core: DeploymentCore, actions: list[Action], now: float,
                        ) -> list[Action]:
    out: list[Action] = []
    commits = one(actions, SendCommit)
    assert commits, actions
    for c in commits:
        out = core.on_commit(c.node, c.provider, c.handle, CommitReply(ok=True), now)
    for alloc_action in one(out, SendAllocate):
        names = core.ensemble.nodes[alloc_action.node].allocations
        handles = {n: Handle.for_actor(KeyPair.from_seed(n.encode().ljust(32, b"-")).did,
                                       alloc_action.provider, f"alloc/{n}") for n in names}
        out += core.on_allocated(alloc_action.node, alloc_action.provider, handles, "", now)
    return out


# --- the happy path --------------------------------------------------------------------------


def test_task_runs_to_completed_on_the_best_bid() -> None:
    core = make()
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    assert list(rb.broadcast) == ["n1"]
    assert rb.direct == {}
    assert core.status is D.PREPARING
    expensive, cheap = bid(P[0], price=5.0), bid(P[1], price=1.0)
    actions = core.on_bids(rb.round, [(P[0].did, Bids((expensive,))),
                                      (P[1].did, Bids((cheap,)))], {}, T0 + 1)
    commit = only(actions, SendCommit)
    assert isinstance(commit, SendCommit)
    assert commit.provider == P[1].did
    assert commit.handle == root(P[1])
    assert commit.commit.resources.cpu_cores == 1.0
    assert commit.commit.expires_at == T0 + 1 + TUNING.commit_ttl_s
    assert core.status is D.COMMITTING
    assert core.rec.placements["n1"].bid == cheap  # the signed bid is the evidence
    started = commit_and_allocate(core, actions, T0 + 1)
    start = only(started, StartAllocation)
    assert isinstance(start, StartAllocation)
    assert start.allocation == "a1"
    assert core.status is D.PROVISIONING
    assert send(core, "a1", "running") == []
    assert core.status is D.RUNNING
    done = send(core, "a1", "completed", exit_code=0)
    assert core.status is D.COMPLETED
    assert one(done, Finished) == [Finished(D.COMPLETED)]
    assert one(done, FetchLogs)  # the log is kept once the allocation ended
    assert [c.status for c in core.rec.history] == [
        D.PREPARING, D.COMMITTING, D.PROVISIONING, D.RUNNING, D.COMPLETED]
    assert core.next_wakeup() is None


def test_a_report_may_skip_steps_but_never_go_back() -> None:
    core = make()
    place(core, {"n1": P[0]})
    send(core, "a1", "completed", exit_code=0)  # finished before "running" was sent
    assert core.rec.allocations["a1"].status is A.COMPLETED
    assert core.status is D.COMPLETED
    assert send(core, "a1", "running") == []  # late and impossible: ignored
    assert core.rec.allocations["a1"].status is A.COMPLETED
    assert core.counters["stale_reports"] == 1


def test_reports_from_strangers_are_ignored() -> None:
    core = make()
    place(core, {"n1": P[0]})
    fake = report(core, "a1", "failed", exit_code=1)
    assert core.on_report(fake, P[2].did, P[2].did, T0 + 2) == []  # not the allocation
    other = msgspec.structs.replace(fake, deployment_id="dep2")
    a1 = core.rec.allocations["a1"]
    assert a1.handle is not None
    assert core.on_report(other, a1.handle.did, None, T0 + 2) == []
    assert core.counters["bad_reports"] == 2
    assert a1.status is A.PENDING
    assert core.status is D.PROVISIONING


# --- bids ------------------------------------------------------------------------------------


def test_invalid_bids_are_never_chosen() -> None:
    core = make()
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    forged = bid(P[0], sign_with=P[1])
    stale = bid(P[1], expires=T0)
    elsewhere = bid(P[2], deployment="dep2")
    relayed = bid(P[0])
    actions = core.on_bids(rb.round, [
        (P[0].did, Bids((forged,))), (P[1].did, Bids((stale,))), (P[2].did, Bids((elsewhere,))),
        (P[3].did, Bids((relayed,))),  # P[0]'s valid bid, sent by someone else
    ], {}, T0 + 1)
    assert one(actions, SendCommit) == []
    assert core.counters["bad_bids"] == 4
    assert core.status is D.PREPARING
    assert "bad signature" in core.rec.reason
    assert "expired" in core.rec.reason


def test_bids_of_an_old_round_are_ignored() -> None:
    core = make()
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    assert core.on_bids(rb.round + 1, [(P[0].did, Bids((bid(P[0]),)))], {}, T0 + 1) == []
    assert core.counters["stale_bids"] == 1
    assert core.status is D.PREPARING


def test_pinned_nodes_are_asked_directly() -> None:
    ens = ensemble({"a1": alloc(), "a2": alloc()},
                   {"n1": f"{{allocations: [a1], peer: {P[2].did}}}", "n2": "{allocations: [a2]}"})
    core = make(ens)
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    assert list(rb.broadcast) == ["n2"]
    assert list(rb.direct) == [P[2].did]
    assert list(rb.direct[P[2].did]) == ["n1"]
    core.on_bids(rb.round, [(P[0].did, Bids((bid(P[0], "n2"),)))],
                 {P[2].did: "did not answer: peer unreachable"}, T0 + 1)
    assert core.status is D.PREPARING
    assert "n1: no provider offered: did not answer: peer unreachable" in core.rec.reason


# --- queueing --------------------------------------------------------------------------------


def test_no_fit_queues_with_the_reason_then_times_out() -> None:
    core = make(ensemble({"a1": alloc(gpus=2)}, {"n1": "{allocations: [a1]}"}), timeout=10)
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    assert core.on_bids(rb.round, [(P[0].did, Bids((bid(P[0]),))),
                                   (P[1].did, Bids((bid(P[1], gpus=1),)))], {}, T0 + 1) == []
    assert core.status is D.PREPARING
    assert "needs 2 GPUs" in core.rec.reason
    assert "n1" in core.rec.reason
    assert core.next_wakeup() == T0 + 1 + TUNING.retry_s
    assert core.tick(T0 + 2) == []  # not yet
    again = only(core.tick(T0 + 3), RequestBids)
    assert isinstance(again, RequestBids)
    assert again.round == rb.round + 1
    core.on_bids(again.round, [], {}, T0 + 4)
    assert "needs 2 GPUs" in core.rec.reason  # the first round's bids are valid until expiry
    end = core.tick(T0 + 10)
    assert core.status is D.FAILED
    assert end == [Finished(D.FAILED)]
    assert core.rec.reason.startswith("timed out after 10 s while Preparing")
    assert "needs 2 GPUs, has 1" in core.rec.reason
    assert core.rec.rounds == 2


def test_nobody_answering_is_said_so() -> None:
    core = make()
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    core.on_bids(rb.round, [], {}, T0 + 1)
    assert core.rec.reason == "waiting for providers: n1: no provider answered"


def test_providers_that_refuse_say_why() -> None:
    core = make()
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    no = Bids(refusals={"n1": "not onboarded"})
    core.on_bids(rb.round, [(P[0].did, no), (P[1].did, no)], {}, T0 + 1)
    assert core.rec.reason == ("waiting for providers: n1: no provider offered: "
                               "not onboarded (2 providers)")


# --- two-phase commit ------------------------------------------------------------------------


def test_a_refused_commit_reverts_the_others_and_retries_without_that_bid() -> None:
    ens = ensemble({"a1": alloc(), "a2": alloc()},
                   {"n1": "{allocations: [a1]}", "n2": "{allocations: [a2]}"})
    core = make(ens)
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    replies = [(k.did, Bids((bid(k, "n1", price=p), bid(k, "n2", price=p))))
               for k, p in ((P[0], 1.0), (P[1], 2.0), (P[2], 3.0))]
    commits = {c.node: c for c in one(core.on_bids(rb.round, replies, {}, T0 + 1), SendCommit)}
    assert {c.provider for c in commits.values()} == {P[0].did, P[1].did}
    ok_node = next(n for n, c in commits.items() if c.provider == P[0].did)
    bad_node = next(n for n, c in commits.items() if c.provider == P[1].did)
    assert core.on_commit(ok_node, P[0].did, root(P[0]), CommitReply(ok=True), T0 + 1) == []
    actions = core.on_commit(bad_node, P[1].did, root(P[1]),
                             CommitReply(ok=False, reason="resources taken"), T0 + 1)
    revert = only(actions, SendRevert)
    assert isinstance(revert, SendRevert)
    assert revert.node == ok_node
    assert revert.handle == root(P[0])
    assert "refused the commit: resources taken" in core.rec.history[-2].reason
    again = {c.node: c.provider for c in one(actions, SendCommit)}
    assert core.status is D.COMMITTING
    assert P[1].did not in core.pool[bad_node]
    assert again[bad_node] != P[1].did
    assert len(set(again.values())) == 2


def test_a_late_commit_after_shutdown_is_reverted() -> None:
    core = make()
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    commit = only(core.on_bids(rb.round, [(P[0].did, Bids((bid(P[0]),)))], {}, T0 + 1),
                  SendCommit)
    assert isinstance(commit, SendCommit)
    core.shutdown(T0 + 1)
    assert core.status is D.SHUTTING_DOWN
    actions = core.on_commit("n1", P[0].did, root(P[0]), CommitReply(ok=True), T0 + 2)
    assert one(actions, SendRevert)
    assert actions[-1] == Finished(D.COMPLETED)
    assert core.status is D.COMPLETED


def test_a_provider_that_cannot_allocate_is_replaced() -> None:
    core = make()
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    actions = core.on_bids(rb.round, [(P[0].did, Bids((bid(P[0], price=1),))),
                                      (P[1].did, Bids((bid(P[1], price=2),)))], {}, T0 + 1)
    out = core.on_commit("n1", P[0].did, root(P[0]), CommitReply(ok=True), T0 + 1)
    assert only(out, SendAllocate)
    out = core.on_allocated("n1", P[0].did, None, "image missing", T0 + 2)
    assert only(out, SendRevert)
    assert core.status is D.PREPARING
    assert "could not allocate: image missing" in core.rec.reason
    # The remaining bid is still in the pool; the next round picks the other provider.
    rb2 = only(out, RequestBids)
    assert isinstance(rb2, RequestBids)
    nxt = core.on_bids(rb2.round, [(P[1].did, Bids((bid(P[1]),)))], {}, T0 + 3)
    commit = only(nxt, SendCommit)
    assert isinstance(commit, SendCommit)
    assert commit.provider == P[1].did
    assert actions  # the first commit went to P[0]


# --- allocations ------------------------------------------------------------------------------


def test_depends_on_starts_in_order() -> None:
    ens = ensemble({"db": alloc("service"), "web": alloc("service", deps=("db",))},
                   {"n1": "{allocations: [db, web]}"})
    core = make(ens)
    started = place(core, {"n1": P[0]})
    assert [s.allocation for s in one(started, StartAllocation)] == ["db"]
    nxt = send(core, "db", "running")
    assert [s.allocation for s in one(nxt, StartAllocation)] == ["web"]
    assert core.status is D.PROVISIONING
    send(core, "web", "running")
    assert core.status is D.RUNNING


def test_a_failed_task_fails_the_deployment_with_its_reason() -> None:
    ens = ensemble({"a1": alloc(), "s1": alloc("service")}, {"n1": "{allocations: [a1, s1]}"})
    core = make(ens)
    place(core, {"n1": P[0]})
    send(core, "s1", "running")
    send(core, "a1", "running")
    actions = send(core, "a1", "failed", exit_code=2, reason="exit code 2: boom")
    assert core.status is D.FAILED
    assert core.rec.reason == "allocation a1 failed: exit code 2: boom"
    stop = only(actions, StopAllocation)
    assert isinstance(stop, StopAllocation)
    assert stop.allocation == "s1"
    assert actions[-1] == Finished(D.FAILED)


def test_one_for_one_restarts_then_gives_up() -> None:
    core = make(ensemble({"a1": alloc("service", recovery="one_for_one")},
                         {"n1": "{allocations: [a1]}"}))
    place(core, {"n1": P[0]})
    send(core, "a1", "running")
    for n in (1, 2):
        actions = send(core, "a1", "failed", exit_code=1)
        start = only(actions, StartAllocation)
        assert isinstance(start, StartAllocation)
        assert start.run == (1, n)
        assert core.rec.allocations["a1"].status is A.PENDING
        assert core.status is D.RUNNING
        assert f"restarting ({n}/2)" in core.rec.reason
        send(core, "a1", "running")
    send(core, "a1", "failed", exit_code=1)
    assert core.status is D.FAILED
    assert core.rec.reason == "allocation a1 failed with exit code 1 (after 2 restarts)"


def test_restart_policy_is_left_to_the_provider() -> None:
    core = make(ensemble({"a1": alloc("service", recovery="restart")},
                         {"n1": "{allocations: [a1]}"}))
    place(core, {"n1": P[0]})
    send(core, "a1", "running")
    for n in (1, 2):
        failed = send(core, "a1", "failed", exit_code=1)
        assert one(failed, StartAllocation) == []  # the provider starts it again
        assert core.rec.allocations["a1"].status is A.FAILED
        assert f"its provider restarts it ({n}/2)" in core.rec.reason
        assert send(core, "a1", "pending", reason=f"restart {n}") == []
        assert core.rec.allocations["a1"].status is A.PENDING
        send(core, "a1", "running")
        assert core.status is D.RUNNING
    send(core, "a1", "failed", exit_code=1)
    assert core.status is D.FAILED


def test_one_for_all_stops_the_others_before_starting_again() -> None:
    ens = ensemble({"a1": alloc("service", recovery="one_for_all"), "a2": alloc("service")},
                   {"n1": "{allocations: [a1, a2]}"})
    core = make(ens)
    place(core, {"n1": P[0]})
    send(core, "a1", "running")
    send(core, "a2", "running")
    actions = send(core, "a1", "failed", exit_code=1)
    assert [s.allocation for s in one(actions, StartAllocation)] == ["a1"]
    stop = only(actions, StopAllocation)
    assert isinstance(stop, StopAllocation)
    assert stop.allocation == "a2"
    restarted = core.on_stop_result("a2", stop.run, None, False, T0 + 4)
    assert [s.allocation for s in one(restarted, StartAllocation)] == ["a2"]
    assert core.rec.allocations["a2"].status is A.PENDING


def test_start_refused_counts_as_a_failure() -> None:
    core = make()
    start = only(place(core, {"n1": P[0]}), StartAllocation)
    assert isinstance(start, StartAllocation)
    core.on_start_result("a1", start.run, "image not found", T0 + 2)
    assert core.status is D.FAILED
    assert "could not start: image not found" in core.rec.reason


# --- lost providers ---------------------------------------------------------------------------


def probes(core: DeploymentCore, now: float) -> list[Probe]:
    return one(core.tick(now), Probe)


def test_a_lost_provider_is_redeployed_elsewhere() -> None:
    core = make(ensemble({"a1": alloc("service")}, {"n1": "{allocations: [a1], "
                                                          "failure_recovery: redeploy}"}))
    place(core, {"n1": P[0]})
    send(core, "a1", "running")
    assert core.status is D.RUNNING
    now = T0 + 10
    for _miss in range(3):
        (probe,) = probes(core, now)
        assert probe.provider == P[0].did
        actions = core.on_probe("n1", P[0].did, "missed", None, now)
        now += TUNING.probe_interval_s
    assert core.status is D.PREPARING
    assert core.rec.excluded == (P[0].did,)
    assert "stopped answering (3 liveness checks missed)" in core.rec.reason
    rb = only(actions, RequestBids)
    assert isinstance(rb, RequestBids)
    assert P[0].did in rb.broadcast["n1"].exclude_peers
    assert core.rec.allocations["a1"].attempt == 2
    assert core.rec.history[-2].status is D.RUNNING
    # The lost provider's bid is refused; the other one is taken.
    out = core.on_bids(rb.round, [(P[0].did, Bids((bid(P[0], expires=now + 60),))),
                                  (P[1].did, Bids((bid(P[1], expires=now + 60),)))], {}, now)
    commit = only(out, SendCommit)
    assert isinstance(commit, SendCommit)
    assert commit.provider == P[1].did
    started = commit_and_allocate(core, out, now)
    assert only(started, StartAllocation)
    send(core, "a1", "running", now=now)
    assert core.status is D.RUNNING


def test_a_replaced_provider_that_comes_back_is_told_to_stop() -> None:
    core = make(ensemble({"a1": alloc("service")}, {"n1": "{allocations: [a1], "
                                                          "failure_recovery: redeploy}"}))
    place(core, {"n1": P[0]})
    send(core, "a1", "running")
    for now in (T0 + 10, T0 + 15, T0 + 20):
        probes(core, now)
        core.on_probe("n1", P[0].did, "missed", None, now)
    assert core.rec.excluded == (P[0].did,)
    # P[0] restarts, re-adopts its container and reports from a new actor.
    readopted = Handle.for_actor(KeyPair.from_seed(b"\x77" * 32).did, P[0].did, "alloc/a1")
    back = AllocationReport(deployment_id="dep1", allocation="a1", node="n1",
                            provider=P[0].did, status="running", at=T0, handle=readopted)
    assert core.on_report(back, readopted.did, P[2].did, T0 + 30) == []  # not from P[0]
    stop = only(core.on_report(back, readopted.did, P[0].did, T0 + 30), StopAllocation)
    assert isinstance(stop, StopAllocation)
    assert stop.handle == readopted
    assert core.rec.allocations["a1"].status is A.PENDING  # the new placement is untouched


def test_a_lost_provider_fails_a_stay_down_deployment() -> None:
    core = make(ensemble({"a1": alloc("service")}, {"n1": "{allocations: [a1]}"}))
    place(core, {"n1": P[0]})
    send(core, "a1", "running")
    for now in (T0 + 10, T0 + 15):
        probes(core, now)
        core.on_probe("n1", P[0].did, "missed", None, now)
    probes(core, T0 + 20)
    assert core.on_probe("n1", P[0].did, "ok", None, T0 + 20) == []  # an answer resets
    assert core.rec.placements["n1"].misses == 0
    for now in (T0 + 25, T0 + 30, T0 + 35):
        probes(core, now)
        core.on_probe("n1", P[0].did, "gone", None, now)
    assert core.status is D.FAILED
    assert "stopped answering (its allocations are gone)" in core.rec.reason
    assert core.rec.allocations["a1"].status is A.TERMINATED


def test_a_probe_answer_catches_up_on_a_missed_report() -> None:
    core = make(ensemble({"a1": alloc("service")}, {"n1": "{allocations: [a1]}"}))
    place(core, {"n1": P[0]})
    (_probe,) = probes(core, T0 + 10)
    core.on_probe("n1", P[0].did, "ok", report(core, "a1", "running"), T0 + 10)
    assert core.status is D.RUNNING


# --- shutdown, illegal moves, resume ----------------------------------------------------------


def test_shutdown_stops_everything_then_completes() -> None:
    ens = ensemble({"a1": alloc("service"), "a2": alloc("service")},
                   {"n1": "{allocations: [a1]}", "n2": "{allocations: [a2]}"})
    core = make(ens)
    place(core, {"n1": P[0], "n2": P[1]})
    send(core, "a1", "running")
    send(core, "a2", "running")
    stops = one(core.shutdown(T0 + 5), StopAllocation)
    assert sorted(s.allocation for s in stops) == ["a1", "a2"]
    assert core.status is D.SHUTTING_DOWN
    assert core.on_stop_result("a1", stops[0].run, None, False, T0 + 6) == [FetchLogs(
        "a1", stops[0].handle)]
    done = send(core, "a2", "stopped")
    assert core.status is D.COMPLETED
    assert done[-1] == Finished(D.COMPLETED)
    assert core.rec.reason == "shut down"
    with pytest.raises(IllegalTransition) as info:
        core.shutdown(T0 + 7)
    assert info.value.state == "Completed"
    assert info.value.event == "shutdown"


def test_shutdown_gives_up_on_silent_allocations() -> None:
    core = make(ensemble({"a1": alloc("service")}, {"n1": "{allocations: [a1]}"}))
    place(core, {"n1": P[0]})
    core.shutdown(T0 + 5)
    wake = core.next_wakeup()
    assert wake is not None
    assert wake <= T0 + 5 + TUNING.shutdown_grace_s
    core.tick(T0 + 6)
    assert core.status is D.SHUTTING_DOWN  # still waiting for the stop
    core.tick(T0 + 5 + TUNING.shutdown_grace_s)
    assert core.status is D.COMPLETED
    assert core.rec.allocations["a1"].status is A.TERMINATED
    assert core.rec.reason == "1 allocations did not confirm the shutdown"


def test_shutdown_while_preparing_completes_at_once() -> None:
    core = make()
    core.start(T0)
    assert core.shutdown(T0 + 1) == [Finished(D.COMPLETED)]
    assert core.rec.allocations["a1"].status is A.STOPPED


def test_resume_redoes_an_interrupted_commit() -> None:
    core = make()
    rb = only(core.start(T0), RequestBids)
    assert isinstance(rb, RequestBids)
    core.on_bids(rb.round, [(P[0].did, Bids((bid(P[0]),)))], {}, T0 + 1)
    assert core.status is D.COMMITTING
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(core.rec), type=type(core.rec))
    again = DeploymentCore(stored, ONE, ORCH, TUNING)
    actions = again.start(T0 + 2)
    revert = only(actions, SendRevert)
    assert isinstance(revert, SendRevert)
    assert revert.handle == root(P[0])
    assert again.status is D.PREPARING
    assert again.rec.to_place == ("n1",)
    assert only(actions, RequestBids)


def test_resume_after_the_deadline_fails_with_the_reason() -> None:
    core = make(timeout=10)
    core.start(T0)
    again = DeploymentCore(core.rec, ONE, ORCH, TUNING)
    assert again.start(T0 + 30)[-1] == Finished(D.FAILED)
    assert again.rec.reason.startswith("timed out after 10 s while Preparing")


def test_resume_of_a_running_deployment_checks_its_allocations_at_once() -> None:
    core = make(ensemble({"a1": alloc("service")}, {"n1": "{allocations: [a1]}"}))
    place(core, {"n1": P[0]})
    send(core, "a1", "running")
    again = DeploymentCore(core.rec, core.ensemble, ORCH, TUNING)
    probe = only(again.start(T0 + 100), Probe)
    assert isinstance(probe, Probe)
    assert probe.provider == P[0].did
    assert again.status is D.RUNNING


def test_illegal_lifecycle_moves_are_refused_by_the_tables() -> None:
    core = make()
    core.start(T0)
    core.tick(T0 + 100)
    assert core.status is D.FAILED
    with pytest.raises(IllegalTransition):
        core.shutdown(T0 + 101)
    assert core.tick(T0 + 102) == []
    assert core.next_wakeup() is None
