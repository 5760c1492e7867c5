"""The Allocation actor: one allocation of a deployment, running on this provider.

A child of the provider's root actor with its own key and the inbox `alloc/<deployment>/<name>`.
Only the deployment's orchestrator (its actor or its host node) may talk to it. Behaviours
(capability `/dms/deployment`): ALLOCATION_START, ALLOCATION_SHUTDOWN, ALLOCATION_LOGS,
ALLOCATION_RESULTS, ALLOCATION_INFO.

Life of one allocation (every status change goes through `advance_allocation`, is persisted in
the store (`alloc/<deployment>/<name>`) and reported to the orchestrator, in order):
1. pending: created by ALLOCATE with its share of the node's resources allocated.
2. START: its S3 inputs are staged and output directories prepared, the execution starts on its
   executor (limits, env, mounts, ports, labels), its log is copied to a bounded file as it is
   written. running: once started, or for an allocation with a command health check once the
   first check passes.
3. It ends: exit 0 -> completed (outputs uploaded first; a failed upload fails it), another exit
   -> failed with the executor's reason (exit code, OOM, disk limit) and the stderr tail, a health
   check failing `health_retries` times in a row (or never passing within the start period) ->
   failed, SHUTDOWN -> stopped. `failure_recovery: restart` restarts a failed allocation here,
   at most `max_restarts` times, with backoff; other policies are the orchestrator's (it may
   START a failed or stopped allocation again while the actor lingers).
4. Before the last status is reported, the container is removed and the resources released.
   The actor then lingers `linger_s` (logs, results and info still served), then stops; the
   files stay on disk until the deployment is deleted.

If the provider process stops, the containers keep running; on start it re-adopts them with new
actors (`adopt`), which report (with their new handle) and watch them to the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import msgspec

from nunet.actor.handle import Handle
from nunet.actor.runtime import Actor, Message
from nunet.db.repository import Repository
from nunet.errors import CapabilityError, NunetError
from nunet.executor.api import (
    ExecutionResult,
    ExecutionSpec,
    Executor,
    Mount,
    PortMapping,
    ResourceLimits,
)
from nunet.jobs.lifecycle import ALLOCATION_ENDED, AllocationStatus, advance_allocation
from nunet.jobs.protocol import (
    ALLOCATION_INFO,
    ALLOCATION_LOGS,
    ALLOCATION_RESULTS,
    ALLOCATION_SHUTDOWN,
    ALLOCATION_START,
    ALLOCATION_STATUS,
    CAPABILITY,
    AllocationReport,
    LogsChunk,
    LogsRequest,
    ResultsChunk,
    ResultsRequest,
    decode,
    encode,
)
from nunet.jobs.spec import Allocation, HealthCheck, Volume
from nunet.jobs.workdir import LogFiles, allocation_dir, list_results, read_result
from nunet.node.onboarding import Onboarding
from nunet.node.resources import Resources
from nunet.storage.api import VolumeSpec, open_volume, volumes_dir
from nunet.storage.staging import collect_outputs, prepare_outputs, stage_inputs

log = logging.getLogger("nunet.jobs.allocation")
T = TypeVar("T")

NAMESPACE = "alloc"
NULL_IMAGE = "null"  # what a null-executor allocation without an image runs
STDERR_IN_REASON = 1024
LOG_DRAIN_S = 5.0  # after the execution ends, how long its log may take to arrive
MAX_BACKOFF_S = 30.0


class AllocationSettings(msgspec.Struct, frozen=True, kw_only=True):
    linger_s: float = 600.0  # after the end: logs, results and info still served by the actor
    stop_grace_s: float = 5.0  # SIGTERM -> SIGKILL on shutdown
    max_restarts: int = 3  # failure_recovery: restart
    restart_backoff_s: float = 1.0  # doubled per restart, at most MAX_BACKOFF_S
    health_interval_s: float = 10.0  # when the health check gives none
    health_timeout_s: float = 10.0
    health_retries: int = 3  # failed checks in a row after the first pass
    health_start_period_s: float = 60.0  # to pass the first check
    log_max_bytes: int = 16 << 20  # per log file


class AllocationRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the provider persists per allocation (namespace `alloc`, id `<deployment>/<name>`)."""

    deployment_id: str
    name: str
    node: str  # the ensemble node it belongs to
    orchestrator: Handle
    provider: str  # this node's DID
    spec: Allocation
    resources: Resources  # its share of the node's allocated resources
    holds_resources: bool = True  # not yet given back to onboarding
    ports: tuple[PortMapping, ...] = ()
    status: AllocationStatus = AllocationStatus.PENDING
    attempt: int = 0
    execution_id: str = ""  # the current (or last) execution; "" = none started yet
    restarts: int = 0
    exit_code: int | None = None
    reason: str = ""
    log_base: tuple[int, int, int] = (0, 0, 0)  # log sizes when the current execution began
    created_at: float
    updated_at: float

    @property
    def id(self) -> str:
        return record_id(self.deployment_id, self.name)


