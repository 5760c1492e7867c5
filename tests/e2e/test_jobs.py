"""Jobs end to end on real nodes and the real Docker engine: alice (user and orchestrator), bob
and charlie (providers) join an organisation with `nunet cap`, the providers onboard, and alice
deploys with `nunet deploy` as a user would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_support import containers, ok, onboard

from nunet.cli.client import ApiClient
from nunet.testing.cluster import CliResult, NodeProcess
from nunet.testing.org import Member, organisation

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"








@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[
        list[Member]]:
    root = tmp_path_factory.mktemp("jobs")
    nodes = [NodeProcess(root, name) for name in ("alice", "bob", "charlie")]
    for node in nodes:
        node.extra_env["NUNET_BID_WINDOW_S"] = "0.5"
    try:
        nodes[0].start()
        nodes[0].wait_ready()
        boot = ok(nodes[0], "peers", "self", "--json").json()["addresses"][0]  # type: ignore[index]
        for node in nodes[1:]:
            node.extra_env["BOOTSTRAP_PEERS"] = boot
            node.start()
        for node in nodes[1:]:
            node.wait_ready()
        joined = organisation(nodes)
        for node in nodes[1:]:
            onboard(node)
        yield joined
        # After every deployment: nothing held, nothing left running.
        for node in nodes[1:]:
            free = ok(node, "resources", "free", "--json").json()
            assert free == ok(node, "resources", "onboarded", "--json").json(), node.name
        for member in joined[1:]:
            assert containers(f"org.nunet.provider={member.node_did}") == [], member.node.name
    finally:
        for node in nodes:
            node.kill()


def deploy(alice: NodeProcess, file: Path, *flags: str) -> tuple[str, CliResult]:
    result = alice.cli("deploy", "-f", str(file), "--wait", "-t", "60", *flags, timeout=180)
    assert "Traceback" not in result.stderr
    assert result.stdout, result.stderr
    return result.stdout.splitlines()[0], result


def status(alice: NodeProcess, deployment: str) -> dict[str, object]:
    data = ok(alice, "get", "deployments", "--json").json()
    assert isinstance(data, dict)
    return next(item for item in data["items"] if item["id"] == deployment)


def test_hello_pinned_to_bob_completes_with_its_greeting(members: list[Member],
                                                         tmp_path: Path) -> None:
    alice, bob, _ = members
    pinned = tmp_path / "hello.yaml"
    text = (EXAMPLES / "hello.yaml").read_text()
    assert text.endswith("  node1:\n    allocations:\n      - hello\n"
                         "    failure_recovery: stay_down\n")
    pinned.write_text(text + f"    peer: {bob.node_did}\n")  # the last node: node1
    assert f"peer: {bob.node_did}" in pinned.read_text()
    t0 = time.monotonic()
    dep, result = deploy(alice.node, pinned)
    took = time.monotonic() - t0
    assert result.code == 0, result.stderr + alice.node.log()
    item = status(alice.node, dep)
    assert item["status"] == "Completed", item
    assert item["providers"] == {"node1": bob.node_did}
    logs = ok(alice.node, "logs", dep, "--allocation", "hello")
    assert "Hello from nunet!" in logs.stdout
    free = ok(bob.node, "resources", "free", "--json").json()
    assert free == ok(bob.node, "resources", "onboarded", "--json").json()
    print(f"hello pinned to bob: Completed in {took:.2f} s (CLI included)")


def test_two_tasks_land_on_two_providers(members: list[Member]) -> None:
    alice, bob, charlie = members
    dep, result = deploy(alice.node, EXAMPLES / "two-tasks.yaml")
    assert result.code == 0, result.stderr + alice.node.log()
    item = status(alice.node, dep)
    assert item["status"] == "Completed", item
    assert sorted(item["providers"].values()) == sorted(  # type: ignore[attr-defined]
        [bob.node_did, charlie.node_did])
    logs = ok(alice.node, "logs", dep)
    assert "[task-one] task one on" in logs.stdout
    assert "[task-two] task two on" in logs.stdout
    allocations = json.loads(ok(alice.node, "get", "allocations", dep, "--json").stdout)
    assert {a["status"] for a in allocations} == {"completed"}


def test_a_failing_command_fails_with_exit_code_and_stderr(members: list[Member],
                                                           tmp_path: Path) -> None:
    alice = members[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLES / "hello.yaml").read_text().replace(
        'cmd: ["echo", "Hello from nunet!"]', 'cmd: ["sh", "-c", "echo oops >&2; exit 3"]'))
    dep, result = deploy(alice.node, bad)
    assert result.code == 1
    item = status(alice.node, dep)
    assert item["status"] == "Failed"
    reason = str(item["reason"])
    assert "exit code 3" in reason
    assert "oops" in reason


def test_an_oversized_request_queues_then_fails_with_the_reason(members: list[Member],
                                                                 tmp_path: Path) -> None:
    alice = members[0]
    big = tmp_path / "big.yaml"
    big.write_text((EXAMPLES / "hello.yaml").read_text().replace("cores: 0.5", "cores: 64"))
    started = ok(alice.node, "deploy", "-f", str(big), "-t", "4")
    dep = started.stdout.strip()
    deadline = time.monotonic() + 20
    while "needs 64 cores" not in str(status(alice.node, dep)["reason"]):
        assert time.monotonic() < deadline, status(alice.node, dep)
        time.sleep(0.2)
    queued = ok(alice.node, "get", "deployments", "--status", "Preparing").stdout
    assert dep in queued
    assert "needs 64 cores" in queued
    while status(alice.node, dep)["status"] != "Failed":
        assert time.monotonic() < deadline + 10
        time.sleep(0.2)
    assert "timed out after 4 s while Preparing" in str(status(alice.node, dep)["reason"])


def test_a_service_runs_then_shuts_down_cleanly(members: list[Member]) -> None:
    alice = members[0]
    dep, result = deploy(alice.node, EXAMPLES / "service.yaml")
    assert result.code == 0, result.stderr + alice.node.log()
    assert status(alice.node, dep)["status"] == "Running"
    stopped = ok(alice.node, "shutdown", dep, "--wait", "--json")
    assert stopped.json()["status"] == "Completed"  # type: ignore[index]


def containers_of(deployment: str) -> list[str]:
    return containers(f"nunet.deployment={deployment}", running_only=True)


def test_a_killed_provider_is_redeployed_and_its_copy_stopped(members: list[Member],
                                                              tmp_path: Path) -> None:
    alice, bob, charlie = members
    text = (EXAMPLES / "service.yaml").read_text()
    head, _, tail = text.rpartition("    failure_recovery: restart\n")  # the node's policy
    moving = tmp_path / "moving.yaml"
    moving.write_text(head + "    failure_recovery: redeploy\n" + tail)
    dep, result = deploy(alice.node, moving)
    assert result.code == 0, result.stderr + alice.node.log()
    first = status(alice.node, dep)["providers"]["node1"]  # type: ignore[index]
    victim, other = (bob, charlie) if first == bob.node_did else (charlie, bob)
    assert len(containers_of(dep)) == 1
    victim.node.kill()  # SIGKILL: its container runs on, nobody answers for it
    api = ApiClient("127.0.0.1", alice.node.rest_port)
    deadline = time.monotonic() + 90
    while True:
        view = api.get(f"/api/v1/deployments/{dep}")
        if view["status"] == "Running" and view["providers"].get("node1") == other.node_did:
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.5)
    assert view["excluded"] == [victim.node_did]
    assert any("stopped answering" in change["reason"] for change in view["history"])
    assert view["allocations"][0]["attempt"] == 2
    # The victim comes back and re-adopts its container; the orchestrator has it stopped.
    victim.node.start()
    victim.node.wait_ready()
    while len(containers_of(dep)) != 1:
        assert time.monotonic() < deadline + 60, containers_of(dep)
        time.sleep(0.5)
    stopped = ok(alice.node, "shutdown", dep, "--wait", "--json")
    assert stopped.json()["status"] == "Completed"  # type: ignore[index]
    assert containers_of(dep) == []
