"""Execution specs, the Docker create body and exit classification: no engine needed."""

from __future__ import annotations

import msgspec
import pytest

from nunet.errors import ExecutorUnavailable, ValidationError
from nunet.executor.api import (
    LABEL_DISK_LIMIT,
    LABEL_EXECUTION,
    ExecutionSpec,
    Mount,
    PortMapping,
    ResourceLimits,
)
from nunet.executor.docker import (
    DockerExecutor,
    classify_exit,
    container_config,
    human_bytes,
    parse_engine_time,
)

MIB = 1 << 20


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"execution_id": ""}, "execution_id"),
        ({"execution_id": "-x"}, "execution_id"),
        ({"execution_id": "a/b"}, "execution_id"),
        ({"image": ""}, "image"),
        ({"image": "bad image"}, "image"),
        ({"working_directory": "rel"}, "working_directory"),
        ({"environment": {"A=B": "1"}}, "environment"),
        ({"labels": {"nunet.execution": "spoof"}}, "labels"),
        ({"pids_limit": 0}, "pids_limit"),
        ({"resources": {"cpu_cores": -1}}, "resources.cpu_cores"),
        ({"resources": {"cpu_cores": float("nan")}}, "resources.cpu_cores"),
        ({"resources": {"memory_bytes": 1024}}, "resources.memory_bytes"),
        ({"resources": {"memory_bytes": -1}}, "resources.memory_bytes"),
        ({"resources": {"disk_bytes": -1}}, "resources.disk_bytes"),
        ({"resources": {"gpus": -1}}, "resources.gpus"),
        ({"mounts": [{"host_path": "x", "container_path": "/d"}]}, "mounts[0].host_path"),
        ({"mounts": [{"host_path": "/x", "container_path": "/"}]}, "mounts[0].container_path"),
        ({"ports": [{"host_port": 0, "container_port": 80}]}, "ports[0].host_port"),
        ({"ports": [{"host_port": 80, "container_port": 70000}]}, "ports[0].container_port"),
        ({"network_mode": "none", "ports": [{"host_port": 1, "container_port": 1}]}, "ports"),
    ],
)
def test_bad_spec_names_the_field(fields: dict[str, object], path: str) -> None:
    raw = {"execution_id": "e1", "image": "busybox", **fields}
    with pytest.raises(ValidationError) as info:
        msgspec.convert(raw, ExecutionSpec)
    assert info.value.path == path


def test_unknown_field_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"execution_id": "e1", "image": "x", "privileged": True}, ExecutionSpec)


def full_spec(**resources: float) -> ExecutionSpec:
    return ExecutionSpec(
        execution_id="e1",
        image="busybox",
        deployment_id="d1",
        allocation="a1",
        cmd=("echo", "hi"),
        entrypoint=(),
        environment={"A": "1"},
        working_directory="/work",
        resources=ResourceLimits(**resources),  # type: ignore[arg-type]
        mounts=(Mount("/data", "/in", read_only=True),),
        labels={"team": "x"},
        ports=(PortMapping(8080, 80),),
        pids_limit=64,
    )