def record_id(deployment_id: str, name: str) -> str:
    return f"{deployment_id}/{name}"


def inbox_of(deployment_id: str, name: str) -> str:
    return f"alloc/{deployment_id}/{name}"


@dataclass(frozen=True)
class AllocationEnv:
    """What an allocation actor uses from its provider."""

    executor: Executor
    repo: Repository[AllocationRecord]
    onboarding: Onboarding
    work_dir: Path
    settings: AllocationSettings
    clock: Callable[[], float]
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
    execution_id: Callable[[AllocationRecord], str]  # a new execution id for the next attempt
    reclaim: Callable[[AllocationRecord], None]  # its resources again, for a restart; or raises
    on_closed: Callable[[AllocationActor], None]


class _Outcome(NamedTuple):
    event: str  # the lifecycle event: exit_ok, fail, stop
    exit_code: int | None = None
    reason: str = ""


class AllocationActor:
    def __init__(self, actor: Actor, record: AllocationRecord, env: AllocationEnv) -> None:
        self.actor = actor
        self.record = record
        self.env = env
        self.dir = allocation_dir(env.work_dir, record.deployment_id, record.name)
        self.logs = LogFiles(self.dir / "logs", env.settings.log_max_bytes)
        self._task: asyncio.Task[None] | None = None
        self.ended_at: float | None = None  # when it last ended; the provider closes it later
        self._stop = asyncio.Event()
        self._health_failure = ""
        self._capturing = False
        self.closed = False
        for name, handler in (
            (ALLOCATION_START, self._on_start),
            (ALLOCATION_SHUTDOWN, self._on_shutdown),
            (ALLOCATION_LOGS, self._on_logs),
            (ALLOCATION_RESULTS, self._on_results),
            (ALLOCATION_INFO, self._on_info),
        ):
            actor.add_behavior(name, handler, capability=CAPABILITY)
        # Reports go out in order from one task, started when there is something to send: an
        # ended allocation lingering for its logs holds no task.
        self._outbox: deque[AllocationReport] = deque()
        self._sender: asyncio.Task[None] | None = None

    # --- state -----------------------------------------------------------------------------

    @property
    def handle(self) -> Handle:
        return self.actor.handle

    @property
    def status(self) -> AllocationStatus:
        return self.record.status

    @property
    def busy(self) -> bool:
        """Whether a run (start, watch, restart, clean-up) is in progress."""
        return self._task is not None and not self._task.done()

    def report(self) -> AllocationReport:
        r = self.record
        return AllocationReport(
            deployment_id=r.deployment_id, allocation=r.name, node=r.node, provider=r.provider,
            status=r.status.value, exit_code=r.exit_code, reason=r.reason, at=r.updated_at,
            handle=self.handle,
        )

    def _save(self, **changes: Any) -> None:
        # In the WAL before the report leaves (a killed provider re-adopts from it); fsynced by
        # the store's group commit, off the event loop.
        self.record = msgspec.structs.replace(self.record, updated_at=self.env.clock(), **changes)
        self.env.repo.put(self.record.id, self.record, sync=False)

    def _transition(self, event: str, *, exit_code: int | None = None, reason: str = "") -> None:
        status = advance_allocation(self.status, event)
        self._save(status=status, exit_code=exit_code, reason=reason)
        self._tell()

    def _tell(self) -> None:
        self._outbox.append(self.report())
        if self._sender is None or self._sender.done():
            self._sender = self.env.spawn(self._send_reports())

    async def _send_reports(self) -> None:
        while self._outbox:
            report = self._outbox.popleft()
            try:
                await self.actor.send(self.record.orchestrator, ALLOCATION_STATUS, encode(report))
            except NunetError as exc:  # the orchestrator is gone or unreachable: it can ask
                log.info("allocation %s: status report not delivered: %s", self.record.id, exc)

    # --- behaviours ------------------------------------------------------------------------

    def _check_caller(self, message: Message) -> None:
        orchestrator = self.record.orchestrator
        if message.sender not in (orchestrator.did, orchestrator.address.host_id):
            raise CapabilityError(
                f"only the orchestrator of deployment {self.record.deployment_id} may do this"
            )

    def _on_start(self, message: Message) -> bytes:
        self._check_caller(message)
        if self.busy or self.status == AllocationStatus.RUNNING:
            return encode(self.report())
        if self.status != AllocationStatus.PENDING:
            # The orchestrator restarting an ended allocation (its failure policy); a completed
            # or terminated one cannot be (IllegalTransition).
            advance_allocation(self.status, "restart")
            if not self.record.holds_resources:
                self.env.reclaim(self.record)
                self._save(holds_resources=True)
            self.ended_at = None
            self._transition("restart")
        self._stop.clear()
        self._task = self.env.spawn(self._run(adopt=False))
        return encode(self.report())

    async def _on_shutdown(self, message: Message) -> bytes:
        self._check_caller(message)
        self._stop.set()
        if self.status == AllocationStatus.PENDING and not self.busy:
            self._task = self.env.spawn(self._finish(_Outcome("stop", None, "stopped on request")))
        elif self.busy and self.record.execution_id:
            try:
                await self.env.executor.cancel(
                    self.record.execution_id, grace_s=self.env.settings.stop_grace_s
                )
            except NunetError as exc:  # already gone: the watcher sees that
                log.info("allocation %s: cancel: %s", self.record.id, exc)
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self.env.settings.stop_grace_s + 30.0)
        return encode(self.report())

    def _on_logs(self, message: Message) -> bytes:
        self._check_caller(message)
        request = decode(message.payload, LogsRequest) if message.payload else LogsRequest()
        data, size = self.logs.read(request.stream, request.offset, request.limit)
        next_offset = max(0, request.offset) + len(data)
        ended = self.status in ALLOCATION_ENDED and not self.busy and not self._capturing
        return encode(LogsChunk(data=data, next_offset=next_offset,
                                finished=ended and next_offset >= size))

    async def _on_results(self, message: Message) -> bytes:
        self._check_caller(message)
        request = decode(message.payload, ResultsRequest) if message.payload \
            else ResultsRequest()
        roots = self.result_roots()
        if not request.path:
            files, next_offset, complete = await asyncio.to_thread(
                list_results, roots, request.offset)
            return encode(ResultsChunk(files=files, next_offset=next_offset, eof=complete))
        data, next_offset, eof = await asyncio.to_thread(
            read_result, roots, request.path, request.offset, request.limit)
        return encode(ResultsChunk(data=data, next_offset=next_offset, eof=eof))

    def _on_info(self, message: Message) -> bytes:
        self._check_caller(message)
        return encode(self.report())

    # --- running ---------------------------------------------------------------------------

    def adopt(self) -> None:
        """Watch the execution an earlier provider process started (reconciliation)."""
        self._tell()  # the orchestrator learns the new handle
        self._task = self.env.spawn(self._run(adopt=True))

    async def _run(self, adopt: bool) -> None:
        try:
            outcome = await (self._watch(adopted=True) if adopt else self._attempt())
            while outcome.event == "fail" and self._may_restart():
                await self._retire()
                self._transition("fail", exit_code=outcome.exit_code, reason=outcome.reason)
                self._save(restarts=self.record.restarts + 1)
                self._transition("restart", reason=f"restart {self.record.restarts} after: "
                                                   f"{outcome.reason}")
                backoff = self.env.settings.restart_backoff_s * 2 ** (self.record.restarts - 1)
                if await self._stopped_within(min(backoff, MAX_BACKOFF_S)):
                    outcome = _Outcome("stop", None, "stopped on request")
                    break
                outcome = await self._attempt()
            await self._finish(outcome)
        except NunetError as exc:  # the store or the engine failed under us: record it if we can
            log.error("allocation %s: %s", self.record.id, exc)
            if self.status not in ALLOCATION_ENDED:
                await self._finish(_Outcome("fail", None, f"provider error: {exc}"))

    def _may_restart(self) -> bool:
        return (self.record.spec.failure_recovery == "restart" and not self._stop.is_set()
                and self.record.restarts < self.env.settings.max_restarts)

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True

    async def _attempt(self) -> _Outcome:
        record = msgspec.structs.replace(self.record, attempt=self.record.attempt + 1)
        self._save(attempt=record.attempt, execution_id=self.env.execution_id(record),
                   log_base=self.logs.sizes())
        self._health_failure = ""
        try:
            mounts = await self._unless_stopped(self._prepare_volumes())
            if mounts is None:
                return _Outcome("stop", None, "stopped on request")
            spec = self._execution_spec(mounts)
            await self.env.executor.start(spec)
        except NunetError as exc:
            return _Outcome("fail", None, f"could not start: {exc}")
        return await self._watch(adopted=False)

    async def _unless_stopped(self, work: Coroutine[Any, Any, T]) -> T | None:
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return None if task.cancelled() else task.result()

    async def _watch(self, *, adopted: bool) -> _Outcome:
        eid = self.record.execution_id
        executor = self.env.executor
        if adopted:
            self.logs.truncate(self.record.log_base)
        capture = asyncio.ensure_future(self._capture_logs(eid))
        health = None
        check = self.record.spec.healthcheck
        if check is not None:
            health = asyncio.ensure_future(self._health(eid, check))
        elif self.status == AllocationStatus.PENDING:
            self._transition("start")
        try:
            try:
                if self._stop.is_set():  # a shutdown that came while it was starting
                    await executor.cancel(eid, grace_s=self.env.settings.stop_grace_s)
                result: ExecutionResult | None = await executor.wait(eid)
                lost = ""
            except NunetError as exc:
                result, lost = None, f"execution lost: {exc}"
            finally:
                if health is not None:
                    health.cancel()
                    await asyncio.gather(health, return_exceptions=True)
            try:  # the rest of its log, which the engine may still be sending
                async with asyncio.timeout(LOG_DRAIN_S):
                    await asyncio.shield(capture)
            except TimeoutError:
                capture.cancel()
        except asyncio.CancelledError:  # the provider stops: the execution runs on
            capture.cancel()
            raise
        code = None if result is None else result.exit_code
        if self._stop.is_set():
            return _Outcome("stop", code, "stopped on request")
        if self._health_failure:
            return _Outcome("fail", code, self._health_failure)
        if result is None:
            return _Outcome("fail", None, lost)
        if result.status == "completed":
            if self.status == AllocationStatus.PENDING:
                self._transition("start")  # ended before its first health check passed
            return _Outcome("exit_ok", result.exit_code, result.reason)
        return _Outcome("fail", result.exit_code, failure_reason(result))

    async def _capture_logs(self, eid: str) -> None:
        self._capturing = True
        try:
            async for line in self.env.executor.logs(eid, follow=True):
                self.logs.write(line.stream, line.data)
        except NunetError as exc:
            log.info("allocation %s: log capture ended: %s", self.record.id, exc)
        finally:
            self._capturing = False
            self.logs.close()  # open only while capturing: an idle allocation holds no fds

    async def _health(self, eid: str, check: HealthCheck) -> None:
        settings = self.env.settings
        interval = check.interval or settings.health_interval_s
        began = self.env.clock()
        passed = self.status == AllocationStatus.RUNNING  # re-adopted after it passed
        misses = 0
        while True:
            ok, detail = await self._check(eid, check)
            if ok:
                misses = 0
                if not passed:
                    passed = True
                    if self.status == AllocationStatus.PENDING:
                        self._transition("start")
            elif passed:
                misses += 1
                if misses >= settings.health_retries:
                    break
            elif self.env.clock() - began >= settings.health_start_period_s:
                detail = f"{detail} (never passed within {settings.health_start_period_s:g} s)"
                break
            await asyncio.sleep(interval if passed else min(interval, 0.5))
        self._health_failure = f"health check failed: {detail}"
        try:
            await self.env.executor.cancel(eid, grace_s=settings.stop_grace_s)
        except NunetError as exc:
            log.info("allocation %s: cancel after health failure: %s", self.record.id, exc)

    async def _check(self, eid: str, check: HealthCheck) -> tuple[bool, str]:
        command = " ".join(check.exec)
        try:
            async with asyncio.timeout(self.env.settings.health_timeout_s):
                code, output = await self.env.executor.exec(eid, check.exec)
        except TimeoutError:
            return False, f"`{command}` timed out"
        except NunetError as exc:
            return False, f"`{command}`: {exc}"
        if code != 0:
            return False, f"`{command}` exited with {code}"
        if check.response is not None and check.response.value not in output.decode(
                "utf-8", "replace"):
            return False, f"`{command}` did not answer {check.response.value!r}"
        return True, ""

    async def _finish(self, outcome: _Outcome) -> None:
        """Outputs (after success), container and resources, then the last status."""
        if outcome.event == "exit_ok":
            try:
                await self._collect_outputs()
            except NunetError as exc:
                outcome = _Outcome("fail", outcome.exit_code, f"uploading outputs failed: {exc}")
        await self._retire()
        self._release()
        self._transition(outcome.event, exit_code=outcome.exit_code, reason=outcome.reason)
        self.ended_at = self.env.clock()

    async def _retire(self) -> None:
        eid = self.record.execution_id
        if not eid:
            return
        try:
            await self.env.executor.remove(eid)
        except NunetError as exc:
            log.warning("allocation %s: removing execution %s: %s", self.record.id, eid, exc)

    def _release(self) -> None:
        if not self.record.holds_resources:
            return
        try:
            self.env.onboarding.release(self.record.resources)
        except NunetError as exc:  # offboarded meanwhile: nothing is allocated any more
            log.warning("allocation %s: releasing resources: %s", self.record.id, exc)
        self._save(holds_resources=False)

    def lingered(self, now: float) -> bool:
        """Ended more than `linger_s` ago and not started again: time to close it."""
        return (self.ended_at is not None and not self.busy
                and now - self.ended_at >= self.env.settings.linger_s)

    async def close(self) -> None:
        """Stop the actor (its files stay). The execution, if any, is left alone."""
        if self.closed:
            return
        self.closed = True
        sender = self._sender
        if sender is not None and not sender.done():  # let the last reports go first
            await asyncio.wait({sender}, timeout=5.0)
            sender.cancel()
        self.logs.close()
        await self.actor.stop()
        self.env.on_closed(self)

    # --- volumes and the execution spec ----------------------------------------------------

    def _volumes(self, kind: str) -> list[tuple[Volume, VolumeSpec]]:
        """`local`, `input` (S3 to download) or `output` (S3 to upload) volumes."""
        out = []
        for v in self.record.spec.volume:
            if v.type == "local" or kind == "local":
                if v.type == kind:
                    out.append((v, VolumeSpec(type="local", name=v.name)))
                continue
            if (v.direction == "output") != (kind == "output"):
                continue
            out.append((v, VolumeSpec(
                type="s3", name=v.name, bucket=v.bucket, prefix=v.key or v.prefix or "",
                endpoint_url=v.endpoint, region=v.region, read_only=kind == "input",
            )))
        return out

    def _local_root(self) -> Path:
        return volumes_dir(self.env.work_dir, self.record.deployment_id)

    def result_roots(self) -> dict[str, Path]:
        """Where its outputs are: S3 output directories and its writable local volumes."""
        roots = {v.name: self.dir / "outputs" / v.name for v, _ in self._volumes("output")}
        for v, _ in self._volumes("local"):
            if not v.read_only:
                roots[v.name] = self._local_root() / v.name
        return roots

    async def _prepare_volumes(self) -> list[Mount]:
        mounts: list[Mount] = []
        for v, spec in self._volumes("local"):
            async with open_volume(spec, base_dir=self._local_root()) as volume:
                await volume.create()
            mounts.append(_mount(self._local_root() / v.name, v, v.read_only))
        inputs = self._volumes("input")
        if inputs:
            opened = [open_volume(spec, base_dir=self._local_root()) for _, spec in inputs]
            try:
                await stage_inputs(opened, self.dir / "inputs")
            finally:
                for volume in opened:
                    await volume.close()
            mounts += [_mount(self.dir / "inputs" / v.name, v, v.read_only) for v, _ in inputs]
        outputs = self._volumes("output")
        if outputs:
            opened = [open_volume(spec, base_dir=self._local_root()) for _, spec in outputs]
            dirs = await prepare_outputs(opened, self.dir / "outputs")
            mounts += [_mount(dirs[v.name], v, False) for v, _ in outputs]
        return mounts

    async def _collect_outputs(self) -> None:
        outputs = self._volumes("output")
        if not outputs:
            return
        opened = [open_volume(spec, base_dir=self._local_root()) for _, spec in outputs]
        try:
            await collect_outputs(self.dir / "outputs", opened)
        finally:
            for volume in opened:
                await volume.close()

    def _execution_spec(self, mounts: list[Mount]) -> ExecutionSpec:
        r = self.record
        execution = r.spec.execution
        want = r.spec.resources
        gpus = r.resources.gpus
        return ExecutionSpec(
            execution_id=r.execution_id,
            image=execution.image or NULL_IMAGE,
            deployment_id=r.deployment_id,
            allocation=r.name,
            cmd=execution.cmd,
            entrypoint=execution.entrypoint or None,
            environment=execution.env(),
            working_directory=execution.working_directory or "",
            resources=ResourceLimits(
                cpu_cores=want.cpu.cores, memory_bytes=want.ram.bytes,
                disk_bytes=want.disk.bytes, gpus=len(gpus),
                gpu_vendor=gpus[0].vendor.lower() if gpus else "nvidia",
            ),
            mounts=tuple(mounts),
            labels={"org.nunet.provider": r.provider, "org.nunet.node": r.node},
            ports=r.ports,
        )


def _mount(host: Path, volume: Volume, read_only: bool) -> Mount:
    return Mount(host_path=str(host.resolve()), container_path=volume.mountpoint,
                 read_only=read_only)


def failure_reason(result: ExecutionResult) -> str:
    """The executor's reason ("exit code 3", "OOM killed (memory limit 64 MiB)") with the end of
    stderr, which usually says what went wrong."""
    tail = result.stderr_tail.strip()
    if not tail:
        return result.reason
    return f"{result.reason}; stderr: {tail[-STDERR_IN_REASON:]}"
