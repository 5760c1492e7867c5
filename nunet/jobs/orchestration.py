"""The orchestration of one deployment as a sans-I/O state machine (`DeploymentCore`).

The adapter (`nunet/jobs/orchestrator.py`) feeds it what happened (bids, commit replies,
allocated handles, allocation reports, liveness checks, the clock) and carries out the actions it
returns (`RequestBids`, `SendCommit`, ...); the core never waits, never reads a clock, never
touches the network. Every deployment status change goes through `advance_deployment`, every
allocation status change through `advance_allocation`.

The flow: Preparing (ask for bids; when no assignment exists, wait `retry_s` and ask again until
the deadline, keeping *why* in `reason`) -> Committing (commit each chosen provider; one refusal
reverts the others, drops that bid and goes back to Preparing) -> Provisioning (allocate, then
start each allocation once its `depends_on` are ready: a service running, a task completed) ->
Running -> Completed (every allocation completed), or Failed with the reason.

Recovery:
- An allocation that fails is restarted in place when its `failure_recovery` says so
  (`restart`/`one_for_one`: itself; `one_for_all`: every allocation of its node;
  `rest_for_one`: itself and the allocations of its node that depend on it), or when its node's
  policy is `restart` (as `one_for_all`), at most `max_restarts` times; then the ensemble's
  `escalation_strategy: redeploy` (or the node's `redeploy`) moves the node to another provider,
  else the deployment fails. A node whose policy is `redeploy` is moved at once.
- A provider whose allocations stop answering `max_misses` liveness checks in a row (or answer
  that they do not exist) is lost: its allocations are terminated and, when the node's policy is
  `redeploy` or `restart` (a restart in place is impossible without the provider), the node is
  placed again with that provider excluded; otherwise the deployment fails.

The orchestrator owns these decisions, except `failure_recovery: restart`, which the provider
carries out in place (reporting failed, then pending again); every other restart is an
ALLOCATION_START the orchestrator sends after a failure.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from nunet.actor.handle import Handle
from nunet.errors import NunetError
from nunet.jobs.capability import Offer, Requirement, Unassignable, assign, claim, requirement
from nunet.jobs.lifecycle import (
    ALLOCATION_ENDED,
    ALLOCATION_FINAL,
    ALLOCATION_TRANSITIONS,
    DEPLOYMENT_FINAL,
    AllocationStatus,
    DeploymentStatus,
    advance_allocation,
    advance_deployment,
)
from nunet.jobs.protocol import (
    Allocate,
    AllocationReport,
    Bid,
    Bids,
    Commit,
    CommitReply,
    Revert,
)
from nunet.jobs.records import (
    MAX_HISTORY,
    AllocationState,
    Change,
    DeploymentRecord,
    Placement,
)
from nunet.jobs.spec import Ensemble

D = DeploymentStatus
A = AllocationStatus

RESTART_POLICIES = frozenset({"restart", "one_for_one", "one_for_all", "rest_for_one"})
MAX_BIDS_PER_REPLY = 256  # a provider answers one bid per node; more is noise
MAX_REASON = 300  # characters of a peer-supplied reason kept


class Tuning(msgspec.Struct, frozen=True, kw_only=True):
    bid_window_s: float = 1.0  # how long a broadcast bid request collects bids
    retry_s: float = 2.0  # wait between bid rounds while no assignment exists
    commit_ttl_s: float = 30.0  # a commit's reservation lapses unless allocated by then
    call_timeout_s: float = 10.0  # commit, revert, probe
    allocate_timeout_s: float = 60.0
    start_timeout_s: float = 300.0  # a start may pull an image first
    stop_timeout_s: float = 90.0  # a provider answers once the container is gone
    probe_interval_s: float = 5.0  # liveness checks of each provider's allocations
    max_misses: int = 3
    max_restarts: int = 3
    shutdown_grace_s: float = 60.0  # then unconfirmed allocations are marked terminated


# --- actions -------------------------------------------------------------------------------------


class RequestBids(msgspec.Struct, frozen=True, kw_only=True):
    """Publish a bid request for `broadcast` (any provider) and invoke each pinned provider of
    `direct` on its root actor; feed every answer back with `on_bids(round, ...)`."""

    round: int
    broadcast: dict[str, Requirement]
    direct: dict[str, dict[str, Requirement]]  # provider DID -> its pinned nodes
    expires_at: float


class SendCommit(msgspec.Struct, frozen=True):
    node: str
    provider: str
    handle: Handle
    commit: Commit


class SendRevert(msgspec.Struct, frozen=True):
    node: str
    handle: Handle
    revert: Revert


class SendAllocate(msgspec.Struct, frozen=True):
    node: str
    provider: str
    handle: Handle
    allocate: Allocate


class StartAllocation(msgspec.Struct, frozen=True):
    allocation: str
    handle: Handle
    run: tuple[int, int]  # (attempt, restarts): answers for an older run are ignored


class StopAllocation(msgspec.Struct, frozen=True):
    allocation: str
    handle: Handle
    run: tuple[int, int]


class Probe(msgspec.Struct, frozen=True):
    """A liveness check: ALLOCATION_INFO on one allocation of the node's provider."""

    node: str
    provider: str
    handle: Handle