def test_container_config_applies_every_limit() -> None:
    spec = full_spec(cpu_cores=0.5, memory_bytes=64 * MIB, disk_bytes=10 * MIB, gpus=2)
    config = container_config(spec, quota=True, log_max_bytes=8 * MIB)
    host = config["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 64 * MIB  # no escape into swap
    assert host["PidsLimit"] == 64
    assert host["StorageOpt"] == {"size": str(10 * MIB)}
    assert host["DeviceRequests"] == [{"Driver": "nvidia", "Count": 2, "Capabilities": [["gpu"]]}]
    assert host["Mounts"] == [
        {"Type": "bind", "Source": "/data", "Target": "/in", "ReadOnly": True}
    ]
    assert host["PortBindings"] == {"80/tcp": [{"HostPort": "8080"}]}
    assert config["ExposedPorts"] == {"80/tcp": {}}
    assert config["Entrypoint"] == []
    assert config["Cmd"] == ["echo", "hi"]
    assert config["Env"] == ["A=1"]
    assert config["WorkingDir"] == "/work"
    labels = config["Labels"]
    assert labels[LABEL_EXECUTION] == "e1"
    assert labels["nunet.deployment"] == "d1"
    assert labels["nunet.allocation"] == "a1"
    assert labels[LABEL_DISK_LIMIT] == str(10 * MIB)
    assert labels["team"] == "x"


def test_container_config_without_limits_or_quota() -> None:
    spec = ExecutionSpec(execution_id="e1", image="busybox", resources=ResourceLimits(disk_bytes=5))
    host = container_config(spec, quota=False, log_max_bytes=8 * MIB)["HostConfig"]
    for key in ("NanoCpus", "Memory", "MemorySwap", "StorageOpt", "DeviceRequests", "Mounts"):
        assert key not in host
    assert host["PidsLimit"] == 1024  # the default still guards against fork bombs


def state(code: int, *, oom: bool = False, error: str = "") -> dict[str, object]:
    return {"Status": "exited", "ExitCode": code, "OOMKilled": oom, "Error": error}


@pytest.mark.parametrize(
    ("st", "kw", "expected"),
    [
        (state(0), {}, ("completed", "exit code 0")),
        (state(3), {}, ("failed", "exit code 3")),
        (state(127, error="not found"), {}, ("failed", "exit code 127: not found")),
        (
            state(137, oom=True),
            {"memory_limit": 64 * MIB},
            ("failed", "OOM killed (memory limit 64 MiB)"),
        ),
        (state(137, oom=True), {}, ("failed", "OOM killed")),
        (state(137), {"cancelled": True}, ("cancelled", "cancelled")),
        (
            state(137),
            {"disk_reason": "disk limit exceeded (2 > 1)"},
            ("failed", "disk limit exceeded (2 > 1)"),
        ),
        (
            state(1),
            {"disk_quota": 10 * MIB, "stderr_tail": "dd: No space left on device"},
            ("failed", "disk limit exceeded (quota 10 MiB)"),
        ),
        (state(1), {"stderr_tail": "dd: No space left on device"}, ("failed", "exit code 1")),
    ],
)
def test_classify_exit(
    st: dict[str, object], kw: dict[str, object], expected: tuple[str, str]
) -> None:
    args: dict[str, object] = {
        "memory_limit": 0,
        "cancelled": False,
        "disk_reason": "",
        "disk_quota": 0,
        "stderr_tail": "",
    }
    args.update(kw)
    assert classify_exit(st, **args) == expected  # type: ignore[arg-type]


def test_engine_times_and_sizes() -> None:
    assert parse_engine_time("0001-01-01T00:00:00Z") is None
    assert parse_engine_time("") is None
    assert parse_engine_time("garbage") is None
    assert parse_engine_time("1970-01-01T00:00:01.500000000Z") == 1.5
    assert parse_engine_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert human_bytes(64 * MIB) == "64 MiB"
    assert human_bytes(3 * (1 << 29)) == "1.5 GiB"
    assert human_bytes(512) == "512 B"


async def test_no_engine_is_unavailable_not_a_crash(tmp_path: object) -> None:
    ex = DockerExecutor(url=f"unix://{tmp_path}/no-such.sock")
    availability = await ex.available()
    assert not availability.ok
    assert "no-such.sock" in availability.reason
    with pytest.raises(ExecutorUnavailable):
        await ex.start(ExecutionSpec(execution_id="e1", image="busybox"))
    with pytest.raises(ExecutorUnavailable):
        await ex.list_managed()
    await ex.close()


async def test_bad_engine_url_is_unavailable() -> None:
    ex = DockerExecutor(url="nonsense")
    assert not (await ex.available()).ok
    await ex.close()


def test_docker_executor_is_an_executor() -> None:
    from nunet.executor.api import Executor

    assert isinstance(DockerExecutor(), Executor)
