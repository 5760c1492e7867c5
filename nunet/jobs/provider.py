"""The provider side of deployments: a daemon component on the node's root actor.

Behaviours (capability `/dms/deployment`, DMS names), for the orchestrator of a deployment:
- BID_REQUEST (broadcast on TOPIC_DEPLOYMENT, or invoked directly for a pinned node): `Bids`, a
  signed `Bid` per ensemble node this provider fits (onboarded, executors available, free
  resources minus reservations, ports, location, not excluded, the pin names us) with an `Offer`
  (free resources, location, benchmark scores, load, price), and the reason for each node it
  does not fit; nodes pinned to another provider are left out. Bids are remembered until they
  expire: a commit needs one.
- COMMIT: a reservation (`Reservations`) that expires unless allocated; `CommitReply`.
- REVERT: drops the reservation.
- ALLOCATE: re-validates the ensemble, checks it against the reservation, allocates each
  allocation's share of the resources (persisted by onboarding) and spawns one `AllocationActor`
  per allocation of the node; `Allocated` with their handles. Repeating it answers the same.
Only the orchestrator that bid request named (its actor, or its host node) may commit, revert
or allocate what it was offered.

On start it reconciles with the executors: containers of ours (execution ids carry this node's
tag) whose record still runs are re-adopted by new allocation actors; other containers of ours
are removed; records whose container vanished become terminated; the onboarding's allocated
resources are set to what the records still hold. The sweeper drops expired reservations and
bids every `sweep_interval_s`, and refreshes which executors are available.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import msgspec

from nunet.actor.handle import Handle
from nunet.actor.runtime import ActorSystem, Message
from nunet.benchmark.model import Scores
from nunet.db.repository import Repository
from nunet.errors import (
    AlreadyExists,
    CapabilityError,
    CapacityError,
    ClosedResourceError,
    NotFound,
    NunetError,
    ValidationError,
)
from nunet.executor.api import Executor, PortMapping
from nunet.jobs.allocation import (
    NAMESPACE,
    AllocationActor,
    AllocationEnv,
    AllocationRecord,
    AllocationSettings,
    inbox_of,
    record_id,
)
from nunet.jobs.capability import Offer, Requirement, fits, match_gpus, requirement
from nunet.jobs.lifecycle import ALLOCATION_ENDED, advance_allocation
from nunet.jobs.protocol import (
    ALLOCATE,
    ALLOCATION_STATUS,
    BID_REQUEST,
    CAPABILITY,
    COMMIT,
    REVERT,
    TOPIC_DEPLOYMENT,
    Allocate,
    Allocated,
    AllocationReport,
    Bid,
    BidRequest,
    Bids,
    Commit,
    CommitReply,
    LogsChunk,
    LogsRequest,
    Revert,
    decode,
    encode,
)
from nunet.jobs.reservations import DEFAULT_PORT_RANGE, Reservations
from nunet.jobs.spec import Ensemble, parse_ensemble
from nunet.jobs.workdir import LogFiles, allocation_dir, deployment_dir, remove_tree
from nunet.node.node import Node
from nunet.node.resources import GPU, Resources
from nunet.storage.api import volumes_dir
from nunet.storage.paths import check_name

log = logging.getLogger("nunet.jobs.provider")

MAX_REQUESTED_NODES = 256  # nodes in one bid request (an ensemble has at most 256)
MAX_BIDS = 16384  # bids remembered at once; the oldest go first
MAX_PROBED_PORTS = 64  # fixed public ports of one request checked against the host
SLOW_FACTS_S = 30.0  # benchmark scores and CPU architecture are re-read this often
AVAILABILITY_S = 10.0  # executors' availability is re-checked this often
AVAILABILITY_TIMEOUT_S = 10.0


class _BidNote(msgspec.Struct, frozen=True):
    orchestrator: Handle
    expires_at: float


class ProviderService:
    def __init__(
        self,
        system: ActorSystem,
        node: Node,
        executors: Mapping[str, Executor],
        *,
        clock: Callable[[], float] = time.time,
        commit_ttl_s: float = 60.0,
        sweep_interval_s: float = 5.0,
        bid_ttl_s: float = 60.0,
        price: float = 0.0,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        settings: AllocationSettings = AllocationSettings(),  # noqa: B008 - frozen value
        port_in_use: Callable[[int], bool] | None = None,
    ) -> None:
        self.system = system
        self.node = node
        self.executors = dict(executors)
        self.clock = clock
        self.sweep_interval_s = sweep_interval_s
        self.bid_ttl_s = bid_ttl_s
        self.price = price
        self.settings = settings
        self.reservations = Reservations(port_range=port_range, max_ttl_s=commit_ttl_s)
        self.repo: Repository[AllocationRecord] = Repository(node.store, NAMESPACE,
                                                             AllocationRecord)
        self.did = system.did
        # Execution ids start with this tag: on an engine shared with other nodes (a test
        # machine, several nodes on one host) reconciliation touches only our containers.
        self.tag = hashlib.sha256(self.did.encode()).hexdigest()[:12]
        self.counters: Counter[str] = Counter()
        self._port_in_use = port_in_use or port_bound
        self._bids: dict[tuple[str, str], _BidNote] = {}
        self._actors: dict[tuple[str, str], AllocationActor] = {}
        self._available: tuple[str, ...] = ()
        self._available_at = float("-inf")
        self._facts: tuple[str, Scores | None] = ("", None)
        self._facts_at = float("-inf")
        self._tg: asyncio.TaskGroup | None = None

    # --- component -------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        root = self.system.root
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                await self._refresh_availability()
                await self.reconcile()
                for name, handler in (
                    (BID_REQUEST, self._on_bid_request),
                    (COMMIT, self._on_commit),
                    (REVERT, self._on_revert),
                    (ALLOCATE, self._on_allocate),
                ):
                    root.add_behavior(name, handler, capability=CAPABILITY)
                root.subscribe(TOPIC_DEPLOYMENT)
                started()
                while True:
                    await asyncio.sleep(self.sweep_interval_s)
                    self.sweep()
                    if self.clock() - self._available_at >= AVAILABILITY_S:
                        await self._refresh_availability()
            finally:
                for name in (BID_REQUEST, COMMIT, REVERT, ALLOCATE):
                    root.remove_behavior(name)
                root.unsubscribe(TOPIC_DEPLOYMENT)
                self._tg = None
                for actor in list(self._actors.values()):
                    actor.logs.close()
                    await actor.actor.stop()  # the executions run on, for the next start

    def sweep(self) -> None:
        """Drop expired reservations and bids (called every `sweep_interval_s`)."""
        now = self.clock()
        for r in self.reservations.sweep(now):
            self.counters["reservations_expired"] += 1
            log.info("reservation of node %s of %s expired", r.node, r.deployment_id)
        for key in [k for k, note in self._bids.items() if note.expires_at <= now]:
            del self._bids[key]
        for actor in [a for a in self._actors.values() if a.lingered(now) and not a.closed]:
            self._spawn(actor.close())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._tg is None:
            work.close()
            raise ClosedResourceError("the provider service is not running")
        return self._tg.create_task(_logged(work))

    # --- what we offer ---------------------------------------------------------------------

    async def _refresh_availability(self) -> None:
        names = []
        for name, executor in self.executors.items():
            try:
                async with asyncio.timeout(AVAILABILITY_TIMEOUT_S):
                    ok = (await executor.available()).ok
            except (NunetError, TimeoutError):
                ok = False
            if ok:
                names.append(name)
        self._available = tuple(sorted(names))
        self._available_at = self.clock()

    def _slow_facts(self) -> tuple[str, Scores | None]:
        now = self.clock()
        if now - self._facts_at >= SLOW_FACTS_S:
            try:
                scores: Scores | None = self.node.benchmark.hardware_benchmark()
            except NotFound:
                scores = None
            self._facts = (self.node.machine().cpu.arch, scores)
            self._facts_at = now
        return self._facts

    def held_ports(self) -> frozenset[int]:
        """Public ports of live allocations."""
        return frozenset(p.host_port for a in self._actors.values()
                         if a.status not in ALLOCATION_ENDED for p in a.record.ports)

    def _port_busy(self) -> Callable[[int], bool]:
        held = self.held_ports()
        return lambda port: port in held or self._port_in_use(port)

    def offer(self, requirements: Mapping[str, Requirement] | None = None) -> Offer | None:
        """What this provider offers now (None when it is not onboarded)."""
        requirements = requirements or {}
        status = self.node.onboarding.status()
        if not status.onboarded or status.free is None or status.onboarded_resources is None:
            return None
        now = self.clock()
        free = clipped(status.free, self.reservations.reserved(now))
        fixed = sorted({p for r in requirements.values() for p in r.public_ports})
        busy = self.reservations.reserved_ports(now) | self.held_ports() | {
            p for p in fixed[:MAX_PROBED_PORTS] if self._port_in_use(p)}
        arch, scores = self._slow_facts()
        return Offer(
            peer=self.did, free=free, architecture=arch, executors=self._available,
            location=self.node.onboarding.location, price=self.price, benchmark=scores,
            load=load(status.onboarded_resources, free), busy_ports=frozenset(busy),
            port_range=self.reservations.port_range,
        )

    # --- behaviours ------------------------------------------------------------------------

    def _check_orchestrator(self, message: Message, orchestrator: Handle) -> None:
        if message.sender not in (orchestrator.did, orchestrator.address.host_id):
            raise CapabilityError("the sender is not the orchestrator it names",
                                  path="orchestrator")

    def _on_bid_request(self, message: Message) -> bytes:
        request = decode(message.payload, BidRequest)
        self._check_orchestrator(message, request.orchestrator)
        if len(request.requirements) > MAX_REQUESTED_NODES:
            raise ValidationError(f"more than {MAX_REQUESTED_NODES} nodes", path="requirements")
        now = self.clock()
        self.counters["bid_requests"] += 1
        if request.expires_at <= now:
            return encode(Bids())
        mine = {n: r for n, r in request.requirements.items() if r.peer in (None, self.did)}
        offer = self.offer(mine)
        if offer is None:
            return encode(Bids(refusals={n: "the provider is not onboarded" for n in mine}))
        bids: list[Bid] = []
        refusals: dict[str, str] = {}
        for name, need in mine.items():
            why = fits(need, offer)
            if why is not None:
                refusals[name] = why
                continue
            bid = Bid(deployment_id=request.deployment_id, node=name, provider=self.did,
                      handle=self.system.root.handle, offer=offer,
                      expires_at=now + self.bid_ttl_s, nonce=secrets.token_bytes(16))
            bids.append(bid.sign(self.system.keypair))
            self._remember(request.deployment_id, name, request.orchestrator, bid.expires_at)
        self.counters["bids"] += len(bids)
        return encode(Bids(tuple(bids), refusals))

    def _remember(self, deployment_id: str, node: str, orchestrator: Handle, until: float) -> None:
        key = (deployment_id, node)
        self._bids.pop(key, None)
        if len(self._bids) >= MAX_BIDS:
            self.sweep()
        while len(self._bids) >= MAX_BIDS:
            del self._bids[next(iter(self._bids))]
        self._bids[key] = _BidNote(orchestrator, until)

    def _on_commit(self, message: Message) -> bytes:
        commit = decode(message.payload, Commit)
        now = self.clock()
        note = self._bids.get((commit.deployment_id, commit.node))
        if note is None or note.expires_at <= now:
            return encode(CommitReply(False, "no live bid of this provider for that node"))
        self._check_orchestrator(message, note.orchestrator)
        status = self.node.onboarding.status()
        if not status.onboarded or status.free is None:
            return encode(CommitReply(False, "the provider is not onboarded"))
        reply = self.reservations.reserve(commit, status.free, now,
                                          orchestrator=note.orchestrator.did,
                                          port_busy=self._port_busy())
        self.counters["commits" if reply.ok else "commits_refused"] += 1
        return encode(reply)

    def _on_revert(self, message: Message) -> None:
        revert = decode(message.payload, Revert)
        key = (revert.deployment_id, revert.node)
        held = next((r for r in self.reservations
                     if (r.deployment_id, r.node) == key), None)
        if held is None:
            return
        note = self._bids.get(key)
        allowed = {held.orchestrator}
        if note is not None and note.orchestrator.did == held.orchestrator:
            allowed.add(note.orchestrator.address.host_id)
        if message.sender not in allowed:
            raise CapabilityError("only the orchestrator that committed may revert")
        self.reservations.release(*key)
        self.counters["reverts"] += 1

    async def _on_allocate(self, message: Message) -> bytes:
        request = decode(message.payload, Allocate)
        self._check_orchestrator(message, request.orchestrator)
        check_name(request.deployment_id, "deployment_id")
        ensemble = parse_ensemble(request.ensemble)
        if request.node not in ensemble.nodes:
            raise ValidationError(f"the ensemble has no node {request.node!r}", path="node")
        names = ensemble.nodes[request.node].allocations
        existing = [self._actors.get((request.deployment_id, n)) for n in names]
        reserved = any((r.deployment_id, r.node) == (request.deployment_id, request.node)
                       for r in self.reservations)
        if not reserved and all(a is not None and not a.closed
                                and a.record.orchestrator == request.orchestrator
                                for a in existing):
            # A retry of an allocate that was answered (its reservation was taken).
            return encode(Allocated({n: a.handle for n, a in zip(names, existing, strict=True)
                                     if a is not None}))
        for a in existing:
            if a is not None and (a.busy or a.status not in ALLOCATION_ENDED):
                raise AlreadyExists(f"allocation {a.record.name!r} of deployment "
                                    f"{request.deployment_id} exists already")
        now = self.clock()
        reservation = self.reservations.get(request.deployment_id, request.node, now)
        if reservation.orchestrator != request.orchestrator.did:
            raise CapabilityError("the node was reserved by another orchestrator")
        shares = self._shares(ensemble, request.node, reservation.resources)
        ports = self._port_mappings(ensemble, request.node, reservation.ports)
        self.reservations.take(request.deployment_id, request.node, now)
        for a in existing:  # ended allocations of an earlier placement here make room
            if a is not None:
                await a.close()
        handles = self._create(request, ensemble, shares, ports)
        self.counters["allocations"] += len(handles)
        return encode(Allocated(handles))

    def _shares(self, ensemble: Ensemble, node: str, reserved: Resources) -> dict[str, Resources]:
        """Each allocation's part of the reservation; CapacityError when the ensemble's node does
        not fit what was reserved (or this provider)."""
        need = requirement(ensemble, node)
        offer = self.offer({node: need})
        if offer is None:
            raise CapacityError("the provider is not onboarded")
        reserved_offer = msgspec.structs.replace(offer, free=reserved, busy_ports=frozenset())
        why = fits(need, reserved_offer)
        if why is not None:
            raise CapacityError(f"the allocation does not fit its reservation: {why}")
        gpus: list[GPU] = match_gpus(need.resources.gpus, reserved.gpus) or []
        shares: dict[str, Resources] = {}
        for name in ensemble.nodes[node].allocations:
            spec = ensemble.allocations[name].resources
            mine, gpus = gpus[: len(spec.gpus)], gpus[len(spec.gpus):]
            shares[name] = Resources(
                cpu_cores=spec.cpu.cores, ram_bytes=spec.ram.bytes, disk_bytes=spec.disk.bytes,
                gpus=tuple(sorted(mine, key=lambda g: g.index)))
        return shares

    @staticmethod
    def _port_mappings(
        ensemble: Ensemble, node: str, reserved: tuple[int, ...]
    ) -> dict[str, tuple[PortMapping, ...]]:
        wanted = ensemble.nodes[node].ports
        if len(wanted) != len(reserved) or any(
                p.public and p.public != r for p, r in zip(wanted, reserved, strict=True)):
            raise ValidationError(
                f"the node's ports {[p.public for p in wanted]} are not the reserved ones "
                f"{list(reserved)}", path="ports")
        out: dict[str, list[PortMapping]] = {}
        for p, public in zip(wanted, reserved, strict=True):
            out.setdefault(p.allocation, []).append(
                PortMapping(host_port=public, container_port=p.private))
        return {name: tuple(mappings) for name, mappings in out.items()}

    def _create(
        self, request: Allocate, ensemble: Ensemble, shares: dict[str, Resources],
        ports: dict[str, tuple[PortMapping, ...]],
    ) -> dict[str, Handle]:
        onboarding = self.node.onboarding
        allocated: list[Resources] = []
        made: list[AllocationActor] = []
        try:
            for share in shares.values():
                onboarding.allocate(share)
                allocated.append(share)
            now = self.clock()
            for name, share in shares.items():
                spec = ensemble.allocations[name]
                record = AllocationRecord(
                    deployment_id=request.deployment_id, name=name, node=request.node,
                    orchestrator=request.orchestrator, provider=self.did, spec=spec,
                    resources=share, ports=ports.get(name, ()), created_at=now, updated_at=now,
                )
                self.repo.put(record.id, record, sync=False)  # group commit: see allocation.py
                made.append(self._actor(record))
        except BaseException:
            for share in allocated:
                onboarding.release(share)
            for actor in made:
                self._spawn(actor.close())
                self.repo.delete(actor.record.id)
            raise
        return {a.record.name: a.handle for a in made}

    def _actor(self, record: AllocationRecord) -> AllocationActor:
        executor = self.executors.get(record.spec.executor)
        if executor is None:
            raise ValidationError(f"executor {record.spec.executor!r} is not available here",
                                  path=f"allocations.{record.name}.executor")
        child = self.system.spawn(inbox_of(record.deployment_id, record.name),
                                  parent=self.system.root)
        env = AllocationEnv(
            executor=executor, repo=self.repo, onboarding=self.node.onboarding,
            work_dir=self.node.work_dir, settings=self.settings, clock=self.clock,
            spawn=self._spawn, execution_id=self._execution_id, on_closed=self._closed,
            reclaim=self._reclaim,
        )
        actor = AllocationActor(child, record, env)
        self._actors[(record.deployment_id, record.name)] = actor
        return actor

    def _reclaim(self, record: AllocationRecord) -> None:
        """An ended allocation's resources and ports again (its orchestrator restarts it), if no
        reservation or other allocation has them now; else CapacityError."""
        now = self.clock()
        free = clipped(self.node.onboarding.free_resources(), self.reservations.reserved(now))
        short = free.shortfalls(record.resources)
        if short:
            raise CapacityError("not enough free resources to restart it: "
                                + "; ".join(message for _, message in short))
        taken = self.reservations.reserved_ports(now) | self.held_ports()
        clash = sorted(p.host_port for p in record.ports if p.host_port in taken)
        if clash:
            raise CapacityError(f"its public ports {clash} are taken now")
        self.node.onboarding.allocate(record.resources)

    def _execution_id(self, record: AllocationRecord) -> str:
        digest = hashlib.sha256(record.id.encode()).hexdigest()[:12]
        return f"{self.tag}-{record.name[:40]}-{digest}-{record.attempt}"

    def _closed(self, actor: AllocationActor) -> None:
        key = (actor.record.deployment_id, actor.record.name)
        if self._actors.get(key) is actor:
            del self._actors[key]

    # --- restart reconciliation ------------------------------------------------------------

    async def reconcile(self) -> None:
        """Re-adopt, terminate or remove what an earlier provider process left (see module)."""
        owned: dict[str, dict[str, str] | None] = {}  # executor -> our execution id -> state
        for name, executor in self.executors.items():
            try:
                managed = await executor.list_managed()
            except NunetError as exc:
                log.warning("reconcile: cannot list the executions of %s: %s", name, exc)
                owned[name] = None  # unknown: leave its records alone this time
                continue
            owned[name] = {m.execution_id: m.state for m in managed
                           if m.execution_id.startswith(self.tag + "-")}
        adopted: set[str] = set()
        for record in self.repo.list():
            if record.status in ALLOCATION_ENDED:
                continue
            found = owned.get(record.spec.executor, {})
            if found is None:
                continue
            if record.execution_id and record.execution_id in found:
                self._actor(record).adopt()
                adopted.add(record.execution_id)
                self.counters["adopted"] += 1
            else:
                self._terminate(record)
        for name, found in owned.items():
            for eid in (found or {}).keys() - adopted:
                try:
                    await self.executors[name].remove(eid)
                    self.counters["orphans_removed"] += 1
                except NunetError as exc:
                    log.warning("reconcile: removing orphan execution %s: %s", eid, exc)
        self._settle_resources()

    def _terminate(self, record: AllocationRecord) -> None:
        now = self.clock()
        record = msgspec.structs.replace(
            record, status=advance_allocation(record.status, "terminate"), holds_resources=False,
            reason="its execution was lost while the provider was down", updated_at=now)
        self.repo.put(record.id, record)
        self.counters["terminated"] += 1
        report = AllocationReport(
            deployment_id=record.deployment_id, allocation=record.name, node=record.node,
            provider=self.did, status=record.status.value, reason=record.reason, at=now)
        self._spawn(self._tell(record.orchestrator, report))

    async def _tell(self, orchestrator: Handle, report: AllocationReport) -> None:
        try:
            await self.system.root.send(orchestrator, ALLOCATION_STATUS, encode(report))
        except NunetError as exc:
            log.info("report to %s not delivered: %s", orchestrator.did, exc)

    def _settle_resources(self) -> None:
        """Make the onboarding's allocated resources what the records hold: a crash between
        releasing and recording it must neither leak nor double-release."""
        onboarding = self.node.onboarding
        if not onboarding.status().onboarded:
            return
        held = sum((r.resources for r in self.repo.list() if r.holds_resources), Resources())
        actual = onboarding.allocated_resources()
        if actual == held:
            return
        log.warning("reconcile: allocated resources were %s, the allocations hold %s",
                    actual, held)
        onboarding.release(actual)
        try:
            onboarding.allocate(held)
        except CapacityError as exc:
            log.error("reconcile: the allocations no longer fit the onboarded capacity: %s", exc)

    # --- for the node's API ----------------------------------------------------------------

    def allocation_records(self, deployment_id: str | None = None) -> list[AllocationRecord]:
        records = self.repo.list()
        if deployment_id is not None:
            records = [r for r in records if r.deployment_id == deployment_id]
        return records

    def allocation(self, deployment_id: str, name: str) -> AllocationActor | None:
        """The live (or lingering) actor of an allocation."""
        return self._actors.get((deployment_id, name))

    def read_logs(self, deployment_id: str, name: str, request: LogsRequest) -> LogsChunk:
        """An allocation's log from disk, also after its actor has gone."""
        record = self.repo.get(record_id(deployment_id, name))
        actor = self._actors.get((deployment_id, name))
        files = actor.logs if actor is not None else LogFiles(
            allocation_dir(self.node.work_dir, deployment_id, name) / "logs", 0)
        data, size = files.read(request.stream, request.offset, request.limit)
        next_offset = max(0, request.offset) + len(data)
        ended = record.status in ALLOCATION_ENDED and (actor is None or not actor.busy)
        return LogsChunk(data=data, next_offset=next_offset, finished=ended and next_offset >= size)

    async def delete_deployment(self, deployment_id: str) -> int:
        """Forget an ended deployment here: its records, logs, outputs and local volumes. An
        allocation still running is refused (`AlreadyExists`); returns how many were removed."""
        check_name(deployment_id, "deployment_id")
        records = self.allocation_records(deployment_id)
        for r in records:
            actor = self._actors.get((deployment_id, r.name))
            if r.status not in ALLOCATION_ENDED or (actor is not None and actor.busy):
                raise AlreadyExists(f"allocation {r.name!r} of {deployment_id} is still "
                                    f"{r.status.value}; shut it down first")
        for r in records:
            actor = self._actors.get((deployment_id, r.name))
            if actor is not None:
                await actor.close()
            self.repo.delete(r.id)
        work_dir: Path = self.node.work_dir
        await asyncio.to_thread(remove_tree, deployment_dir(work_dir, deployment_id))
        await asyncio.to_thread(remove_tree, volumes_dir(work_dir, deployment_id))
        return len(records)


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    """A background task of the provider: its failure is logged, never the TaskGroup's end."""
    try:
        await work
    except Exception:
        log.exception("provider task failed")


