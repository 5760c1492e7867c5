"""`nunet deploy`, `get`, `logs`, `shutdown`, `results` against one real node process that is
its own provider (null executor), and the bad inputs: each a clear error, exit 1, no
traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nunet.cli.client import ApiClient
from nunet.errors import ValidationError
from nunet.testing.cluster import NodeProcess

TASK = """\
version: V1
allocations:
  hello:
    type: task
    executor: null
    resources: {cpu: {cores: 0.25}, ram: {size: 0.1}, disk: {size: 0.1}}
    execution: {type: null, cmd: ["echo", "hi"]}
nodes:
  n1:
    allocations: [hello]
"""

SERVICE = TASK.replace("type: task", "type: service").replace('["echo", "hi"]',
                                                               '["sleep", "inf"]')


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("deploy"), "alice")
    proc.extra_env.update({"NUNET_NULL_EXECUTOR": "1", "NUNET_BID_WINDOW_S": "0.2"})
    proc.start()
    try:
        proc.wait_ready()
        machine = proc.cli("resources", "machine", "--json").json()
        assert isinstance(machine, dict)
        ram = str(round(machine["ram_bytes"] * 0.2 / (1 << 30), 2))  # onboarding wants 10-90 %
        done = proc.cli("onboard", "--cpu", "1", "--ram", ram, "--disk", "0.5", "--no-bench")
        assert done.code == 0, done.stderr
        yield proc
    finally:
        proc.kill()


def write(tmp_path: Path, text: str, name: str = "ensemble.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(node: NodeProcess, *args: str, code: int = 1) -> str:
    result = node.cli(*args)
    assert result.code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr


def test_deploy_wait_then_list_logs_and_results(node: NodeProcess, tmp_path: Path) -> None:
    done = node.cli("deploy", "-f", write(tmp_path, TASK), "--wait", "-t", "30")
    assert done.code == 0, done.stderr + node.log()
    dep = done.stdout.splitlines()[0]
    assert len(dep) == 32
    assert done.stdout.splitlines()[-1].startswith("Completed") or "Completed" in done.stderr
    page = node.cli("get", "deployments", "--status", "Completed", "--json").json()
    assert isinstance(page, dict)
    assert dep in [item["id"] for item in page["items"]]
    assert page["items"][0]["allocations"] == {"hello": "completed"}
    table = node.cli("get", "deployments")
    assert dep in table.stdout
    assert "Completed" in table.stdout
    allocations = node.cli("get", "allocations", dep, "--json").json()
    assert isinstance(allocations, list)
    assert [(a["name"], a["status"]) for a in allocations] == [("hello", "completed")]
    logs = node.cli("logs", dep, "--json")
    assert logs.code == 0, logs.stderr
    assert logs.json()["hello"] == {"data": "hi\n", "next_offset": 3,  # type: ignore[index]
                                    "finished": True}
    assert node.cli("logs", dep).stdout == "hi\n"
    out = node.cli("results", dep, "-o", str(tmp_path / "out"))
    assert out.code == 0, out.stderr
    assert "no output files" in out.stdout
    again = refused(node, "shutdown", dep)
    assert "'shutdown' is not allowed in state 'Completed'" in again


def test_a_service_is_shut_down(node: NodeProcess, tmp_path: Path) -> None:
    started = node.cli("deploy", "-f", write(tmp_path, SERVICE), "--json")
    assert started.code == 0, started.stderr
    dep = started.json()["id"]  # type: ignore[index]
    settled = node.cli("deploy", "-f", write(tmp_path, SERVICE), "--wait")
    assert settled.code == 0, settled.stderr
    second = settled.stdout.splitlines()[0]
    for target in (dep, second):
        stop = node.cli("shutdown", target, "--wait", "--json")
        assert stop.code == 0, stop.stderr
        assert stop.json()["status"] == "Completed"  # type: ignore[index]
    free = node.cli("resources", "free", "--json").json()
    assert free == node.cli("resources", "onboarded", "--json").json()


@pytest.mark.parametrize(("text", "expected"), [
    ("allocations: [unclosed", "invalid YAML"),
    (TASK.replace("type: task", "type: task\n    colour: red"), "colour"),
    (TASK.replace("size: 0.1}, disk", "size: -1}, disk"), "allocations.hello.resources.ram.size"),
    (TASK.replace("executor: null", "executor: kubernetes"), "allocations.hello.executor"),
])
def test_bad_ensembles_are_refused_before_anything_is_sent(
        node: NodeProcess, tmp_path: Path, text: str, expected: str) -> None:
    before = node.cli("get", "deployments", "--json").json()
    err = refused(node, "deploy", "-f", write(tmp_path, text))
    assert err.startswith("invalid: ")
    assert expected in err
    assert node.cli("get", "deployments", "--json").json() == before


def test_other_bad_inputs(node: NodeProcess, tmp_path: Path) -> None:
    assert "no deployment 'nope'" in refused(node, "logs", "nope")
    assert "no deployment 'nope'" in refused(node, "shutdown", "nope")
    assert "cannot read" in refused(node, "deploy", "-f", str(tmp_path / "missing.yaml"))
    assert "Invalid value for '--status'" in refused(node, "get", "deployments", "--status",
                                                     "Bogus", code=2)
    api = ApiClient("127.0.0.1", node.rest_port)
    with pytest.raises(ValidationError, match="colour"):
        api.get("/api/v1/deployments?colour=red")
    with pytest.raises(ValidationError):
        api.get("/api/v1/deployments?limit=0")
    with pytest.raises(ValidationError):
        api.post("/api/v1/deployments", {"ensemble": {"version": "V1"}})


def test_logs_follow_until_the_end(node: NodeProcess, tmp_path: Path) -> None:
    slow = TASK.replace('["echo", "hi"]', '["sleep", "1"]')
    started = node.cli("deploy", "-f", write(tmp_path, slow))
    assert started.code == 0, started.stderr
    dep = started.stdout.strip()
    followed = node.cli("logs", dep, "-f", timeout=60)
    assert followed.code == 0, followed.stderr
    # -f returns only once the allocation has ended.
    allocations = node.cli("get", "allocations", dep, "--json").json()
    assert isinstance(allocations, list)
    assert allocations[0]["status"] == "completed"
