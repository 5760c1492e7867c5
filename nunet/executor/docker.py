"""The Docker executor: one container per execution, on the real engine through aiodocker.

Containers are named `nunet-<execution id>` and labelled (`nunet.deployment`, `nunet.allocation`,
`nunet.execution`) so a restarted node finds them again. Limits: NanoCPUs, Memory with
MemorySwap equal to it (no escape into swap), PidsLimit; disk through the storage driver's quota
(`StorageOpt size`) where it has one, otherwise a watcher polls the writable layer's size and
kills the container when it is over. aiodocker is imported on first use: an idle node that never
runs a container does not load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nunet.errors import (
    ExecutionExists,
    ExecutionFailed,
    ExecutionNotFound,
    ExecutorError,
    ExecutorUnavailable,
    GPUUnavailable,
    ImageNotFound,
    NunetError,
)
from nunet.executor.api import (
    LABEL_ALLOCATION,
    LABEL_DEPLOYMENT,
    LABEL_DISK_LIMIT,
    LABEL_EXECUTION,
    Availability,
    ExecutionResult,
    ExecutionSpec,
    ExecutionState,
    ExecutionStats,
    ExecutionStatus,
    FinalState,
    LogLine,
    ManagedExecution,
)

if TYPE_CHECKING:
    import aiodocker
    from aiodocker.containers import DockerContainer

log = logging.getLogger("nunet.executor")

NAME_PREFIX = "nunet-"
_FRAME_HEADER = struct.Struct(">BxxxL")
_STREAMS: dict[int, Any] = {1: "stdout", 2: "stderr"}
_NO_SPACE = "No space left on device"
_CONNECT_FAILED = 900  # aiodocker's status for "cannot connect to the engine"


def container_name(execution_id: str) -> str:
    return NAME_PREFIX + execution_id


def human_bytes(n: int) -> str:
    """64 MiB, 1.5 GiB, 512 KiB, 100 B: for reasons people read."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"


def parse_engine_time(text: str | None) -> float | None:
    """The engine's RFC 3339 UTC times (nanosecond fractions) as unix seconds; its zero time
    ("0001-01-01T00:00:00Z", never started) as None."""
    if not text or text.startswith("0001-"):
        return None
    main, _, frac = text.removesuffix("Z").partition(".")
    try:
        secs = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        return secs + (float("0." + frac) if frac.isdigit() else 0.0)
    except ValueError:
        return None


