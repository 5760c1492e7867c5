"""What every executor offers (`Executor`) and the values it speaks in.

An execution is one container (or one fake, for the null executor) started from an
`ExecutionSpec`. Its id is chosen by the caller (the allocation), so that a node restarted
mid-deployment finds its executions again by id and by label (`list_managed`).
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Literal, Protocol, runtime_checkable

import msgspec

from nunet.errors import ValidationError

# Labels on every container we start: how a restarted node recognises its own.
LABEL_DEPLOYMENT = "nunet.deployment"
LABEL_ALLOCATION = "nunet.allocation"
LABEL_EXECUTION = "nunet.execution"
LABEL_DISK_LIMIT = "nunet.disk-limit"
RESERVED_LABEL_PREFIX = "nunet."

MIN_MEMORY_BYTES = 6 << 20  # the engine refuses less
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ENV_KEY = re.compile(r"[^=\x00]+")

ExecutionState = Literal["pending", "running", "completed", "failed", "cancelled"]
FinalState = Literal["completed", "failed", "cancelled"]
Stream = Literal["stdout", "stderr"]
NetworkMode = Literal["bridge", "none", "host"]


class ResourceLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Hard limits; 0 means "no limit" (cpu, memory, disk) or "none" (gpus)."""

    cpu_cores: float = 0.0
    memory_bytes: int = 0
    disk_bytes: int = 0
    gpus: int = 0
    gpu_vendor: str = "nvidia"


