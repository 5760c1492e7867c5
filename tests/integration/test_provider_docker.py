"""The provider with the real Docker executor (skipped, with the reason, when no engine answers):
tasks complete or fail with their reason, a memory limit is enforced, a service with a command
health check runs until shut down, S3 inputs and outputs round-trip, and a restarted provider
re-adopts or cleans its containers. Every test ends with the node's resources all free and no
container of this provider left."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from provider_world import (
    OTHER,
    PROVIDER,
    USER,
    Orchestrator,
    World,
    ensemble,
    make_node,
    provider_service,
    task_yaml,
    until,
    world,
)

from nunet.actor.handle import ROOT_INBOX, Handle
from nunet.executor.api import ExecutionSpec
from nunet.executor.docker import DockerExecutor
from nunet.jobs.protocol import (
    ALLOCATION_LOGS,
    ALLOCATION_RESULTS,
    ALLOCATION_SHUTDOWN,
    AllocationReport,
    LogsChunk,
    LogsRequest,
    ResultsChunk,
    ResultsRequest,
    decode,
    encode,
)
from nunet.jobs.provider import ProviderService
from nunet.node.node import Node

pytestmark = pytest.mark.docker


@dataclass
class Setup:
    w: World
    node: Node
    executor: DockerExecutor
    service: ProviderService
    image: str

    @property
    def provider(self) -> Handle:
        return Handle.for_actor(self.node.did, self.node.did, ROOT_INBOX)

    def orchestrator(self, name: str) -> Orchestrator:
        return Orchestrator(self.w.by_did[USER.did], f"{name}-{uuid.uuid4().hex[:8]}")

    async def ours(self) -> list[str]:
        return [m.execution_id for m in await self.executor.list_managed()
                if m.execution_id.startswith(self.service.tag + "-")]


@pytest.fixture
async def s(busybox_image: str, tmp_path: Path) -> AsyncIterator[Setup]:
    # A fresh provider key per test: containers of a test that failed are not another's.
    node = make_node(tmp_path, key=type(PROVIDER).generate())
    executor = DockerExecutor(disk_poll_interval_s=0.2)
    try:
        async with world([node.keypair, USER, OTHER]) as w:
            service = provider_service(w.by_did[node.did], node, {"docker": executor})
            await w.start(service)
            setup = Setup(w, node, executor, service, busybox_image)
            try:
                yield setup
            finally:
                leftovers = await setup.ours()
                for eid in leftovers:
                    await executor.remove(eid)
            assert leftovers == []
            assert node.resources("free") == node.resources("onboarded")
    finally:
        await executor.close()
        node.store.close()


def docker_task(s: Setup, cmd: str, *, ram: str = "0.25", extra: str = "",
                name: str = "hello") -> Any:
    return ensemble(task_yaml(name, executor="docker", image=s.image, cmd=cmd, ram=ram,
                              extra=extra))


async def logs(orch: Orchestrator, handle: Handle, **kw: Any) -> LogsChunk:
    data = await orch.actor.invoke(handle, ALLOCATION_LOGS, encode(LogsRequest(**kw)))
    return decode(data, LogsChunk)


async def test_echo_task_completes_and_its_logs_outlive_the_container(s: Setup) -> None:
    orch = s.orchestrator("dep-echo")
    spec = ensemble(task_yaml(
        executor="docker", image=s.image, cmd='["-c", "echo $GREETING; pwd"]',
        execution_extra=', entrypoint: ["sh"], environment: ["GREETING=Hello from nunet!"], '
                        "working_directory: /tmp"))
    handles = await orch.deploy(s.provider, spec)
    done = await orch.wait_status("hello", "completed", timeout=60)
    assert done.exit_code == 0
    assert await s.ours() == []  # removed before "completed" was reported
    assert s.node.resources("free") == s.node.resources("onboarded")
    chunk = await logs(orch, handles["hello"])
    assert chunk.data == b"Hello from nunet!\n/tmp\n"
    assert chunk.finished


async def test_nonzero_exit_fails_with_code_and_stderr(s: Setup) -> None:
    orch = s.orchestrator("dep-exit")
    cmd = '["sh", "-c", "echo partial; echo cannot open input >&2; exit 3"]'
    handles = await orch.deploy(s.provider, docker_task(s, cmd))
    failed = await orch.wait_status("hello", "failed", timeout=60)
    assert failed.exit_code == 3
    assert failed.reason.startswith("exit code 3")
    assert "cannot open input" in failed.reason
    err = await logs(orch, handles["hello"], stream="stderr")
    assert err.data == b"cannot open input\n"


async def test_memory_limit_exceeded_is_oom_killed(s: Setup) -> None:
    orch = s.orchestrator("dep-oom")
    # tail keeps everything since the last newline: /dev/zero has none.
    spec = docker_task(s, '["sh", "-c", "head -c 200m /dev/zero | tail"]', ram="64MiB")
    await orch.deploy(s.provider, spec)
    failed = await orch.wait_status("hello", "failed", timeout=60)
    assert failed.reason.startswith("OOM killed (memory limit 64 MiB)")
    assert failed.exit_code == 137


async def test_missing_image_fails_with_the_reason(s: Setup) -> None:
    orch = s.orchestrator("dep-noimage")
    spec = ensemble(task_yaml(executor="docker", image="nunet-test/does-not-exist:1"))
    await orch.deploy(s.provider, spec)
    failed = await orch.wait_status("hello", "failed", timeout=60)
    assert "could not start" in failed.reason
    assert "nunet-test/does-not-exist:1" in failed.reason


SERVICE = """
    healthcheck:
      type: command
      exec: ["cat", "/tmp/ready"]
      response: {type: string, value: ok}
      interval: 0.2