class FetchLogs(msgspec.Struct, frozen=True):
    """An allocation ended: keep its log here."""

    allocation: str
    handle: Handle


class Finished(msgspec.Struct, frozen=True):
    status: DeploymentStatus


Action = (
    RequestBids | SendCommit | SendRevert | SendAllocate | StartAllocation | StopAllocation
    | Probe | FetchLogs | Finished
)


def new_record(deployment_id: str, ensemble: Ensemble, now: float,
               timeout: float) -> DeploymentRecord:
    return DeploymentRecord(
        id=deployment_id, ensemble=ensemble.to_json(), created_at=now, updated_at=now,
        timeout=timeout, deadline=now + timeout, to_place=tuple(ensemble.nodes),
        allocations={
            name: AllocationState(name=name, node=ensemble.node_of(name), type=spec.type,
                                  updated_at=now)
            for name, spec in ensemble.allocations.items()
        },
        history=[Change(now, D.PREPARING)],
    )


class DeploymentCore:
    def __init__(self, record: DeploymentRecord, ensemble: Ensemble, orchestrator: Handle,
                 tuning: Tuning | None = None) -> None:
        self.rec = record
        self.ensemble = ensemble
        self.me = orchestrator
        self.tuning = tuning or Tuning()
        self.pool: dict[str, dict[str, Bid]] = {}  # node -> provider -> its latest valid bid
        self.refusals: dict[str, dict[str, str]] = {}  # node -> provider -> why not (this round)
        self.batch: tuple[str, ...] = ()  # nodes of the commit in progress
        self.bidding = False
        self.next_round_at: float | None = None
        self.next_probe_at: float | None = None
        self.probing: set[str] = set()
        self.shutdown_by: float | None = None
        self.qos: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self.version = 0  # bumped by every change of the record: the adapter saves then

    @property
    def status(self) -> DeploymentStatus:
        return self.rec.status

    @property
    def final(self) -> bool:
        return self.rec.status in DEPLOYMENT_FINAL

    # --- inputs --------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Begin, or resume after a restart of the node: what was in flight when the node went
        down is reverted and redone; allocations are checked at once."""
        rec = self.rec
        if self.final:
            return [Finished(rec.status)]
        actions: list[Action] = []
        unfinished = [n for n, p in rec.placements.items() if not p.allocated]
        for node in unfinished:  # commits (or allocations) whose answer was lost
            p = rec.placements.pop(node)
            actions.append(SendRevert(node, p.handle, Revert(deployment_id=rec.id, node=node)))
            if rec.status is not D.SHUTTING_DOWN:
                rec.to_place = (*rec.to_place, node)
        if rec.status is D.COMMITTING:
            self._advance("commit_failed", now, "resumed after a restart: commits redone")
        if rec.status is D.SHUTTING_DOWN:
            self.shutdown_by = now + self.tuning.shutdown_grace_s
            actions += self._stop_live()
        self.next_probe_at = now
        self._touch(now)
        return actions + self.tick(now)

    def tick(self, now: float) -> list[Action]:
        """Timers: the deadline, the next bid round, liveness checks, the shutdown grace."""
        rec = self.rec
        if self.final:
            return []
        if rec.status in (D.PREPARING, D.COMMITTING, D.PROVISIONING) and now >= rec.deadline:
            why = f"timed out after {rec.timeout:g} s while {rec.status.value}"
            detail = rec.reason or self._not_running()
            return self._fail("timeout", f"{why}: {detail}" if detail else why, now)
        if rec.status is D.SHUTTING_DOWN and self.shutdown_by is not None \
                and now >= self.shutdown_by:
            for a in rec.allocations.values():
                if a.handle is not None and a.status not in ALLOCATION_ENDED:
                    self._set(a, "terminate", now, "did not confirm the shutdown")
        actions = self._settle(now)
        if rec.status is D.PREPARING and not self.bidding and self.next_round_at is not None \
                and now >= self.next_round_at:
            actions += self._request_bids(now)
        if not self.final and (self.next_probe_at is None or now >= self.next_probe_at):
            self.next_probe_at = now + self.tuning.probe_interval_s
            actions += self._probes()
        return actions

    def next_wakeup(self) -> float | None:
        if self.final:
            return None
        times = [t for t in (self.next_probe_at, self.shutdown_by) if t is not None]
        if self.rec.status in (D.PREPARING, D.COMMITTING, D.PROVISIONING):
            times.append(self.rec.deadline)
        if self.rec.status is D.PREPARING and not self.bidding and self.next_round_at is not None:
            times.append(self.next_round_at)
        return min(times, default=None)

    def on_bids(self, round_: int, replies: Sequence[tuple[str, Bids]],
                failures: Mapping[str, str], now: float,
                qos: Mapping[str, float] | None = None) -> list[Action]:
        """The answers to bid round `round_`: (replier DID, its Bids) pairs, and the pinned
        providers whose call failed (DID -> why: "refused (code): ..." or "did not answer:
        ...", worded by the adapter, which knows which). Each bid is checked (signature,
        deployment, node, provider, expiry) before it may be chosen."""
        rec = self.rec
        if round_ != rec.rounds or rec.status is not D.PREPARING or not self.bidding:
            self.counters["stale_bids"] += 1
            return []
        self.bidding = False
        self.refusals = {}
        for replier, answer in replies:
            for node, why in list(answer.refusals.items())[:MAX_BIDS_PER_REPLY]:
                if node in rec.to_place:
                    self.refusals.setdefault(node, {})[replier] = why[:MAX_REASON]
            for bid in answer.bids[:MAX_BIDS_PER_REPLY]:
                bad = self._check_bid(replier, bid, now)
                if bad is None:
                    self.pool.setdefault(bid.node, {})[bid.provider] = bid
                else:
                    self.counters["bad_bids"] += 1
                    if bid.node in rec.to_place:
                        self.refusals.setdefault(bid.node, {})[replier] = f"invalid bid: {bad}"
        for peer, why in failures.items():
            for node in rec.to_place:
                if self.ensemble.nodes[node].peer == peer:
                    self.refusals.setdefault(node, {})[peer] = why[:MAX_REASON]
        if qos is not None:
            self.qos = dict(qos)
        return self._try_assign(now)

    def on_commit(self, node: str, provider: str, handle: Handle, reply: CommitReply,
                  now: float) -> list[Action]:
        rec = self.rec
        p = rec.placements.get(node)
        revert = SendRevert(node, handle, Revert(deployment_id=rec.id, node=node))
        if p is None or p.provider != provider or p.commit != "pending":
            self.counters["stale_commits"] += 1
            return [revert] if reply.ok else []
        if rec.status is not D.COMMITTING or node not in self.batch:
            # Shut down or failed meanwhile: give the reservation back.
            p.commit = "reverted" if reply.ok else "refused"
            return ([revert] if reply.ok else []) + self._settle(now)
        if reply.ok:
            p.commit, p.ports = "ok", reply.ports
        else:
            p.commit = "refused"
            self.refusals.setdefault(node, {})[provider] = (reply.reason or "refused")[:MAX_REASON]
        if any(rec.placements[n].commit == "pending" for n in self.batch):
            self._touch(now)
            return []
        batch, self.batch = self.batch, ()
        actions: list[Action] = []
        if all(rec.placements[n].commit == "ok" for n in batch):
            self._advance("committed", now, "")
            for n in batch:
                placed = rec.placements[n]
                placed.allocating = True
                actions.append(SendAllocate(n, placed.provider, placed.handle, Allocate(
                    deployment_id=rec.id, node=n, ensemble=rec.ensemble, orchestrator=self.me,
                    ports=placed.ports)))
            return actions + self._settle(now)
        reasons = []
        for n in batch:
            placed = rec.placements.pop(n)
            if placed.commit == "ok":
                actions.append(SendRevert(n, placed.handle,
                                          Revert(deployment_id=rec.id, node=n)))
            else:
                self.pool.get(n, {}).pop(placed.provider, None)
                why = self.refusals.get(n, {}).get(placed.provider, "refused")
                reasons.append(f"{n}: provider {short(placed.provider)} refused the commit: {why}")
            rec.to_place = (*rec.to_place, n)
        self._advance("commit_failed", now, "; ".join(reasons))
        return actions + self._try_assign(now)

    def on_allocated(self, node: str, provider: str, handles: Mapping[str, Handle] | None,
                     error: str, now: float) -> list[Action]:
        rec = self.rec
        p = rec.placements.get(node)
        expected = set(self.ensemble.nodes[node].allocations) if node in self.ensemble.nodes \
            else set()
        if handles is not None and set(handles) != expected:
            error = (f"answered allocations {', '.join(sorted(handles)) or 'none'}, expected "
                     f"{', '.join(sorted(expected))}")
        current = p is not None and p.provider == provider and p.allocating
        if not current:
            self.counters["stale_allocations"] += 1
            return [StopAllocation(name, h, (0, 0)) for name, h in (handles or {}).items()]
        assert p is not None
        p.allocating = False
        if error:
            rec.placements.pop(node)
            actions: list[Action] = [
                SendRevert(node, p.handle, Revert(deployment_id=rec.id, node=node)),
                *(StopAllocation(name, h, (0, 0)) for name, h in (handles or {}).items()),
            ]
            if rec.status is D.SHUTTING_DOWN or self.final:
                return actions + self._settle(now)
            self.pool.get(node, {}).pop(provider, None)
            rec.to_place = (*rec.to_place, node)
            rec.reason = f"{node}: provider {short(provider)} could not allocate: {error}"[
                :2 * MAX_REASON]
            return actions + self._settle(now)
        assert handles is not None
        p.allocated = True
        for name, handle in handles.items():
            a = rec.allocations[name]
            a.handle, a.provider, a.updated_at = handle, provider, now
        if rec.status is D.SHUTTING_DOWN or self.final:
            return self._stop_live() + self._settle(now)
        self._touch(now)
        return self._settle(now)

    def on_report(self, report: AllocationReport, sender: str, session: str | None,
                  now: float) -> list[Action]:
        """An allocation's status change (ALLOCATION_STATUS). Taken only from that allocation's
        actor or its provider's session, for this deployment."""
        a = self.rec.allocations.get(report.allocation)
        if (report.deployment_id == self.rec.id and report.provider in self.rec.excluded
                and session == report.provider and report.handle is not None
                and report.handle.address.host_id == report.provider
                and report.status not in ALLOCATION_ENDED):
            # A provider we replaced came back with the allocation still running (it re-adopts
            # its containers on start): that copy is stopped, never left behind.
            self.counters["stale_allocations"] += 1
            return [StopAllocation(report.allocation, report.handle, (0, 0))]
        if (report.deployment_id != self.rec.id or a is None or a.handle is None
                or report.provider != a.provider or report.node != a.node
                or (sender != a.handle.did and session != a.provider)):
            self.counters["bad_reports"] += 1
            return []
        if report.handle is not None and session == a.provider \
                and report.handle.address.host_id == a.provider:
            a.handle = report.handle  # re-adopted by a restarted provider: a new actor
        return self._report(a, report, now)

    def on_start_result(self, allocation: str, run: tuple[int, int], error: str | None,
                        now: float) -> list[Action]:
        a = self.rec.allocations.get(allocation)
        if a is None or (a.attempt, a.restarts) != run:
            return []
        if error is None or a.status is not A.PENDING:
            return []
        assert a.handle is not None
        # It may still hold resources on its provider: ask it to stop as well.
        stop = StopAllocation(a.name, a.handle, run)
        return [stop, *self._observe(a, A.FAILED, None, f"could not start: {error}", now)]

    def on_stop_result(self, allocation: str, run: tuple[int, int], error: str | None,
                       gone: bool, now: float) -> list[Action]:
        a = self.rec.allocations.get(allocation)
        if a is None or (a.attempt, a.restarts) != run or a.status in ALLOCATION_ENDED:
            return self._settle(now)
        if gone:
            return self._observe(a, A.TERMINATED, a.exit_code, "gone from its provider", now)
        if error is not None:
            self.counters["stop_errors"] += 1
            return self._settle(now)
        return self._observe(a, A.STOPPED, a.exit_code, a.reason or "stopped", now)

    def on_probe(self, node: str, provider: str, outcome: str,
                 report: AllocationReport | None, now: float) -> list[Action]:
        """`outcome`: "ok" (with the allocation's current report when it sent one), "missed"
        (no answer) or "gone" (its provider does not know it)."""
        self.probing.discard(node)
        p = self.rec.placements.get(node)
        if p is None or p.provider != provider or not p.allocated:
            return []
        if outcome == "ok":
            p.misses = 0
            a = None if report is None else self.rec.allocations.get(report.allocation)
            if a is not None and report is not None and report.deployment_id == self.rec.id \
                    and a.node == node and a.provider == provider:
                return self._report(a, report, now)
            return []
        p.misses += 1
        self._touch(now)
        if p.misses < self.tuning.max_misses:
            return []
        why = (f"{p.misses} liveness checks missed" if outcome == "missed"
               else "its allocations are gone")
        return self._lost(node, why, now)

    def shutdown(self, now: float) -> list[Action]:
        """Stop everything (IllegalTransition when already Completed or Failed)."""
        self._advance("shutdown", now, "shutting down")
        self.shutdown_by = now + self.tuning.shutdown_grace_s
        self.bidding, self.next_round_at, self.batch = False, None, ()
        return self._stop_live() + self._settle(now)

    # --- bidding and assignment ----------------------------------------------------------------

    def _request_bids(self, now: float) -> list[Action]:
        rec = self.rec
        rec.rounds += 1
        self.bidding, self.next_round_at = True, None
        banned = self._banned()
        broadcast: dict[str, Requirement] = {}
        direct: dict[str, dict[str, Requirement]] = {}
        for node in rec.to_place:
            req = requirement(self.ensemble, node)
            req = msgspec.structs.replace(req, exclude_peers=req.exclude_peers | banned)
            if req.peer is not None:
                direct.setdefault(req.peer, {})[node] = req
            else:
                broadcast[node] = req
        self._touch(now)
        window = self.tuning.bid_window_s
        return [RequestBids(round=rec.rounds, broadcast=broadcast, direct=direct,
                            expires_at=now + window + self.tuning.call_timeout_s)]

    def _banned(self) -> frozenset[str]:
        """Providers the nodes to place may not use: lost ones, and those running other nodes
        (every node of an ensemble runs on a different provider)."""
        rec = self.rec
        used = {p.provider for n, p in rec.placements.items() if n not in rec.to_place}
        return frozenset(rec.excluded) | used

    def _check_bid(self, replier: str, bid: Bid, now: float) -> str | None:
        rec = self.rec
        if bid.deployment_id != rec.id:
            return "for another deployment"
        if bid.node not in rec.to_place:
            return f"for node {bid.node!r}, which is not asked for"
        if bid.provider != replier:
            return f"signed by {short(bid.provider)}, sent by {short(replier)}"
        if bid.offer.peer != bid.provider or bid.handle.did != bid.provider \
                or bid.handle.address.host_id != bid.provider:
            return "its offer or handle names another provider"
        if bid.expires_at <= now:
            return "expired"
        if bid.provider in rec.excluded:
            return "from a provider lost earlier in this deployment"
        try:
            bid.verify()
        except NunetError as exc:
            return f"bad signature: {exc}"
        return None

    def _try_assign(self, now: float) -> list[Action]:
        rec = self.rec
        nodes = list(rec.to_place)
        if rec.status is not D.PREPARING or not nodes:
            return self._settle(now)
        banned = self._banned()
        candidates: dict[str, Bid] = {}  # provider -> one of its bids (for its offer)
        for node in nodes:
            bids = self.pool.setdefault(node, {})
            for provider, bid in list(bids.items()):
                if bid.expires_at <= now or provider in banned:
                    del bids[provider]
                else:
                    candidates.setdefault(provider, bid)
        sub = msgspec.structs.replace(
            self.ensemble,
            nodes={n: self.ensemble.nodes[n] for n in nodes},
            edges=tuple(e for e in self.ensemble.edges if e.s in nodes and e.t in nodes),
            exclude_peers=tuple(sorted(set(self.ensemble.exclude_peers) | banned)),
        )
        while True:
            result = assign(sub, {p: self._offer(b) for p, b in candidates.items()})
            if isinstance(result, Unassignable):
                return self._queue(result, now)
            # assign() looks at a provider's offer, not at which nodes it bid for.
            lacking = {p for n, p in result.nodes.items() if p not in self.pool[n]}
            if not lacking:
                break
            for p in lacking:
                candidates.pop(p)
        actions: list[Action] = []
        for node, provider in sorted(result.nodes.items()):
            bid = self.pool[node][provider]
            req = requirement(self.ensemble, node)
            resources = claim(req, bid.offer)
            rec.placements[node] = Placement(provider=provider, handle=bid.handle, bid=bid)
            # Every port of the node in order, 0 where the provider picks one.
            ports = tuple(p.public for p in self.ensemble.nodes[node].ports)
            actions.append(SendCommit(node, provider, bid.handle, Commit(
                deployment_id=rec.id, node=node, resources=resources, ports=ports,
                expires_at=now + self.tuning.commit_ttl_s)))
        self.batch = tuple(sorted(result.nodes))
        rec.to_place = ()
        self._advance("bids_selected", now, "")
        return actions

    def _offer(self, bid: Bid) -> Offer:
        score = self.qos.get(bid.provider)
        offer = bid.offer
        return offer if score is None else msgspec.structs.replace(offer, qos_score=score)

    def _queue(self, result: Unassignable, now: float) -> list[Action]:
        reasons = [self._why(node, why) for node, why in sorted(result.reasons.items())]
        self.rec.reason = ("waiting for providers: " + "; ".join(reasons))[:4 * MAX_REASON]
        self.next_round_at = now + self.tuning.retry_s
        self._touch(now)
        return []

    def _why(self, node: str, why: str) -> str:
        if not node:
            return why
        refused = self.refusals.get(node, {})
        if refused and not self.pool.get(node):
            counts = Counter(refused.values())
            parts = [f"{w} ({n} provider{'s' * (n != 1)})" for w, n in counts.most_common(3)]
            return f"{node}: no provider offered: " + "; ".join(parts)
        return f"{node}: {why}"

    # --- allocations ---------------------------------------------------------------------------

    def _report(self, a: AllocationState, report: AllocationReport, now: float) -> list[Action]:
        try:
            target = AllocationStatus(report.status)
        except ValueError:
            self.counters["bad_reports"] += 1
            return []
        return self._observe(a, target, report.exit_code, report.reason[:2 * MAX_REASON], now)

    def _observe(self, a: AllocationState, target: AllocationStatus, exit_code: int | None,
                 reason: str, now: float) -> list[Action]:
        if target is a.status:
            return []
        spec = self.ensemble.allocations[a.name]
        path = _path(a.status, target, provider_restarts=spec.failure_recovery == "restart")
        if path is None:
            self.counters["stale_reports"] += 1
            return []
        for event in path:
            self._set(a, event, now, reason)
        if "restart" in path:  # the provider restarted it and starts it again itself
            a.started = True
        a.exit_code = exit_code
        actions: list[Action] = []
        if target in ALLOCATION_ENDED and a.handle is not None:
            actions.append(FetchLogs(a.name, a.handle))
        if a.restart_pending and target in (A.STOPPED, A.FAILED):
            self._set(a, "restart", now, "")
            a.restart_pending = False
        elif target is A.FAILED and self.rec.status in (D.PREPARING, D.COMMITTING,
                                                          D.PROVISIONING, D.RUNNING):
            actions += self._recover(a, now)
        return actions + self._settle(now)

    def _set(self, a: AllocationState, event: str, now: float, reason: str) -> None:
        a.status = advance_allocation(a.status, event)
        if event == "restart":
            a.started, a.exit_code = False, None
        a.reason, a.updated_at = reason, now
        self._touch(now)

    def _recover(self, a: AllocationState, now: float) -> list[Action]:
        spec = self.ensemble.allocations[a.name]
        node = self.ensemble.nodes[a.node]
        what = f"allocation {a.name} failed"
        if a.reason:
            what += f": {a.reason}"
        elif a.exit_code is not None:
            what += f" with exit code {a.exit_code}"
        policy = spec.failure_recovery
        if policy == "stay_down" and node.failure_recovery == "restart":
            policy = "one_for_all"
        if policy in RESTART_POLICIES:
            if a.restarts < self.tuning.max_restarts:
                if policy == "restart" and spec.failure_recovery == "restart":
                    # The provider restarts these in place (as many times): count, and wait
                    # for its "pending" report.
                    a.restarts += 1
                    self.rec.reason = (f"{what}: its provider restarts it "
                                       f"({a.restarts}/{self.tuning.max_restarts})")
                    return []
                return self._restart(a, policy, what, now)
            what += f" (after {a.restarts} restarts)"
            if self.ensemble.escalation_strategy == "redeploy" \
                    or node.failure_recovery == "redeploy":
                return self._replace(a.node, what, now, lost=False)
            return self._fail("failed", what, now)
        if node.failure_recovery == "redeploy" and a.attempt <= self.tuning.max_restarts:
            return self._replace(a.node, what, now, lost=False)
        return self._fail("failed", what, now)

    def _restart(self, a: AllocationState, policy: str, what: str, now: float) -> list[Action]:
        group = [a.name]
        mates = self.ensemble.nodes[a.node].allocations
        if policy == "one_for_all":
            group = list(mates)
        elif policy == "rest_for_one":
            group += self._dependents(a.name, mates)
        a.restarts += 1
        actions: list[Action] = []
        for name in group:
            x = self.rec.allocations[name]
            if x.status in (A.FAILED, A.STOPPED):
                self._set(x, "restart", now, "")
            elif x.handle is not None and x.status is not A.COMPLETED and (
                    x.status is A.RUNNING or x.started):
                x.restart_pending = True
                actions.append(StopAllocation(name, x.handle, (x.attempt, x.restarts)))
        self.rec.reason = f"{what}: restarting ({a.restarts}/{self.tuning.max_restarts})"
        return actions

    def _dependents(self, name: str, mates: Iterable[str]) -> list[str]:
        out: list[str] = []
        todo = deque([name])
        while todo:
            current = todo.popleft()
            for other in mates:
                if other not in out and other != name \
                        and current in self.ensemble.allocations[other].depends_on:
                    out.append(other)
                    todo.append(other)
        return out

    def _start_ready(self) -> list[Action]:
        actions: list[Action] = []
        for a in self.rec.allocations.values():
            if a.handle is None or a.started or a.status is not A.PENDING:
                continue
            deps = self.ensemble.allocations[a.name].depends_on
            if all(self._ready(self.rec.allocations[d]) for d in deps):
                a.started = True
                actions.append(StartAllocation(a.name, a.handle, (a.attempt, a.restarts)))
        return actions

    @staticmethod
    def _ready(dep: AllocationState) -> bool:
        return dep.status is A.COMPLETED or (dep.status is A.RUNNING and dep.type == "service")

    def _not_running(self) -> str:
        waiting = [f"{a.name} {a.status.value}" for a in self.rec.allocations.values()
                   if a.status is not A.RUNNING and a.status is not A.COMPLETED]
        return "not running yet: " + ", ".join(waiting) if waiting else ""

    # --- providers -----------------------------------------------------------------------------

    def _probes(self) -> list[Action]:
        actions: list[Action] = []
        for node, p in self.rec.placements.items():
            if not p.allocated or node in self.probing:
                continue
            target = next((a for a in self.rec.allocations.values()
                           if a.node == node and a.handle is not None
                           and a.status not in ALLOCATION_ENDED), None)
            if target is not None and target.handle is not None:
                self.probing.add(node)
                actions.append(Probe(node, p.provider, target.handle))
        return actions

    def _lost(self, node: str, why: str, now: float) -> list[Action]:
        rec = self.rec
        p = rec.placements[node]
        what = f"provider {short(p.provider)} of node {node} stopped answering ({why})"
        hit = False
        for a in rec.allocations.values():
            if a.node == node and a.status not in ALLOCATION_FINAL:
                hit = hit or a.status not in ALLOCATION_ENDED
                self._set(a, "terminate", now, "its provider was lost")
        if not hit or rec.status is D.SHUTTING_DOWN or self.final:
            return self._settle(now)
        if self.ensemble.nodes[node].failure_recovery in ("redeploy", "restart"):
            return self._replace(node, what, now, lost=True)
        return self._fail("failed", what, now)

    def _replace(self, node: str, why: str, now: float, *, lost: bool) -> list[Action]:
        """Place `node` again on another provider (a redeploy)."""
        rec = self.rec
        p = rec.placements.pop(node)
        actions: list[Action] = []
        if lost:
            rec.excluded = (*rec.excluded, p.provider)
        for bids in self.pool.values():
            bids.pop(p.provider, None)
        for name in self.ensemble.nodes[node].allocations:
            old = rec.allocations[name]
            if old.handle is not None and old.status not in ALLOCATION_ENDED and not lost:
                actions.append(StopAllocation(name, old.handle, (old.attempt, old.restarts)))
            rec.allocations[name] = AllocationState(
                name=name, node=node, type=old.type, attempt=old.attempt + 1, updated_at=now)
        rec.to_place = (*rec.to_place, node)
        rec.deadline = now + rec.timeout
        rec.reason = f"{why}: redeploying {node}"
        self._touch(now)
        return actions + self._settle(now)

    # --- status --------------------------------------------------------------------------------

    def _settle(self, now: float) -> list[Action]:
        """Move the deployment on from where its parts are."""
        rec = self.rec
        if self.final:
            return []
        if rec.status is D.SHUTTING_DOWN:
            return self._check_stopped(now)
        if rec.status in (D.PROVISIONING, D.RUNNING) and rec.to_place:
            self._advance("redeploy", now, rec.reason)
        if rec.status is D.PREPARING and rec.to_place and not self.bidding \
                and self.next_round_at is None:
            return self._request_bids(now)
        if rec.status not in (D.PROVISIONING, D.RUNNING):
            return []
        actions = self._start_ready()
        allocs = rec.allocations.values()
        placed = not rec.to_place and all(p.allocated for p in rec.placements.values())
        if placed and all(a.status is A.COMPLETED for a in allocs):
            self._advance("completed", now, "")
            return [*actions, Finished(rec.status)]
        if rec.status is D.PROVISIONING and placed \
                and all(a.status in (A.RUNNING, A.COMPLETED) for a in allocs):
            self._advance("started", now, "")
        return actions

    def _check_stopped(self, now: float) -> list[Action]:
        rec = self.rec
        if any(p.commit == "pending" or p.allocating for p in rec.placements.values()):
            return []
        if any(a.handle is not None and a.status not in ALLOCATION_ENDED
               for a in rec.allocations.values()):
            return []
        for a in rec.allocations.values():
            if a.handle is None and a.status is A.PENDING:
                self._set(a, "stop", now, "never placed")
        unconfirmed = sum(1 for a in rec.allocations.values()
                          if a.reason == "did not confirm the shutdown")
        self._advance("stopped", now, f"{unconfirmed} allocations did not confirm the shutdown"
                      if unconfirmed else "shut down")
        return [Finished(rec.status)]

    def _stop_live(self) -> list[Action]:
        """Revert what is reserved but not allocated, stop what runs."""
        rec = self.rec
        actions: list[Action] = []
        for node, p in list(rec.placements.items()):
            if p.commit == "ok" and not p.allocating and not p.allocated:
                p.commit = "reverted"
                actions.append(SendRevert(node, p.handle, Revert(deployment_id=rec.id, node=node)))
        for a in rec.allocations.values():
            a.restart_pending = False
            if a.handle is not None and a.status not in ALLOCATION_ENDED:
                actions.append(StopAllocation(a.name, a.handle, (a.attempt, a.restarts)))
        return actions

    def _fail(self, event: str, reason: str, now: float) -> list[Action]:
        self._advance(event, now, reason)
        self.batch = ()
        return [*self._stop_live(), Finished(self.rec.status)]

    def _advance(self, event: str, now: float, reason: str) -> None:
        rec = self.rec
        rec.status = advance_deployment(rec.status, event)
        rec.reason = reason
        rec.history.append(Change(now, rec.status, reason))
        if len(rec.history) > MAX_HISTORY:
            del rec.history[1:-MAX_HISTORY + 1]
        self._touch(now)

    def _touch(self, now: float) -> None:
        self.rec.updated_at = now
        self.version += 1


def _path(start: AllocationStatus, target: AllocationStatus, *,
          provider_restarts: bool = False) -> list[str] | None:
    """The shortest run of allocation events from `start` to `target` (a report may stand for
    several steps: a task that finished before "running" was sent). Restarts are the
    orchestrator's to decide (except for `failure_recovery: restart`, which the provider does
    in place) and terminations its own verdict, so a report never implies them otherwise,
    except a report of `terminated` itself."""
    todo: deque[tuple[AllocationStatus, list[str]]] = deque([(start, [])])
    seen = {start}
    while todo:
        state, events = todo.popleft()
        for (source, event), nxt in ALLOCATION_TRANSITIONS.items():
            if source is not state or nxt in seen or (
                    event == "restart" and not provider_restarts):
                continue
            if event == "terminate" and nxt is not target:
                continue
            if nxt is target:
                return [*events, event]
            seen.add(nxt)
            todo.append((nxt, [*events, event]))
    return None


def short(did: str) -> str:
    """A DID shortened for messages people read."""
    return did if len(did) <= 24 else f"{did[:16]}…{did[-6:]}"