class Mount(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host_path: str
    container_path: str
    read_only: bool = False


class PortMapping(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host_port: int
    container_port: int
    protocol: Literal["tcp", "udp"] = "tcp"


class RegistryAuth(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: str
    password: str
    server: str = ""


class ExecutionSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything an executor needs to run one allocation. Checked on construction and decode:
    a bad field raises `ValidationError` naming it."""

    execution_id: str
    image: str
    deployment_id: str = ""
    allocation: str = ""
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None  # None: the image's own
    environment: dict[str, str] = {}
    working_directory: str = ""
    resources: ResourceLimits = ResourceLimits()
    mounts: tuple[Mount, ...] = ()
    labels: dict[str, str] = {}
    network_mode: NetworkMode = "bridge"
    ports: tuple[PortMapping, ...] = ()
    pids_limit: int = 1024  # a fork bomb in a job must not exhaust the host
    registry_auth: RegistryAuth | None = None

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.execution_id):
            raise ValidationError(
                f"must match {_ID.pattern}, got {self.execution_id!r}", path="execution_id"
            )
        if not self.image or any(c.isspace() for c in self.image):
            raise ValidationError(f"must be an image reference, got {self.image!r}", path="image")
        if self.working_directory and not self.working_directory.startswith("/"):
            raise ValidationError("must be an absolute path", path="working_directory")
        for key in self.environment:
            if not _ENV_KEY.fullmatch(key):
                raise ValidationError(f"bad variable name {key!r}", path="environment")
        for key in self.labels:
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValidationError(f"{key!r}: the nunet. prefix is reserved", path="labels")
        if self.pids_limit < 1:
            raise ValidationError(f"must be >= 1, got {self.pids_limit}", path="pids_limit")
        _check_resources(self.resources)
        for i, m in enumerate(self.mounts):
            for name in ("host_path", "container_path"):
                if not getattr(m, name).startswith("/"):
                    raise ValidationError("must be an absolute path", path=f"mounts[{i}].{name}")
            if m.container_path.rstrip("/") == "":
                raise ValidationError("cannot mount over /", path=f"mounts[{i}].container_path")
        for i, p in enumerate(self.ports):
            for name in ("host_port", "container_port"):
                if not 1 <= getattr(p, name) <= 65535:
                    raise ValidationError("must be in 1..65535", path=f"ports[{i}].{name}")
        if self.ports and self.network_mode != "bridge":
            raise ValidationError(
                f"ports need network_mode bridge, not {self.network_mode}", path="ports"
            )


def _check_resources(r: ResourceLimits) -> None:
    if not (math.isfinite(r.cpu_cores) and r.cpu_cores >= 0):
        raise ValidationError(
            f"must be finite and >= 0, got {r.cpu_cores}", path="resources.cpu_cores"
        )
    if r.memory_bytes < 0 or 0 < r.memory_bytes < MIN_MEMORY_BYTES:
        raise ValidationError(
            f"must be 0 (no limit) or >= {MIN_MEMORY_BYTES}, got {r.memory_bytes}",
            path="resources.memory_bytes",
        )
    if r.disk_bytes < 0:
        raise ValidationError(f"must be >= 0, got {r.disk_bytes}", path="resources.disk_bytes")
    if r.gpus < 0:
        raise ValidationError(f"must be >= 0, got {r.gpus}", path="resources.gpus")


class ExecutionStatus(msgspec.Struct, frozen=True):
    execution_id: str
    state: ExecutionState
    exit_code: int | None = None
    reason: str = ""
    started_at: float | None = None  # unix seconds
    finished_at: float | None = None


class ExecutionResult(msgspec.Struct, frozen=True):
    """How an execution ended. `reason` says why in words ("exit code 3", "OOM killed (memory
    limit 64 MiB)", "disk limit exceeded (12 MiB > 10 MiB)", "cancelled"); `stderr_tail` holds the
    last lines of stderr when it failed."""

    execution_id: str
    status: FinalState
    exit_code: int | None
    reason: str
    stderr_tail: str = ""
    started_at: float | None = None
    finished_at: float | None = None


class ExecutionStats(msgspec.Struct, frozen=True):
    execution_id: str
    cpu_seconds: float  # CPU time used since start
    cpu_percent: float  # over the engine's last sampling interval; 100 = one core
    memory_bytes: int
    memory_limit_bytes: int
    pids: int


class LogLine(msgspec.Struct, frozen=True):
    """One log record as written by the process, trailing newline included."""

    stream: Stream
    data: bytes
    ts: float  # unix seconds, from the engine


class ManagedExecution(msgspec.Struct, frozen=True):
    """An execution found on the engine by its labels (reconciliation after a restart)."""

    execution_id: str
    deployment_id: str
    allocation: str
    state: ExecutionState
    image: str
    backend_id: str  # the container id


class Availability(msgspec.Struct, frozen=True):
    """Whether an executor can run executions here, and if not, why."""

    ok: bool
    reason: str = ""
    version: str = ""
    disk_quota: bool | None = None  # the engine enforces disk limits itself (None: unknown)
    gpu_runtime: bool = False


@runtime_checkable
class Executor(Protocol):
    """Runs executions. Errors are `nunet.errors.ExecutorError` subclasses: `ImageNotFound`,
    `ExecutionNotFound`, `ExecutionExists`, `ExecutionFailed`, `GPUUnavailable`,
    `ExecutorUnavailable`."""

    name: str

    async def start(self, spec: ExecutionSpec) -> str:
        """Creates and starts the execution; returns its id (`spec.execution_id`)."""
        ...

    async def wait(self, execution_id: str) -> ExecutionResult:
        """Until the execution ends; may be called by several waiters and after it ended."""
        ...

    async def cancel(self, execution_id: str, *, grace_s: float = 5.0) -> None:
        """SIGTERM, SIGKILL after `grace_s`; the result says cancelled. No-op once ended."""
        ...

    async def remove(self, execution_id: str) -> None:
        """Kills if needed and deletes everything the execution left; no-op when gone."""
        ...

    def logs(
        self, execution_id: str, *, follow: bool, stdout: bool = True, stderr: bool = True
    ) -> AsyncIterator[LogLine]:
        """Logs so far; with `follow`, then live lines until the execution ends."""
        ...

    async def status(self, execution_id: str) -> ExecutionStatus: ...

    async def stats(self, execution_id: str) -> ExecutionStats: ...

    async def exec(self, execution_id: str, cmd: tuple[str, ...]) -> tuple[int, bytes]:
        """Runs `cmd` inside the running execution; (exit code, stdout and stderr)."""
        ...

    async def list_managed(self) -> list[ManagedExecution]: ...

    async def available(self) -> Availability: ...

    async def close(self) -> None: ...
