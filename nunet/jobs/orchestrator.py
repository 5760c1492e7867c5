"""The orchestrator side of deployments: one `Orchestrator` actor per deployment (a child of the
node's root actor, inbox = deployment id) running a `DeploymentCore`, and the
`DeploymentService` that creates them, keeps their records in the node's store, resumes them
after a restart, and answers the deployment operations (`/dms/node/deployment/*`,
`/api/v1/deployments`).

An orchestrator's key is derived from the node's key and the deployment id, so its handle, to
which providers send allocation reports, is the same after the node restarts; nothing secret is
stored. Providers receive COMMIT, REVERT, ALLOCATE and the allocation calls from that key only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from nunet.actor.handle import ROOT_INBOX, Handle
from nunet.crypto.keys import KeyPair
from nunet.db.repository import Repository
from nunet.errors import (
    ClosedResourceError,
    IllegalTransition,
    NotFound,
    NunetError,
    RateLimited,
    RemoteActorError,
    ValidationError,
)
from nunet.jobs.lifecycle import ALLOCATION_ENDED, DEPLOYMENT_FINAL, advance_deployment
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
from nunet.jobs.protocol import (
    ALLOCATE,
    ALLOCATION_INFO,
    ALLOCATION_LOGS,
    ALLOCATION_RESULTS,
    ALLOCATION_SHUTDOWN,
    ALLOCATION_START,
    ALLOCATION_STATUS,
    BID_REQUEST,
    CAPABILITY,
    COMMIT,
    REVERT,
    TOPIC_DEPLOYMENT,
    Allocated,
    AllocationReport,
    BidRequest,
    Bids,
    CommitReply,
    LogsChunk,
    LogsRequest,
    ResultsChunk,
    ResultsRequest,
    decode,
    encode,
)
from nunet.jobs.records import (
    AllocationsArgs,
    AllocationState,
    AllocationView,
    CachedLog,
    Change,
    DeploymentPage,
    DeploymentRecord,
    DeploymentRef,
    DeploymentSummary,
    DeploymentView,
    ListDeployments,
    LogsArgs,
    LogsView,
    Manifest,
    NewDeployment,
    ResultsArgs,
    ResultsView,
    allocation_view,
    summary,
    view,
)
from nunet.jobs.spec import Ensemble, ensemble_from_data, parse_ensemble

if TYPE_CHECKING:
    from nunet.actor.runtime import Actor, ActorSystem, Message
    from nunet.node.node import Node

log = logging.getLogger("nunet.jobs")

DEFAULT_TIMEOUT_S = 120.0
MAX_ACTIVE = 10_000  # deployments orchestrated at once by one node
MAX_CACHED_LOG = 1 << 20  # bytes of an ended allocation's log kept here
LOG_SETTLE_TRIES, LOG_SETTLE_S = 20, 0.25  # waiting for a provider to finish copying a log
KEY_DOMAIN = b"nunet:orchestrator:v1:"
_NOT_THERE = frozenset({"not_found", "actor_stopped"})
_ALREADY = frozenset({"illegal_transition", "already_exists"})


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Orchestrator:
    """The asyncio adapter of one `DeploymentCore`: runs its actions, feeds back their results,
    wakes it on its timers, persists its record after every step."""

    def __init__(self, service: DeploymentService, core: DeploymentCore, actor: Actor) -> None:
        self.service = service
        self.core = core
        self.actor = actor
        self.deleted = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished = False
        actor.add_behavior(ALLOCATION_STATUS, self._on_status, capability=CAPABILITY)

    @property
    def id(self) -> str:
        return self.core.rec.id

    def begin(self) -> None:
        self.feed(self.core.start, self.service.clock())
        self._spawn(self._ticker())

    def feed(self, step: Callable[..., list[Action]], *args: Any,
             refusals: bool = False) -> list[Action]:
        """Apply one input to the core, persist, and run what it asks for. With `refusals`, an
        IllegalTransition (a user's request in the wrong state) goes to the caller."""
        version = self.core.version
        try:
            actions = step(*args)
        except IllegalTransition:
            if refusals:
                raise
            log.exception("orchestrator %s: %s failed", self.id, getattr(step, "__name__", step))
            self.core.counters["core_errors"] += 1
            return []
        except Exception:  # a bug in the core must not take the node down
            log.exception("orchestrator %s: %s failed", self.id, getattr(step, "__name__", step))
            self.core.counters["core_errors"] += 1
            return []
        if self.core.version != version:
            self.service.save(self)
        for action in actions:
            if isinstance(action, Finished):
                self._finished = True
            else:
                self._spawn(self._run(action))
        self._wake.set()
        return actions

    def shutdown(self) -> None:
        self.feed(self.core.shutdown, self.service.clock(), refusals=True)

    def _spawn(self, coro: Any) -> None:
        task = self.service.task_group().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ticker(self) -> None:
        clock = self.service.clock
        while not self._finished:
            self._wake.clear()
            wake = self.core.next_wakeup()
            try:
                async with asyncio.timeout(None if wake is None else max(0.0, wake - clock())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if not self._finished:
                self.feed(self.core.tick, clock())
        # Let reverts, stops and log fetches still in flight finish from this actor's key.
        current = asyncio.current_task()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.core.tuning.stop_timeout_s * 2):
                while pending := [t for t in self._tasks if t is not current]:
                    await asyncio.wait(pending)
        await self.service.finished(self)

    def halt(self) -> None:
        """Stop working without changing the deployment (the node is stopping)."""
        self._finished = True
        for task in list(self._tasks):
            task.cancel()

    # --- inputs from the network ------------------------------------------------------------------

    def _on_status(self, msg: Message) -> None:
        try:
            report = decode(msg.payload, AllocationReport)
        except NunetError:
            self.core.counters["bad_reports"] += 1
            return
        self.feed(self.core.on_report, report, msg.sender, msg.session_did,
                  self.service.clock())

    # --- actions -------------------------------------------------------------------------------

    async def _run(self, action: Action) -> None:
        try:
            await self._act(action)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("orchestrator %s: %s failed", self.id, type(action).__name__)
            self.core.counters["action_errors"] += 1

    async def _act(self, action: Action) -> None:
        core, clock, tuning = self.core, self.service.clock, self.core.tuning
        if isinstance(action, RequestBids):
            await self._bid_round(action)
        elif isinstance(action, SendCommit):
            try:
                reply = decode(await self.actor.invoke(
                    action.handle, COMMIT, encode(action.commit),
                    timeout=tuning.call_timeout_s), CommitReply)
            except NunetError as exc:
                reply = CommitReply(ok=False, reason=f"no commit: {_why(exc)}")
            self.feed(core.on_commit, action.node, action.provider, action.handle, reply, clock())
        elif isinstance(action, SendRevert):
            try:
                await self.actor.invoke(action.handle, REVERT, encode(action.revert),
                                        timeout=tuning.call_timeout_s)
            except NunetError as exc:  # the reservation lapses at its expiry anyway
                core.counters["revert_errors"] += 1
                log.debug("revert of %s/%s: %s", self.id, action.node, exc)
        elif isinstance(action, SendAllocate):
            handles: dict[str, Handle] | None = None
            error = ""
            try:
                handles = decode(await self.actor.invoke(
                    action.handle, ALLOCATE, encode(action.allocate),
                    timeout=tuning.allocate_timeout_s), Allocated).allocations
            except NunetError as exc:
                error = _why(exc)
            self.feed(core.on_allocated, action.node, action.provider, handles, error, clock())
        elif isinstance(action, StartAllocation):
            failure: str | None = None
            try:
                await self.actor.invoke(action.handle, ALLOCATION_START, b"",
                                        timeout=tuning.start_timeout_s, capability=CAPABILITY)
            except RemoteActorError as exc:
                failure = None if exc.remote_code in _ALREADY else _why(exc)
            except NunetError as exc:
                failure = _why(exc)
            self.feed(core.on_start_result, action.allocation, action.run, failure, clock())
        elif isinstance(action, StopAllocation):
            failure, gone = None, False
            try:
                await self.actor.invoke(action.handle, ALLOCATION_SHUTDOWN, b"",
                                        timeout=tuning.stop_timeout_s, capability=CAPABILITY)
            except RemoteActorError as exc:
                gone = exc.remote_code in _NOT_THERE
                failure = None if exc.remote_code in _ALREADY else _why(exc)
            except NunetError as exc:
                failure = _why(exc)
            self.feed(core.on_stop_result, action.allocation, action.run, failure, gone, clock())
        elif isinstance(action, Probe):
            await self._probe(action)
        elif isinstance(action, FetchLogs):
            await self.service.cache_log(self.actor, self.id, action.allocation, action.handle)

    async def _bid_round(self, action: RequestBids) -> None:
        replies: list[tuple[str, Bids]] = []
        failures: dict[str, str] = {}
        counters = self.core.counters

        def request(requirements: Mapping[str, Any]) -> bytes:
            return encode(BidRequest(deployment_id=self.id, orchestrator=self.actor.handle,
                                     requirements=dict(requirements),
                                     expires_at=action.expires_at))

        def take(replier: str, data: bytes) -> None:
            try:
                replies.append((replier, decode(data, Bids)))
            except NunetError:
                counters["bad_bid_replies"] += 1

        async def everyone() -> None:
            answers = await self.actor.broadcast(
                TOPIC_DEPLOYMENT, BID_REQUEST, request(action.broadcast),
                timeout=self.core.tuning.bid_window_s)
            for handle, data in answers:
                take(handle.did, data)

        async def pinned(peer: str, requirements: Mapping[str, Any]) -> None:
            root = Handle.for_actor(peer, peer, ROOT_INBOX)
            try:
                take(peer, await self.actor.invoke(root, BID_REQUEST, request(requirements),
                                                   timeout=self.core.tuning.call_timeout_s))
            except RemoteActorError as exc:  # it answered: with a refusal
                failures[peer] = f"refused ({exc.remote_code}): {_why(exc)}"
            except NunetError as exc:
                failures[peer] = f"did not answer: {_why(exc)}"

        calls = [pinned(peer, reqs) for peer, reqs in action.direct.items()]
        if action.broadcast:
            calls.append(everyone())
        await asyncio.gather(*calls)
        self.feed(self.core.on_bids, action.round, replies, failures, self.service.clock(),
                  self.service.qos_scores())

    async def _probe(self, action: Probe) -> None:
        outcome, report = "ok", None
        tuning = self.core.tuning
        try:
            data = await self.actor.invoke(action.handle, ALLOCATION_INFO, b"",
                                           timeout=min(tuning.probe_interval_s,
                                                       tuning.call_timeout_s),
                                           capability=CAPABILITY)
            with contextlib.suppress(NunetError):  # any answer proves it alive
                report = decode(data, AllocationReport)
        except RemoteActorError as exc:
            outcome = "gone" if exc.remote_code in _NOT_THERE else "ok"
        except NunetError:
            outcome = "missed"
        self.feed(self.core.on_probe, action.node, action.provider, outcome, report,
                  self.service.clock())


class DeploymentService:
    """The deployments this node orchestrates: a daemon component (start after the
    ActorSystem) and the facade of the deployment operations."""

    def __init__(self, node: Node, *, tuning: Tuning | None = None,
                 default_timeout_s: float = DEFAULT_TIMEOUT_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.tuning = tuning or Tuning()
        self.default_timeout_s = default_timeout_s
        self.clock = clock
        self.records: Repository[DeploymentRecord] = Repository(
            node.store, "deployment", DeploymentRecord)
        self.kept_logs: Repository[CachedLog] = Repository(node.store, "deploylog", CachedLog)
        self.active: dict[str, Orchestrator] = {}
        self._readers: dict[str, tuple[Actor, int]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.counters: Counter[str] = Counter()

    # --- component -----------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                self._resume()
                started()
                await asyncio.Event().wait()
            finally:
                self._tg = None
                for orchestrator in list(self.active.values()):
                    orchestrator.halt()
                    await orchestrator.actor.stop()  # its deployment resumes at the next start

    def task_group(self) -> asyncio.TaskGroup:
        if self._tg is None:
            raise ClosedResourceError("the deployment service is not running")
        return self._tg

    def _system(self) -> ActorSystem:
        if self.node.actors is None:
            raise ClosedResourceError("this node runs without actors")
        return self.node.actors

    def _resume(self) -> None:
        """Pick up every deployment that was not finished when the node stopped."""
        now = self.clock()
        for rec in self.records.list():
            if rec.status in DEPLOYMENT_FINAL:
                continue
            try:
                ensemble = parse_ensemble(rec.ensemble)
            except NunetError as exc:  # stored by an older version that accepted more
                log.error("deployment %s cannot be resumed: %s", rec.id, exc)
                self._abandon(rec, f"cannot be resumed after a restart: {exc}", now)
                continue
            self._launch(rec, ensemble)
            self.counters["resumed"] += 1

    def _abandon(self, rec: DeploymentRecord, reason: str, now: float) -> None:
        rec.status = advance_deployment(rec.status, "failed")
        rec.reason, rec.updated_at = reason, now
        rec.history.append(Change(now, rec.status, reason))
        self.records.put(rec.id, rec)

    def orchestrator_key(self, deployment_id: str) -> KeyPair:
        import blake3

        seed = blake3.blake3(KEY_DOMAIN + deployment_id.encode(),
                             key=self.node.keypair.seed).digest()
        return KeyPair.from_seed(seed)

    def orchestrator_handle(self, deployment_id: str) -> Handle:
        return Handle.for_actor(self.orchestrator_key(deployment_id).did, self.node.did,
                                deployment_id)

    def _spawn(self, deployment_id: str) -> Actor:
        """The orchestrator actor of a deployment: a child of the root actor with its derived
        key (calls to allocations present the chain for `/dms/deployment`: `_call`)."""
        system = self._system()
        return system.spawn(deployment_id, keypair=self.orchestrator_key(deployment_id),
                            parent=system.root)

    def _launch(self, rec: DeploymentRecord, ensemble: Ensemble) -> Orchestrator:
        actor = self._spawn(rec.id)
        core = DeploymentCore(rec, ensemble, actor.handle, self.tuning)
        orchestrator = Orchestrator(self, core, actor)
        self.active[rec.id] = orchestrator
        orchestrator.begin()
        return orchestrator

    def save(self, orchestrator: Orchestrator) -> None:
        """Persist the record after a step: in the WAL at once (a killed node resumes from it),
        fsynced by the group commit, off the event loop (a power loss may take the last few
        milliseconds of steps: resuming redoes them, as after any restart)."""
        if orchestrator.deleted:
            return
        self.records.put(orchestrator.id, orchestrator.core.rec, sync=False)

    async def finished(self, orchestrator: Orchestrator) -> None:
        if self.active.get(orchestrator.id) is orchestrator:
            del self.active[orchestrator.id]
        if orchestrator.id not in self._readers:  # else the last reader stops it
            await orchestrator.actor.stop()

    def qos_scores(self) -> dict[str, float]:
        net = self.node.net
        if net is None:
            return {}
        return {did: score.score for did, score in net.qos.scores().items()}

    # --- operations ----------------------------------------------------------------------------

    async def new(self, args: NewDeployment) -> DeploymentSummary:
        """Validate the ensemble and start orchestrating it; returns at once (Preparing)."""
        if isinstance(args.ensemble, str):
            ensemble = parse_ensemble(args.ensemble)
        else:
            ensemble = ensemble_from_data(args.ensemble)
        self.task_group()
        if len(self.active) >= MAX_ACTIVE:
            raise RateLimited(f"this node already orchestrates {MAX_ACTIVE} deployments")
        deployment_id = secrets.token_hex(16)
        rec = new_record(deployment_id, ensemble, self.clock(),
                         args.timeout or self.default_timeout_s)
        self.records.create(deployment_id, rec, sync=False)
        self._launch(rec, ensemble)
        answer = summary(rec)
        # The id we answer stays known even after a power loss; the fsync is shared with every
        # write made meanwhile and runs off the event loop.
        await self.node.store.synced()
        return answer

    def _record(self, deployment_id: str) -> DeploymentRecord:
        running = self.active.get(deployment_id)
        if running is not None:
            return running.core.rec
        try:
            return self.records.get(deployment_id)
        except (NotFound, ValidationError):
            raise NotFound(f"no deployment {deployment_id!r}", path="id") from None

    def list_deployments(self, args: ListDeployments) -> DeploymentPage:
        where = None if args.status is None else {"status": args.status}
        page = self.records.query(where, order_by="created_at", desc=True, limit=args.limit,
                                  offset=args.offset)
        live = self.active
        items = [summary(live[r.id].core.rec if r.id in live else r) for r in page.items]
        return DeploymentPage(items=items, total=page.total, more=page.more)

    def status(self, args: DeploymentRef) -> DeploymentView:
        return view(self._record(args.id), self.orchestrator_handle(args.id))

    def manifest(self, args: DeploymentRef) -> Manifest:
        rec = self._record(args.id)
        return Manifest(
            id=rec.id, status=rec.status, orchestrator=self.orchestrator_handle(rec.id),
            ensemble=msgspec.json.decode(rec.ensemble), nodes=dict(rec.placements),
            allocations={name: a.handle for name, a in rec.allocations.items()},
        )

    def allocations(self, args: AllocationsArgs) -> list[AllocationView]:
        if args.deployment is not None:
            records = [self._record(args.deployment)]
        else:
            records = [self.active[r.id].core.rec if r.id in self.active else r
                       for r in self.records.list()]
        return [allocation_view(rec, a) for rec in records for a in rec.allocations.values()]

    def shutdown(self, args: DeploymentRef) -> DeploymentSummary:
        orchestrator = self.active.get(args.id)
        rec = self._record(args.id)
        if orchestrator is None or rec.status in DEPLOYMENT_FINAL:
            raise IllegalTransition("deployment", rec.status.value, "shutdown")
        orchestrator.shutdown()
        return summary(rec)

    def delete(self, args: DeploymentRef) -> dict[str, bool]:
        """Forget a finished deployment (its record and kept logs)."""
        rec = self._record(args.id)
        if rec.status not in DEPLOYMENT_FINAL:
            raise IllegalTransition("deployment", rec.status.value, "delete")
        orchestrator = self.active.get(args.id)
        if orchestrator is not None:
            orchestrator.deleted = True
        self.records.delete(args.id)
        for name in rec.allocations:
            key = f"{args.id}/{name}"
            if self.kept_logs.exists(key):
                self.kept_logs.delete(key)
        return {"ok": True}

    def _allocation(self, rec: DeploymentRecord, name: str | None) -> AllocationState:
        if name is None:
            if len(rec.allocations) == 1:
                return next(iter(rec.allocations.values()))
            raise ValidationError(
                f"deployment {rec.id} has {len(rec.allocations)} allocations: name one of "
                f"{', '.join(sorted(rec.allocations))}", path="allocation")
        found = rec.allocations.get(name)
        if found is None:
            raise NotFound(f"deployment {rec.id} has no allocation {name!r} (it has "
                           f"{', '.join(sorted(rec.allocations))})", path="allocation")
        return found

    async def logs(self, args: LogsArgs) -> LogsView:
        """A chunk of an allocation's combined log from `offset`: from its provider while it
        runs, from the copy kept here once it ended (or when the provider does not answer)."""
        rec = self._record(args.id)
        a = self._allocation(rec, args.allocation)
        kept = self.kept_logs.find(f"{rec.id}/{a.name}")
        if kept is not None and not kept.truncated and a.status in ALLOCATION_ENDED:
            return _slice(a.name, kept, args.offset, args.limit)
        if a.handle is None:
            return LogsView(allocation=a.name, data=b"", next_offset=args.offset,
                            finished=a.status in ALLOCATION_ENDED)
        try:
            async with self._speaker(rec.id) as actor:
                chunk = decode(await actor.invoke(
                    a.handle, ALLOCATION_LOGS,
                    encode(LogsRequest(offset=args.offset, limit=args.limit)),
                    timeout=self.tuning.call_timeout_s, capability=CAPABILITY), LogsChunk)
        except NunetError:
            if kept is None:
                raise
            return _slice(a.name, kept, args.offset, args.limit)
        return LogsView(allocation=a.name, data=chunk.data, next_offset=chunk.next_offset,
                        finished=chunk.finished)

    async def results(self, args: ResultsArgs) -> ResultsView:
        """The output files of an allocation (`path` ""), or a chunk of one of them."""
        rec = self._record(args.id)
        a = self._allocation(rec, args.allocation)
        if a.handle is None:
            raise NotFound(f"allocation {a.name} of {rec.id} was never placed", path="allocation")
        async with self._speaker(rec.id) as actor:
            chunk = decode(await actor.invoke(
                a.handle, ALLOCATION_RESULTS,
                encode(ResultsRequest(path=args.path, offset=args.offset, limit=args.limit)),
                timeout=self.tuning.call_timeout_s, capability=CAPABILITY), ResultsChunk)
        return ResultsView(allocation=a.name, files=chunk.files, data=chunk.data,
                           next_offset=chunk.next_offset, eof=chunk.eof)

    @contextlib.asynccontextmanager
    async def _speaker(self, deployment_id: str) -> AsyncIterator[Actor]:
        """The deployment's orchestrator actor (providers answer only its key): the running
        one, or one spawned for the call once the deployment is finished. Held while in use,
        so a finishing orchestrator does not stop it under a call."""
        held = self._readers.get(deployment_id)
        if held is None:
            running = self.active.get(deployment_id)
            if running is not None and not running.actor.stopped:
                actor = running.actor
            else:
                actor = self._system().actor(deployment_id) or self._spawn(deployment_id)
            held = (actor, 0)
        self._readers[deployment_id] = (held[0], held[1] + 1)
        try:
            yield held[0]
        finally:
            actor, users = self._readers[deployment_id]
            if users > 1:
                self._readers[deployment_id] = (actor, users - 1)
            else:
                del self._readers[deployment_id]
                if deployment_id not in self.active:
                    await actor.stop()

    async def cache_log(self, actor: Actor, deployment_id: str, allocation: str,
                        handle: Handle) -> None:
        """Keep an ended allocation's log (up to MAX_CACHED_LOG bytes). The provider may still
        be copying the last lines when the end is reported: read until it says finished."""
        data = bytearray()
        finished = False
        idle = 0
        while len(data) < MAX_CACHED_LOG and idle < LOG_SETTLE_TRIES:
            try:
                chunk = decode(await actor.invoke(
                    handle, ALLOCATION_LOGS,
                    encode(LogsRequest(offset=len(data),
                                       limit=min(256 * 1024, MAX_CACHED_LOG - len(data)))),
                    timeout=self.tuning.call_timeout_s, capability=CAPABILITY), LogsChunk)
            except NunetError as exc:
                log.debug("logs of %s/%s not kept: %s", deployment_id, allocation, exc)
                break
            data += chunk.data
            finished = chunk.finished
            if finished:
                break
            if not chunk.data:
                idle += 1
                await asyncio.sleep(LOG_SETTLE_S)
        if not data and not finished:
            return
        record = CachedLog(data=bytes(data[:MAX_CACHED_LOG]), truncated=not finished)
        orchestrator = self.active.get(deployment_id)
        if orchestrator is None or not orchestrator.deleted:
            self.kept_logs.put(f"{deployment_id}/{allocation}", record, sync=False)


def _slice(allocation: str, kept: CachedLog, offset: int, limit: int) -> LogsView:
    end = min(len(kept.data), offset + limit)
    return LogsView(allocation=allocation, data=kept.data[offset:end],
                    next_offset=max(offset, end), finished=end >= len(kept.data))