"""


async def test_service_with_healthcheck_runs_until_shutdown(s: Setup) -> None:
    orch = s.orchestrator("dep-svc")
    cmd = '["sh", "-c", "sleep 0.5; echo ok > /tmp/ready; exec sleep 300"]'
    spec = ensemble(str(task_yaml("web", executor="docker", image=s.image, cmd=cmd,
                                  extra=SERVICE)).replace("type: task", "type: service"))
    handles = await orch.deploy(s.provider, spec)
    await orch.wait_status("web", "running", timeout=60)
    assert orch.statuses("web") == ["running"]  # only once the check passed
    assert len(await s.ours()) == 1
    report = decode(await orch.actor.invoke(handles["web"], ALLOCATION_SHUTDOWN, b"",
                                            timeout=60), AllocationReport)
    assert report.status == "stopped"
    assert await s.ours() == []


async def test_failing_healthcheck_fails_the_service(s: Setup) -> None:
    orch = s.orchestrator("dep-sick")
    cmd = '["sh", "-c", "echo ok > /tmp/ready; sleep 1; rm /tmp/ready; exec sleep 300"]'
    spec = ensemble(str(task_yaml("web", executor="docker", image=s.image, cmd=cmd,
                                  extra=SERVICE)).replace("type: task", "type: service"))
    await orch.deploy(s.provider, spec)
    failed = await orch.wait_status("web", "failed", timeout=60)
    assert failed.reason.startswith("health check failed: `cat /tmp/ready`")
    assert orch.statuses("web") == ["running", "failed"]


async def test_s3_input_and_output_round_trip(
    s: Setup, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import botocore.config

    client = boto3.client(
        "s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
        aws_access_key_id=s3_server.admin[0], aws_secret_access_key=s3_server.admin[1],
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    bucket = f"nunet-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="in/words.txt", Body=b"alpha\nbeta\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.admin[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.admin[1])
    volumes = f"""
    volume:
      - {{type: s3, name: input, mountpoint: /in, bucket: {bucket}, prefix: in,
          endpoint: "{s3_server.endpoint}", direction: input, read_only: true}}
      - {{type: s3, name: output, mountpoint: /out, bucket: {bucket}, prefix: out,
          endpoint: "{s3_server.endpoint}", direction: output}}
"""
    cmd = '["sh", "-c", "wc -l < /in/words.txt > /out/count.txt"]'
    orch = s.orchestrator("dep-s3")
    handles = await orch.deploy(s.provider, docker_task(s, cmd, extra=volumes))
    done = await orch.wait_status("hello", "completed", timeout=60)
    assert done.exit_code == 0
    body = client.get_object(Bucket=bucket, Key="out/count.txt")["Body"].read()
    assert body.strip() == b"2"
    listing = decode(await orch.actor.invoke(handles["hello"], ALLOCATION_RESULTS,
                                             encode(ResultsRequest())), ResultsChunk)
    assert listing.files == ("output/count.txt",)


async def test_restarted_provider_readopts_and_cleans(s: Setup) -> None:
    orch = s.orchestrator("dep-readopt")
    cmd = '["sh", "-c", "echo started; exec sleep 300"]'
    spec = ensemble(str(task_yaml("svc", executor="docker", image=s.image, cmd=cmd))
                    .replace("type: task", "type: service"))
    handles = await orch.deploy(s.provider, spec)
    await orch.wait_status("svc", "running", timeout=60)
    await until(lambda: s.service.allocation(orch.deployment_id, "svc") is not None)
    # The provider stops (its containers run on) and a stray container of ours appears.
    task = s.w.tasks[-1]
    task.cancel()
    await until(task.done)
    (running,) = await s.ours()
    stray = await s.executor.start(ExecutionSpec(
        execution_id=f"{s.service.tag}-stray-1", image=s.image, cmd=("sleep", "300"),
        deployment_id="nobody", allocation="stray"))

    second = provider_service(s.w.by_did[s.node.did], s.node, {"docker": s.executor})
    await s.w.start(second)
    s.service = second
    assert (second.counters["adopted"], second.counters["orphans_removed"]) == (1, 1)
    assert await s.ours() == [running]
    assert stray not in await s.ours()
    await until(lambda: any(r.handle not in (None, handles["svc"]) for r in orch.reports))
    new = orch.reports[-1].handle
    assert new is not None
    chunk = await logs(orch, new)
    assert chunk.data == b"started\n"  # replayed from the container, not doubled
    report = decode(await orch.actor.invoke(new, ALLOCATION_SHUTDOWN, b"", timeout=60),
                    AllocationReport)
    assert report.status == "stopped"
