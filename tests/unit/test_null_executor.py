"""The null executor keeps the `Executor` contract without containers."""

from __future__ import annotations

import asyncio

import pytest

from nunet.errors import ExecutionExists, ExecutionFailed, ExecutionNotFound
from nunet.executor.api import ExecutionSpec, Executor, ResourceLimits
from nunet.executor.null import NullBehaviour, NullExecutor, behaviour_of_command


def spec(eid: str = "e1", resources: ResourceLimits | None = None) -> ExecutionSpec:
    return ExecutionSpec(
        execution_id=eid,
        image="busybox",
        deployment_id="d1",
        allocation="a1",
        resources=resources or ResourceLimits(),
    )


def test_null_executor_is_an_executor() -> None:
    assert isinstance(NullExecutor(), Executor)


async def test_instant_completion_with_output() -> None:
    ex = NullExecutor(NullBehaviour(stdout=b"hello\nworld\n", stderr=b"warn\n"))
    assert await ex.start(spec()) == "e1"
    result = await ex.wait("e1")
    assert (result.status, result.exit_code, result.reason) == ("completed", 0, "exit code 0")
    assert result.stderr_tail == ""
    lines = [(line.stream, line.data) async for line in ex.logs("e1", follow=False)]
    assert lines == [("stdout", b"hello\n"), ("stdout", b"world\n"), ("stderr", b"warn\n")]
    only_err = [line.data async for line in ex.logs("e1", follow=False, stdout=False)]
    assert only_err == [b"warn\n"]
    assert (await ex.status("e1")).state == "completed"
    assert ex.started == 1


async def test_non_zero_exit_is_failed_with_stderr() -> None:
    ex = NullExecutor(NullBehaviour(exit_code=3, stderr=b"boom\n"))
    await ex.start(spec())
    result = await ex.wait("e1")
    assert (result.status, result.exit_code, result.reason) == ("failed", 3, "exit code 3")
    assert result.stderr_tail == "boom\n"


async def test_duration_then_follow_logs_and_cancel() -> None:
    ex = NullExecutor(NullBehaviour(duration_s=30, stdout=b"never\n"))
    await ex.start(spec())
    status = await ex.status("e1")
    assert status.state == "running"
    assert (await ex.stats("e1")).pids == 1
    assert await ex.exec("e1", ("true",)) == (0, b"")
    follower = asyncio.create_task(_collect(ex, "e1"))
    await asyncio.sleep(0)
    assert not follower.done()
    await ex.cancel("e1")
    result = await ex.wait("e1")
    assert (result.status, result.reason) == ("cancelled", "cancelled")
    assert await follower == []  # a cancelled execution wrote nothing
    await ex.cancel("e1")  # no-op once ended
    with pytest.raises(ExecutionFailed, match="not running"):
        await ex.exec("e1", ("true",))


async def _collect(ex: NullExecutor, eid: str) -> list[bytes]:
    return [line.data async for line in ex.logs(eid, follow=True)]


async def test_per_spec_behaviour_and_start_failure() -> None:
    def plan(s: ExecutionSpec) -> NullBehaviour:
        if s.image == "bad":
            raise ExecutionFailed("simulated start failure")
        return NullBehaviour(exit_code=1 if s.allocation == "fails" else 0)

    ex = NullExecutor(plan)
    await ex.start(ExecutionSpec(execution_id="ok", image="x"))
    await ex.start(ExecutionSpec(execution_id="ko", image="x", allocation="fails"))
    with pytest.raises(ExecutionFailed, match="simulated"):
        await ex.start(ExecutionSpec(execution_id="bad", image="bad"))
    assert (await ex.wait("ok")).status == "completed"
    assert (await ex.wait("ko")).status == "failed"
    with pytest.raises(ExecutionNotFound):
        await ex.wait("bad")


async def test_duplicate_unknown_and_remove() -> None:
    ex = NullExecutor()
    await ex.start(spec())
    with pytest.raises(ExecutionExists):
        await ex.start(spec())
    for call in (ex.wait("nope"), ex.status("nope"), ex.stats("nope"), ex.cancel("nope")):
        with pytest.raises(ExecutionNotFound):
            await call
    with pytest.raises(ExecutionFailed, match="needs a command"):
        await ex.exec("e1", ())
    await ex.remove("e1")
    await ex.remove("e1")  # idempotent
    assert await ex.list_managed() == []


async def test_list_managed_stats_and_available() -> None:
    ex = NullExecutor(NullBehaviour(duration_s=30))
    await ex.start(spec("e1", resources=ResourceLimits(memory_bytes=64 << 20)))
    [managed] = await ex.list_managed()
    assert (managed.execution_id, managed.deployment_id, managed.allocation) == ("e1", "d1", "a1")
    assert managed.state == "running"
    assert (await ex.stats("e1")).memory_limit_bytes == 64 << 20
    assert (await ex.available()).ok
    down = await NullExecutor(available_reason="maintenance").available()
    assert (down.ok, down.reason) == (False, "maintenance")
    await ex.close()


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (("echo", "hello", "there"), NullBehaviour(stdout=b"hello there\n")),
        (("sleep", "2.5"), NullBehaviour(duration_s=2.5)),
        (("sleep", "inf"), NullBehaviour(duration_s=1e9)),
        (("sleep", "-3"), NullBehaviour(duration_s=0.0)),
        (("sleep", "soon"), NullBehaviour()),
        (("fail", "3", "oops"), NullBehaviour(exit_code=3, stderr=b"oops\n")),
        (("fail", "x"), NullBehaviour()),
        ((), NullBehaviour()),
    ],
)
def test_behaviour_of_command(cmd: tuple[str, ...], expected: NullBehaviour) -> None:
    assert behaviour_of_command(ExecutionSpec(execution_id="e", image="x", cmd=cmd)) == expected
