"""The Docker executor against the real engine (skipped, with the reason, when none answers).

Every test labels its containers with its own deployment id; the fixture removes them and checks
that none is left, so tests can run beside other users of the same engine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from nunet.errors import (
    ExecutionExists,
    ExecutionFailed,
    ExecutionNotFound,
    GPUUnavailable,
    ImageNotFound,
)
from nunet.executor.api import ExecutionSpec, LogLine, Mount, ResourceLimits
from nunet.executor.docker import DockerExecutor, container_name

pytestmark = pytest.mark.docker
MIB = 1 << 20


class Harness:
    def __init__(self, executor: DockerExecutor, image: str) -> None:
        self.ex = executor
        self.image = image
        self.deployment = f"test-{uuid.uuid4().hex[:12]}"
        self._n = 0

    def spec(self, *cmd: str, **fields: object) -> ExecutionSpec:
        self._n += 1
        return ExecutionSpec(
            execution_id=f"{self.deployment}-{self._n}",
            image=fields.pop("image", self.image),  # type: ignore[arg-type]
            deployment_id=self.deployment,
            allocation=f"alloc{self._n}",
            cmd=cmd,
            **fields,  # type: ignore[arg-type]
        )

    async def mine(self) -> list[str]:
        return [
            m.execution_id
            for m in await self.ex.list_managed()
            if m.deployment_id == self.deployment
        ]


@pytest.fixture
async def h(busybox_image: str) -> AsyncIterator[Harness]:
    executor = DockerExecutor(disk_poll_interval_s=0.2)
    harness = Harness(executor, busybox_image)
    try:
        yield harness
    finally:
        for eid in await harness.mine():
            await executor.remove(eid)
        left = await harness.mine()
        await executor.close()
    assert left == [], f"containers left behind: {left}"


async def test_echo_task_completes_with_logs(h: Harness) -> None:
    eid = await h.ex.start(h.spec("sh", "-c", "echo hello; echo world"))
    result = await h.ex.wait(eid)
    assert (result.status, result.exit_code, result.reason) == ("completed", 0, "exit code 0")
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.finished_at >= result.started_at
    lines = [line async for line in h.ex.logs(eid, follow=False)]
    assert [(line.stream, line.data) for line in lines] == [
        ("stdout", b"hello\n"),
        ("stdout", b"world\n"),
    ]
    assert all(line.ts > 0 for line in lines)
    assert (await h.ex.status(eid)).state == "completed"


async def test_non_zero_exit_is_failed_with_code_and_stderr(h: Harness) -> None:
    eid = await h.ex.start(h.spec("sh", "-c", "echo out; echo 'it broke' >&2; exit 3"))
    result = await h.ex.wait(eid)
    assert (result.status, result.exit_code, result.reason) == ("failed", 3, "exit code 3")
    assert result.stderr_tail == "it broke\n"
    errs = [line async for line in h.ex.logs(eid, follow=False, stdout=False)]
    assert [(line.stream, line.data) for line in errs] == [("stderr", b"it broke\n")]
    status = await h.ex.status(eid)
    assert (status.state, status.exit_code) == ("failed", 3)


async def test_memory_limit_exceeded_is_oom_killed(h: Harness) -> None:
    # tail keeps everything since the last newline: /dev/zero has none.
    spec = h.spec(
        "sh", "-c", "head -c 200m /dev/zero | tail", resources=ResourceLimits(memory_bytes=64 * MIB)
    )
    result = await h.ex.wait(await h.ex.start(spec))
    assert result.status == "failed"
    assert result.reason == "OOM killed (memory limit 64 MiB)"
    assert result.exit_code == 137


async def test_limits_are_applied(h: Harness) -> None:
    import aiodocker

    limits = ResourceLimits(cpu_cores=0.5, memory_bytes=96 * MIB)
    eid = await h.ex.start(h.spec("sleep", "30", resources=limits, pids_limit=50))
    async with aiodocker.Docker() as docker:
        info = await docker.containers.container(container_name(eid)).show()
    host = info["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 96 * MIB
    assert host["MemorySwap"] == 96 * MIB
    assert host["PidsLimit"] == 50
    labels = info["Config"]["Labels"]
    assert labels["nunet.deployment"] == h.deployment
    assert labels["nunet.execution"] == eid
    stats = await h.ex.stats(eid)
    assert stats.memory_limit_bytes == 96 * MIB
    assert stats.pids >= 1
    assert stats.memory_bytes > 0


async def test_pids_limit_stops_a_fork_bomb(h: Harness) -> None:
    bomb = "i=0; while [ $i -lt 40 ]; do sleep 1 & i=$((i+1)); done; wait"
    result = await h.ex.wait(await h.ex.start(h.spec("sh", "-c", bomb, pids_limit=10)))
    assert result.status == "failed"
    assert "can't fork" in result.stderr_tail


async def test_disk_limit_exceeded_is_stopped_with_reason(h: Harness) -> None:
    spec = h.spec(
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=40; sleep 60",
        resources=ResourceLimits(disk_bytes=10 * MIB),
    )
    result = await h.ex.wait(await h.ex.start(spec))
    assert result.status == "failed"
    # Over the watcher's limit ("(40 MiB > 10 MiB)") or the driver's quota ("(quota 10 MiB)").
    assert result.reason.startswith("disk limit exceeded ("), result.reason
    assert "10 MiB" in result.reason


async def test_missing_image_is_a_typed_error(h: Harness) -> None:
    spec = h.spec("true", image="nunet-test/no-such-image:0")
    with pytest.raises(ImageNotFound) as info:
        await h.ex.start(spec)
    assert "nunet-test/no-such-image:0 not found locally and could not be pulled" in str(info.value)
    assert info.value.path == "image"
    assert await h.mine() == []


async def test_command_not_in_image_fails_to_start_and_leaves_nothing(h: Harness) -> None:
    with pytest.raises(ExecutionFailed, match="could not start"):
        await h.ex.start(h.spec("/no/such/binary"))
    assert await h.mine() == []


async def test_cancel_a_long_sleep(h: Harness) -> None:
    eid = await h.ex.start(h.spec("sleep", "300"))
    assert (await h.ex.status(eid)).state == "running"
    await h.ex.cancel(eid, grace_s=0)
    result = await h.ex.wait(eid)
    assert (result.status, result.reason) == ("cancelled", "cancelled")
    await h.ex.cancel(eid)  # ended: a no-op


async def test_logs_follow_streams_lines_live(h: Harness) -> None:
    script = "echo first; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo second >&2"
    eid = await h.ex.start(h.spec("sh", "-c", script))
    stream = h.ex.logs(eid, follow=True)
    first = await anext(stream)
    assert (first.stream, first.data) == ("stdout", b"first\n")
    # The first line came while the container still waits for /tmp/go: it was streamed live.
    assert (await h.ex.status(eid)).state == "running"
    assert await h.ex.exec(eid, ("touch", "/tmp/go")) == (0, b"")
    rest: list[LogLine] = [line async for line in stream]  # ends when the container exits
    assert [(line.stream, line.data) for line in rest] == [("stderr", b"second\n")]
    assert (await h.ex.wait(eid)).status == "completed"


async def test_exec_output_and_exit_code(h: Harness) -> None:
    eid = await h.ex.start(h.spec("sleep", "30"))
    code, output = await h.ex.exec(eid, ("sh", "-c", "echo in; echo err >&2; exit 4"))
    assert code == 4
    assert sorted(output.splitlines()) == [b"err", b"in"]  # two pipes: no order between them
    await h.ex.cancel(eid, grace_s=0)
    await h.ex.wait(eid)
    with pytest.raises(ExecutionFailed, match="not running"):
        await h.ex.exec(eid, ("true",))


async def test_list_managed_and_a_restarted_node_adopts(h: Harness) -> None:
    a = await h.ex.start(h.spec("sleep", "30"))
    b = await h.ex.start(h.spec("sh", "-c", "exit 2"))
    await h.ex.wait(b)
    found = {m.execution_id: m for m in await h.ex.list_managed()}
    assert found[a].state == "running"
    assert found[b].state == "failed"
    assert (found[a].deployment_id, found[a].allocation) == (h.deployment, "alloc1")
    # A second executor (a node after a restart) knows the containers only by their labels.
    fresh = DockerExecutor()
    try:
        assert {a, b} <= {m.execution_id for m in await fresh.list_managed()}
        await h.ex.cancel(a, grace_s=0)
        assert (await fresh.wait(a)).exit_code == 137
    finally:
        await fresh.close()


async def test_duplicate_and_unknown_executions(h: Harness) -> None:
    spec = h.spec("sleep", "30")
    await h.ex.start(spec)
    with pytest.raises(ExecutionExists):
        await h.ex.start(spec)
    for call in (h.ex.wait("nunet-none"), h.ex.status("nunet-none"), h.ex.cancel("nunet-none")):
        with pytest.raises(ExecutionNotFound):
            await call
    with pytest.raises(ExecutionNotFound):
        _ = [line async for line in h.ex.logs("nunet-none", follow=False)]
    await h.ex.remove("nunet-none")  # idempotent


async def test_gpus_on_a_host_without_nvidia_runtime(h: Harness) -> None:
    if (await h.ex.available()).gpu_runtime:
        pytest.skip("this host has an NVIDIA runtime")
    with pytest.raises(GPUUnavailable, match="no NVIDIA container runtime") as info:
        await h.ex.start(h.spec("true", resources=ResourceLimits(gpus=1)))
    assert info.value.path == "resources.gpus"
    with pytest.raises(GPUUnavailable, match="NVIDIA GPUs only"):
        await h.ex.start(h.spec("true", resources=ResourceLimits(gpus=1, gpu_vendor="amd")))
    assert await h.mine() == []


async def test_concurrent_waiters_see_one_result(h: Harness) -> None:
    eid = await h.ex.start(h.spec("sh", "-c", "sleep 0.3; exit 5"))
    results = await asyncio.gather(h.ex.wait(eid), h.ex.wait(eid))
    assert [r.exit_code for r in results] == [5, 5]


async def test_a_follower_that_stops_early_leaves_no_stream_open(h: Harness) -> None:
    eid = await h.ex.start(h.spec("sh", "-c", "echo tick; sleep 30"))
    stream = h.ex.logs(eid, follow=True)
    assert (await anext(stream)).data == b"tick\n"
    await stream.aclose()
    # aiohttp keeps a connection "acquired" until its response is released.
    assert len(h.ex._client().connector._acquired) == 0  # type: ignore[attr-defined]
    await h.ex.cancel(eid, grace_s=0)
    assert (await h.ex.wait(eid)).status == "cancelled"


async def test_specs_the_engine_refuses_are_typed_and_leave_nothing(h: Harness) -> None:
    with pytest.raises(ExecutionFailed, match="refused by the engine"):
        await h.ex.start(h.spec("true", resources=ResourceLimits(cpu_cores=4096)))
    missing = Mount("/nonexistent/nunet-test", "/in", read_only=True)
    with pytest.raises(ExecutionFailed, match="nonexistent"):
        await h.ex.start(h.spec("true", mounts=(missing,)))
    assert await h.mine() == []


async def test_available_reports_the_engine(h: Harness) -> None:
    availability = await h.ex.available()
    assert availability.ok
    assert availability.version