def container_config(spec: ExecutionSpec, *, quota: bool, log_max_bytes: int) -> dict[str, Any]:
    """The engine's create body for `spec`; `quota` asks the storage driver to cap the disk."""
    r = spec.resources
    labels = {
        **spec.labels,
        LABEL_DEPLOYMENT: spec.deployment_id,
        LABEL_ALLOCATION: spec.allocation,
        LABEL_EXECUTION: spec.execution_id,
    }
    if r.disk_bytes:
        labels[LABEL_DISK_LIMIT] = str(r.disk_bytes)
    host: dict[str, Any] = {
        "NetworkMode": spec.network_mode,
        "PidsLimit": spec.pids_limit,
        "LogConfig": {
            "Type": "json-file",
            "Config": {"max-size": str(log_max_bytes // 2), "max-file": "2"},
        },
    }
    if r.cpu_cores:
        host["NanoCpus"] = round(r.cpu_cores * 1e9)
    if r.memory_bytes:
        host["Memory"] = r.memory_bytes
        host["MemorySwap"] = r.memory_bytes
    if r.disk_bytes and quota:
        host["StorageOpt"] = {"size": str(r.disk_bytes)}
    if r.gpus:
        host["DeviceRequests"] = [{"Driver": "nvidia", "Count": r.gpus, "Capabilities": [["gpu"]]}]
    if spec.mounts:
        host["Mounts"] = [
            {
                "Type": "bind",
                "Source": m.host_path,
                "Target": m.container_path,
                "ReadOnly": m.read_only,
            }
            for m in spec.mounts
        ]
    config: dict[str, Any] = {
        "Image": spec.image,
        "Labels": labels,
        "Env": [f"{k}={v}" for k, v in spec.environment.items()],
        "HostConfig": host,
    }
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)
    if spec.entrypoint is not None:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.working_directory:
        config["WorkingDir"] = spec.working_directory
    if spec.ports:
        config["ExposedPorts"] = {f"{p.container_port}/{p.protocol}": {} for p in spec.ports}
        host["PortBindings"] = {
            f"{p.container_port}/{p.protocol}": [{"HostPort": str(p.host_port)}] for p in spec.ports
        }
    return config


def classify_exit(
    state: Mapping[str, Any],
    *,
    memory_limit: int,
    cancelled: bool,
    disk_reason: str,
    disk_quota: int,
    stderr_tail: str,
) -> tuple[FinalState, str]:
    """Why an ended container ended, from its inspected `State`, most telling cause first: our
    disk watcher, a cancel, the kernel's OOM killer, the storage quota, then the exit code."""
    code = int(state.get("ExitCode", -1))
    if disk_reason:
        return "failed", disk_reason
    if cancelled:
        return "cancelled", "cancelled"
    if state.get("OOMKilled"):
        limit = f" (memory limit {human_bytes(memory_limit)})" if memory_limit else ""
        return "failed", f"OOM killed{limit}"
    if code == 0:
        return "completed", "exit code 0"
    if disk_quota and _NO_SPACE in stderr_tail:
        return "failed", f"disk limit exceeded (quota {human_bytes(disk_quota)})"
    error = str(state.get("Error") or "")
    return "failed", f"exit code {code}" + (f": {error}" if error else "")


def _state_of(state: Mapping[str, Any]) -> ExecutionState:
    status = state.get("Status", "")
    if status == "created":
        return "pending"
    if status in ("running", "paused", "restarting"):
        return "running"
    return "completed" if int(state.get("ExitCode", -1)) == 0 else "failed"


def _driver_quota(info: Mapping[str, Any]) -> bool | None:
    """Whether the storage driver can cap a container's disk, as far as `docker info` tells:
    overlay2 only on xfs (and then only with pquota, which it does not say)."""
    if info.get("Driver") != "overlay2":
        return None
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
    return None if backing == "xfs" else False


def translate(exc: Exception, what: str, *, execution_id: str = "") -> NunetError:
    """An aiodocker or transport error as the nunet error a caller can act on."""
    import aiodocker

    if isinstance(exc, aiodocker.DockerError):
        status, message = exc.status, str(exc.message).strip()
        if status == _CONNECT_FAILED:
            return ExecutorUnavailable(f"{what}: {message}")
        if status == 404 and execution_id:
            return ExecutionNotFound(f"{what}: no execution {execution_id}")
        return ExecutorError(f"{what}: {message} (engine status {status})")
    if isinstance(exc, asyncio.TimeoutError):
        return ExecutorUnavailable(f"{what}: the engine did not answer in time")
    return ExecutorUnavailable(f"{what}: {type(exc).__name__}: {exc}")


def _engine_errors() -> tuple[type[Exception], ...]:
    import aiodocker
    import aiohttp

    return (aiodocker.DockerError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


@contextlib.contextmanager
def _engine(what: str, execution_id: str = "") -> Iterator[None]:
    try:
        yield
    except NunetError:
        raise
    except _engine_errors() as exc:
        raise translate(exc, what, execution_id=execution_id) from exc


class DockerExecutor:
    """`Executor` on a Docker engine (`url`: unix:///var/run/docker.sock, tcp://..., or None for
    DOCKER_HOST and the usual sockets)."""

    name = "docker"

    def __init__(
        self,
        *,
        url: str | None = None,
        disk_poll_interval_s: float = 1.0,
        stderr_tail_bytes: int = 4096,
        log_max_bytes: int = 32 << 20,
        exec_output_max_bytes: int = 1 << 20,
        pull_timeout_s: float = 600.0,
    ) -> None:
        self._url = url
        self._disk_poll_s = disk_poll_interval_s
        self._stderr_tail_bytes = stderr_tail_bytes
        self._log_max_bytes = log_max_bytes
        self._exec_max = exec_output_max_bytes
        self._pull_timeout_s = pull_timeout_s
        self._docker: aiodocker.Docker | None = None
        self._quota: bool | None = None  # learnt from the engine on the first disk limit
        self._cancelled: set[str] = set()
        self._disk_reasons: dict[str, str] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._adopted: set[str] = set()  # started or re-adopted by this process

    # --- engine -------------------------------------------------------------------------------

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            import aiodocker

            try:
                self._docker = aiodocker.Docker(url=self._url)
            # aiodocker asserts (instead of raising ValueError) when it finds no socket at all.
            except (ValueError, AssertionError) as exc:
                raise ExecutorUnavailable(f"no Docker engine: {exc}") from exc
        return self._docker

    def _container(self, execution_id: str) -> DockerContainer:
        return self._client().containers.container(container_name(execution_id))

    async def close(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        self._watchers.clear()
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()

    async def available(self) -> Availability:
        try:
            async with asyncio.timeout(10):
                docker = self._client()
                version = await docker.version()
                info = await docker.system.info()
        except ExecutorUnavailable as exc:
            return Availability(ok=False, reason=str(exc))
        except _engine_errors() as exc:
            return Availability(ok=False, reason=str(translate(exc, "docker engine")))
        return Availability(
            ok=True,
            version=str(version.get("Version", "")),
            disk_quota=self._quota if self._quota is not None else _driver_quota(info),
            gpu_runtime="nvidia" in (info.get("Runtimes") or {}),
        )

    # --- images -------------------------------------------------------------------------------

    async def _ensure_image(self, spec: ExecutionSpec) -> None:
        import aiodocker

        docker = self._client()
        with _engine(f"image {spec.image}"):
            try:
                await docker.images.inspect(spec.image)
                return
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
        auth: dict[str, str] | None = None
        if spec.registry_auth is not None:
            a = spec.registry_auth
            auth = {"username": a.username, "password": a.password, "serveraddress": a.server}
        pull_errors: tuple[type[Exception], ...] = (ValueError, *_engine_errors())
        try:
            async with asyncio.timeout(self._pull_timeout_s):
                await docker.images.pull(spec.image, auth=auth)
        except pull_errors as exc:
            if isinstance(exc, aiodocker.DockerError) and exc.status == _CONNECT_FAILED:
                raise translate(exc, f"pull {spec.image}") from exc
            cause = exc.message if isinstance(exc, aiodocker.DockerError) else str(exc)
            if isinstance(exc, asyncio.TimeoutError):
                cause = f"no answer within {self._pull_timeout_s:g} s"
            raise ImageNotFound(
                f"image {spec.image} not found locally and could not be pulled: {cause}",
                path="image",
            ) from exc

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, spec: ExecutionSpec) -> str:
        import aiodocker

        gpus = spec.resources.gpus
        if gpus and spec.resources.gpu_vendor.lower() != "nvidia":
            raise GPUUnavailable(
                f"the docker executor gives NVIDIA GPUs only, not {spec.resources.gpu_vendor}",
                path="resources.gpu_vendor",
            )
        await self._ensure_image(spec)
        eid = spec.execution_id
        container, quota = await self._create(spec)
        try:
            with _engine(f"start {eid}", eid):
                try:
                    await container.start()
                except aiodocker.DockerError as exc:
                    if exc.status == _CONNECT_FAILED:
                        raise
                    raise self._refused(spec, "could not start", exc) from exc
        except NunetError:
            with contextlib.suppress(*_engine_errors()):
                await container.delete(force=True, v=True)
            raise
        self._adopted.add(eid)
        if spec.resources.disk_bytes and not quota:
            self._watch_disk(eid, spec.resources.disk_bytes)
        return eid

    @staticmethod
    def _refused(spec: ExecutionSpec, what: str, exc: aiodocker.DockerError) -> NunetError:
        message = str(exc.message).strip()
        if spec.resources.gpus and "device driver" in message:
            return GPUUnavailable(
                f"{spec.resources.gpus} GPU(s) requested but this host has no NVIDIA container "
                f"runtime ({message})",
                path="resources.gpus",
            )
        return ExecutionFailed(f"execution {spec.execution_id} {what}: {message}")

    async def _create(self, spec: ExecutionSpec) -> tuple[DockerContainer, bool]:
        """The container, and whether the storage driver enforces its disk limit."""
        import aiodocker

        docker = self._client()
        eid = spec.execution_id
        name = container_name(eid)
        quota = bool(spec.resources.disk_bytes) and self._quota is not False
        with _engine(f"create {eid}"):
            while True:
                config = container_config(spec, quota=quota, log_max_bytes=self._log_max_bytes)
                try:
                    container = await docker.containers.create(config, name=name)
                except aiodocker.DockerError as exc:
                    if exc.status == 409:
                        raise ExecutionExists(
                            f"execution {eid} exists already (container {name})",
                            path="execution_id",
                        ) from exc
                    if quota and "storage-opt" in exc.message.lower():
                        # This driver has no quota (e.g. overlay2 off xfs): watch the size instead.
                        self._quota = quota = False
                        continue
                    if exc.status in (400, 500):
                        raise self._refused(spec, "refused by the engine", exc) from exc
                    raise
                if quota:
                    self._quota = True
                return container, quota

    def _watch_disk(self, execution_id: str, limit: int) -> None:
        if execution_id in self._watchers:
            return
        task = asyncio.create_task(
            self._disk_watcher(execution_id, limit), name=f"disk-watch-{execution_id}"
        )
        self._watchers[execution_id] = task
        task.add_done_callback(lambda _t: self._watchers.pop(execution_id, None))

    async def _disk_watcher(self, execution_id: str, limit: int) -> None:
        """Polls the writable layer's size (the engine walks it: not free, hence the interval)
        and kills the container once it is over `limit`."""
        container = self._container(execution_id)
        while True:
            await asyncio.sleep(self._disk_poll_s)
            try:
                info = await container.show(size=1)
                if not info["State"].get("Running"):
                    return
                used = int(info.get("SizeRw") or 0)
                if used > limit:
                    self._disk_reasons[execution_id] = (
                        f"disk limit exceeded ({human_bytes(used)} > {human_bytes(limit)})"
                    )
                    await container.kill()
                    return
            except _engine_errors() as exc:
                err = translate(exc, f"disk watch {execution_id}", execution_id=execution_id)
                if isinstance(err, ExecutionNotFound):
                    return
                log.warning("%s", err)

    async def _inspect(self, execution_id: str, **params: Any) -> dict[str, Any]:
        with _engine(f"inspect {execution_id}", execution_id):
            info: dict[str, Any] = await self._container(execution_id).show(**params)
        return info

    async def _adopt(self, execution_id: str) -> dict[str, Any]:
        """An execution started by an earlier process: resume its disk watch when it needs one."""
        info = await self._inspect(execution_id)
        self._adopted.add(execution_id)
        limit = int(info["Config"].get("Labels", {}).get(LABEL_DISK_LIMIT) or 0)
        has_quota = "size" in (info["HostConfig"].get("StorageOpt") or {})
        if limit and not has_quota and info["State"].get("Running"):
            self._watch_disk(execution_id, limit)
        return info

    async def wait(self, execution_id: str) -> ExecutionResult:
        if execution_id not in self._adopted:
            await self._adopt(execution_id)
        with _engine(f"wait {execution_id}", execution_id):
            await self._container(execution_id).wait()
        watcher = self._watchers.get(execution_id)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        info = await self._inspect(execution_id)
        return await self._result(execution_id, info)

    async def _result(self, execution_id: str, info: Mapping[str, Any]) -> ExecutionResult:
        state = info["State"]
        host = info["HostConfig"]
        quota = int((host.get("StorageOpt") or {}).get("size") or 0)
        tail = ""
        if int(state.get("ExitCode", -1)) != 0 or execution_id in self._disk_reasons:
            tail = await self._stderr_tail(execution_id)
        status, reason = classify_exit(
            state,
            memory_limit=int(host.get("Memory") or 0),
            cancelled=execution_id in self._cancelled,
            disk_reason=self._disk_reasons.get(execution_id, ""),
            disk_quota=quota,
            stderr_tail=tail,
        )
        started = parse_engine_time(state.get("StartedAt"))
        finished = parse_engine_time(state.get("FinishedAt"))
        if started is not None and finished is not None:
            # The engine stamps StartedAt once runc returns: a short task "ends before it starts".
            finished = max(started, finished)
        return ExecutionResult(
            execution_id=execution_id,
            status=status,
            exit_code=int(state.get("ExitCode", -1)),
            reason=reason,
            stderr_tail=tail,
            started_at=started,
            finished_at=finished,
        )

    async def _stderr_tail(self, execution_id: str) -> str:
        with _engine(f"logs {execution_id}", execution_id):
            lines: list[str] = await self._container(execution_id).log(stderr=True, tail=50)
        text = "".join(lines)
        return text[-self._stderr_tail_bytes :]

    async def cancel(self, execution_id: str, *, grace_s: float = 5.0) -> None:
        info = await self._inspect(execution_id)
        if info["State"].get("Status") not in ("running", "paused", "restarting", "created"):
            return
        self._cancelled.add(execution_id)
        with _engine(f"cancel {execution_id}", execution_id):
            await self._container(execution_id).stop(t=max(0, round(grace_s)))

    async def remove(self, execution_id: str) -> None:
        watcher = self._watchers.get(execution_id)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        try:
            with _engine(f"remove {execution_id}", execution_id):
                await self._container(execution_id).delete(force=True, v=True)
        except ExecutionNotFound:
            pass
        self._cancelled.discard(execution_id)
        self._disk_reasons.pop(execution_id, None)
        self._adopted.discard(execution_id)

    async def status(self, execution_id: str) -> ExecutionStatus:
        info = await self._inspect(execution_id)
        state = info["State"]
        current = _state_of(state)
        if current in ("pending", "running"):
            return ExecutionStatus(
                execution_id=execution_id,
                state=current,
                started_at=parse_engine_time(state.get("StartedAt")),
            )
        result = await self._result(execution_id, info)
        return ExecutionStatus(
            execution_id=execution_id,
            state=result.status,
            exit_code=result.exit_code,
            reason=result.reason,
            started_at=result.started_at,
            finished_at=result.finished_at,
        )

    # --- observation --------------------------------------------------------------------------

    async def logs(
        self, execution_id: str, *, follow: bool, stdout: bool = True, stderr: bool = True
    ) -> AsyncIterator[LogLine]:
        # aiodocker's own log reader drops which stream a record came from and its time; the
        # engine's multiplexed frames carry both, so they are read here.
        if not (stdout or stderr):
            return
        docker = self._client()
        params = {"follow": follow, "stdout": stdout, "stderr": stderr, "timestamps": True}
        with _engine(f"logs {execution_id}", execution_id):
            async with docker._query(
                f"containers/{container_name(execution_id)}/logs",
                params=params,
                timeout=docker._resolve_long_running_timeout(None),
            ) as response:
                try:
                    while True:
                        try:
                            header = await response.content.readexactly(_FRAME_HEADER.size)
                            kind, length = _FRAME_HEADER.unpack(header)
                            payload = await response.content.readexactly(length)
                        except asyncio.IncompleteReadError:  # the engine ended the stream
                            return
                        stamp, _, data = payload.partition(b" ")
                        yield LogLine(
                            stream=_STREAMS.get(kind, "stdout"),
                            data=data,
                            ts=parse_engine_time(stamp.decode("ascii", "replace")) or 0.0,
                        )
                finally:
                    # aiodocker's _query leaves the response open; a reader that stops early
                    # must not leave the engine streaming into a forgotten connection.
                    response.close()

    async def stats(self, execution_id: str) -> ExecutionStats:
        with _engine(f"stats {execution_id}", execution_id):
            samples = await self._container(execution_id).stats(stream=False)
        s: dict[str, Any] = samples[0] if samples else {}
        cpu = s.get("cpu_stats") or {}
        pre = s.get("precpu_stats") or {}
        used = int((cpu.get("cpu_usage") or {}).get("total_usage") or 0)
        d_cpu = used - int((pre.get("cpu_usage") or {}).get("total_usage") or 0)
        d_sys = int(cpu.get("system_cpu_usage") or 0) - int(pre.get("system_cpu_usage") or 0)
        cores = int(cpu.get("online_cpus") or 1)
        mem = s.get("memory_stats") or {}
        # Page cache is reclaimable: like `docker stats`, count what the kernel cannot take back.
        cache = int((mem.get("stats") or {}).get("total_inactive_file") or 0)
        return ExecutionStats(
            execution_id=execution_id,
            cpu_seconds=used / 1e9,
            cpu_percent=(d_cpu / d_sys * cores * 100.0) if d_cpu > 0 and d_sys > 0 else 0.0,
            memory_bytes=max(0, int(mem.get("usage") or 0) - cache),
            memory_limit_bytes=int(mem.get("limit") or 0),
            pids=int((s.get("pids_stats") or {}).get("current") or 0),
        )

    async def exec(self, execution_id: str, cmd: tuple[str, ...]) -> tuple[int, bytes]:
        if not cmd:
            raise ExecutionFailed("exec needs a command", path="cmd")
        out = bytearray()
        try:
            with _engine(f"exec in {execution_id}", execution_id):
                handle = await self._container(execution_id).exec(list(cmd))
                async with handle.start(detach=False) as stream:
                    while (msg := await stream.read_out()) is not None:
                        out += msg.data[: self._exec_max - len(out)]
                inspected = await handle.inspect()
        except ExecutorError as exc:
            if isinstance(exc, ExecutionNotFound | ExecutorUnavailable):
                raise
            raise ExecutionFailed(f"exec in {execution_id} failed: {exc.message}") from exc
        code = inspected.get("ExitCode")
        return (int(code) if code is not None else -1), bytes(out)

    async def list_managed(self) -> list[ManagedExecution]:
        import json

        with _engine("list containers"):
            found = await self._client().containers.list(
                all=True, filters=json.dumps({"label": [LABEL_EXECUTION]})
            )
        managed: list[ManagedExecution] = []
        for container in found:
            row: dict[str, Any] = container._container
            labels: dict[str, str] = row.get("Labels") or {}
            eid = labels.get(LABEL_EXECUTION, "")
            state: ExecutionState
            if row.get("State") == "created":
                state = "pending"
            elif row.get("State") in ("running", "paused", "restarting"):
                state = "running"
            else:
                try:
                    state = (await self.status(eid)).state
                except ExecutionNotFound:  # removed between the list and now
                    continue
            managed.append(
                ManagedExecution(
                    execution_id=eid,
                    deployment_id=labels.get(LABEL_DEPLOYMENT, ""),
                    allocation=labels.get(LABEL_ALLOCATION, ""),
                    state=state,
                    image=str(row.get("Image", "")),
                    backend_id=str(row.get("Id", "")),
                )
            )
        return managed