def clipped(free: Resources, reserved: Resources) -> Resources:
    """`free - reserved` without underflow (reservations may briefly exceed a shrunk free)."""
    gpus = {g.index: g for g in free.gpus}
    for g in reserved.gpus:
        if (f := gpus.get(g.index)) is not None:
            gpus[g.index] = msgspec.structs.replace(f, vram_bytes=f.vram_bytes - g.vram_bytes)
    return Resources(
        cpu_cores=max(0.0, round(free.cpu_cores - reserved.cpu_cores, 3)),
        ram_bytes=max(0, free.ram_bytes - reserved.ram_bytes),
        disk_bytes=max(0, free.disk_bytes - reserved.disk_bytes),
        gpus=tuple(g for g in gpus.values() if g.vram_bytes > 0),
    )


def load(onboarded: Resources, free: Resources) -> float:
    """The share of the onboarded CPU or RAM in use or promised, whichever is larger."""
    parts = [1 - free.cpu_cores / onboarded.cpu_cores if onboarded.cpu_cores else 0.0,
             1 - free.ram_bytes / onboarded.ram_bytes if onboarded.ram_bytes else 0.0]
    return round(min(1.0, max(0.0, *parts)), 3)


def port_bound(port: int) -> bool:
    """Whether something on this host listens on TCP `port` (so a container cannot publish it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False
