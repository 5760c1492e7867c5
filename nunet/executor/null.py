"""The null executor: the `Executor` protocol with no containers, for orchestration tests and
benchmarks. Each execution "runs" for a configurable time, prints configured output and exits
with a configured code; everything lives in memory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import msgspec

from nunet.errors import ExecutionExists, ExecutionFailed, ExecutionNotFound
from nunet.executor.api import (
    Availability,
    ExecutionResult,
    ExecutionSpec,
    ExecutionState,
    ExecutionStats,
    ExecutionStatus,
    FinalState,
    LogLine,
    ManagedExecution,
    Stream,
)


class NullBehaviour(msgspec.Struct, frozen=True):
    """What one execution does: sleeps `duration_s` (0: ends at once), writes `stdout` and
    `stderr`, exits with `exit_code`."""

    duration_s: float = 0.0
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


_DEFAULT = NullBehaviour()


def behaviour_of_command(spec: ExecutionSpec) -> NullBehaviour:
    """What a null execution does, read from its command (the node's null executor, for tests
    and benchmarks): `echo WORDS...` prints them, `sleep SECONDS` runs that long (`inf`: until
    stopped), `fail CODE WORDS...` exits with CODE and prints WORDS on stderr; anything else ends
    at once with exit code 0."""
    match spec.cmd:
        case ("echo", *words):
            return NullBehaviour(stdout=" ".join(words).encode() + b"\n")
        case ("sleep", seconds):
            with contextlib.suppress(ValueError):
                return NullBehaviour(duration_s=min(max(0.0, float(seconds)), 1e9))
        case ("fail", code, *words) if code.isdigit():
            return NullBehaviour(exit_code=int(code), stderr=" ".join(words).encode() + b"\n")
    return _DEFAULT


class _Execution:
    def __init__(self, spec: ExecutionSpec, behaviour: NullBehaviour) -> None:
        self.spec = spec
        self.behaviour = behaviour
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.cancelled = False
        self.done = asyncio.Event()
        self.logs: list[LogLine] = []
        self.task: asyncio.Task[None] | None = None


class NullExecutor:
    """`behaviour` decides per spec what an execution does (default: `NullBehaviour()`); it may
    raise a `NunetError` to make `start` fail. `available_reason` non-empty makes it unavailable."""

    name = "null"

    def __init__(
        self,
        behaviour: NullBehaviour | Callable[[ExecutionSpec], NullBehaviour] = _DEFAULT,
        *,
        available_reason: str = "",
    ) -> None:
        self._behaviour = behaviour
        self._available_reason = available_reason
        self._executions: dict[str, _Execution] = {}
        self.started = 0  # how many executions start() accepted, for tests and benchmarks

    def _get(self, execution_id: str) -> _Execution:
        try:
            return self._executions[execution_id]
        except KeyError:
            raise ExecutionNotFound(f"no execution {execution_id}") from None

    async def start(self, spec: ExecutionSpec) -> str:
        if spec.execution_id in self._executions:
            raise ExecutionExists(
                f"execution {spec.execution_id} exists already", path="execution_id"
            )
        behaviour = self._behaviour(spec) if callable(self._behaviour) else self._behaviour
        execution = _Execution(spec, behaviour)
        self._executions[spec.execution_id] = execution
        self.started += 1
        if behaviour.duration_s <= 0:
            self._finish(execution)
        else:
            execution.task = asyncio.create_task(self._run(execution))
        return spec.execution_id

    async def _run(self, execution: _Execution) -> None:
        await asyncio.sleep(execution.behaviour.duration_s)
        self._finish(execution)

    def _finish(self, execution: _Execution) -> None:
        now = time.time()
        b = execution.behaviour
        if not execution.cancelled:
            outputs: tuple[tuple[Stream, bytes], ...] = (("stdout", b.stdout), ("stderr", b.stderr))
            for stream, data in outputs:
                for line in data.splitlines(keepends=True):
                    execution.logs.append(LogLine(stream=stream, data=line, ts=now))
        execution.finished_at = now
        execution.done.set()

    def _result(self, execution: _Execution) -> ExecutionResult:
        b = execution.behaviour
        status: FinalState
        if execution.cancelled:
            status, code, reason = "cancelled", 137, "cancelled"
        elif b.exit_code == 0:
            status, code, reason = "completed", 0, "exit code 0"
        else:
            status, code, reason = "failed", b.exit_code, f"exit code {b.exit_code}"
        return ExecutionResult(
            execution_id=execution.spec.execution_id,
            status=status,
            exit_code=code,
            reason=reason,
            stderr_tail=b.stderr.decode("utf-8", "replace")[-4096:] if status == "failed" else "",
            started_at=execution.started_at,
            finished_at=execution.finished_at,
        )

    async def wait(self, execution_id: str) -> ExecutionResult:
        execution = self._get(execution_id)
        await execution.done.wait()
        return self._result(execution)

    async def cancel(self, execution_id: str, *, grace_s: float = 5.0) -> None:
        execution = self._get(execution_id)
        if execution.done.is_set():
            return
        execution.cancelled = True
        if execution.task is not None:
            execution.task.cancel()
        self._finish(execution)

    async def remove(self, execution_id: str) -> None:
        execution = self._executions.pop(execution_id, None)
        if execution is not None and execution.task is not None:
            execution.task.cancel()
            await asyncio.gather(execution.task, return_exceptions=True)

    async def logs(
        self, execution_id: str, *, follow: bool, stdout: bool = True, stderr: bool = True
    ) -> AsyncIterator[LogLine]:
        execution = self._get(execution_id)
        if follow:
            await execution.done.wait()
        wanted = {"stdout"} if stdout else set()
        if stderr:
            wanted.add("stderr")
        for line in execution.logs:
            if line.stream in wanted:
                yield line

    def _state(self, execution: _Execution) -> ExecutionState:
        if not execution.done.is_set():
            return "running"
        return self._result(execution).status

    async def status(self, execution_id: str) -> ExecutionStatus:
        execution = self._get(execution_id)
        if not execution.done.is_set():
            return ExecutionStatus(
                execution_id=execution_id, state="running", started_at=execution.started_at
            )
        result = self._result(execution)
        return ExecutionStatus(
            execution_id=execution_id,
            state=result.status,
            exit_code=result.exit_code,
            reason=result.reason,
            started_at=result.started_at,
            finished_at=result.finished_at,
        )

    async def stats(self, execution_id: str) -> ExecutionStats:
        execution = self._get(execution_id)
        return ExecutionStats(
            execution_id=execution_id,
            cpu_seconds=0.0,
            cpu_percent=0.0,
            memory_bytes=0,
            memory_limit_bytes=execution.spec.resources.memory_bytes,
            pids=0 if execution.done.is_set() else 1,
        )

    async def exec(self, execution_id: str, cmd: tuple[str, ...]) -> tuple[int, bytes]:
        execution = self._get(execution_id)
        if not cmd:
            raise ExecutionFailed("exec needs a command", path="cmd")
        if execution.done.is_set():
            raise ExecutionFailed(f"exec in {execution_id} failed: it is not running")
        return 0, b""

    async def list_managed(self) -> list[ManagedExecution]:
        return [
            ManagedExecution(
                execution_id=eid,
                deployment_id=e.spec.deployment_id,
                allocation=e.spec.allocation,
                state=self._state(e),
                image=e.spec.image,
                backend_id=eid,
            )
            for eid, e in self._executions.items()
        ]

    async def available(self) -> Availability:
        if self._available_reason:
            return Availability(ok=False, reason=self._available_reason)
        return Availability(ok=True, version="null")

    async def close(self) -> None:
        for execution in self._executions.values():
            if execution.task is not None:
                execution.task.cancel()
        tasks = [e.task for e in self._executions.values() if e.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
