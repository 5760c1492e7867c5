"""The acceptance scenarios of jobs not covered by test_jobs.py, on real nodes and the real Docker
engine, driven with the CLI as a user would: an S3 input and output round trip, a pinned request
larger than the provider's onboarding, deployment listing with pages, a provider outside the
organisation refusing a deployment, and (last: it breaks alice) capability revocation."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_support import containers, ok, onboard

from nunet.testing.cluster import CliResult, NodeProcess
from nunet.testing.org import Member, organisation

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO_TAIL = "  node1:\n    allocations:\n      - hello\n    failure_recovery: stay_down\n"








def containers_of(deployment: str) -> list[str]:
    return containers(f"nunet.deployment={deployment}")


def wait_for(check: Callable[[], bool], what: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


def start_node(root: Path, name: str, boot: str, s3: Any) -> NodeProcess:
    node = NodeProcess(root, name)
    node.extra_env.update({
        "NUNET_BID_WINDOW_S": "0.5",
        # A provider's S3 credentials are its own process's (never the ensemble's).
        "AWS_ACCESS_KEY_ID": s3.admin[0],
        "AWS_SECRET_ACCESS_KEY": s3.admin[1],
        "AWS_DEFAULT_REGION": "us-east-1",
    })
    if boot:
        node.extra_env["BOOTSTRAP_PEERS"] = boot
    node.start()
    return node


def did_of(node: NodeProcess) -> str:
    return str(ok(node, "peers", "self", "--json").json()["did"])  # type: ignore[index]


def check_idle(node: NodeProcess) -> None:
    free = ok(node, "resources", "free", "--json").json()
    assert free == ok(node, "resources", "onboarded", "--json").json(), node.name


class Cluster:
    def __init__(self, root: Path, s3: Any, boot: str, members: list[Member]) -> None:
        self.root = root
        self.s3 = s3
        self.boot = boot  # alice's address
        self.members = members
        self.dave: NodeProcess | None = None  # started by the test that needs it


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: str,
            s3_server: Any) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("acceptance")
    nodes: list[NodeProcess] = []
    made: Cluster | None = None
    try:
        nodes.append(start_node(root, "alice", "", s3_server))
        nodes[0].wait_ready()
        boot = str(ok(nodes[0], "peers", "self", "--json").json()["addresses"][0])  # type: ignore[index]
        nodes += [start_node(root, name, boot, s3_server) for name in ("bob", "charlie")]
        for node in nodes[1:]:
            node.wait_ready()
        made = Cluster(root, s3_server, boot, organisation(nodes))
        for node in nodes[1:]:
            onboard(node)
        yield made
        # After every deployment of this module: nothing held, nothing left. (By provider: other
        # nodes on this machine may run deployments of their own meanwhile.)
        providers = [(m.node, m.node_did) for m in made.members[1:]]
        if made.dave:
            providers.append((made.dave, did_of(made.dave)))
        for node, did in providers:
            check_idle(node)
            assert containers(f"org.nunet.provider={did}") == [], node.name
    finally:
        for node in nodes + ([made.dave] if made and made.dave else []):
            node.kill()


def deploy(alice: NodeProcess, file: Path, *flags: str, timeout: str = "60") -> tuple[
        str, CliResult]:
    result = alice.cli("deploy", "-f", str(file), "--wait", "-t", timeout, *flags, timeout=180)
    assert "Traceback" not in result.stderr
    assert result.stdout, result.stderr
    return result.stdout.splitlines()[0], result


def status(alice: NodeProcess, deployment: str) -> dict[str, Any]:
    data = ok(alice, "get", "deployments", "--json").json()
    assert isinstance(data, dict)
    return next(item for item in data["items"] if item["id"] == deployment)


def hello(tmp_path: Path, *, peer: str = "", text: str = "", name: str = "hello.yaml") -> Path:
    """examples/hello.yaml, optionally pinned to `peer`, with replacements `text` ("a=>b")."""
    body = (EXAMPLES / "hello.yaml").read_text()
    assert body.endswith(HELLO_TAIL)
    if text:
        old, new = text.split("=>")
        assert old in body
        body = body.replace(old, new)
    if peer:
        body += f"    peer: {peer}\n"  # the last node: node1
    path = tmp_path / name
    path.write_text(body)
    return path


# --- 1. S3 input and output -----------------------------------------------------------------


def test_a_task_round_trips_data_through_s3(cluster: Cluster, tmp_path: Path) -> None:
    import boto3
    import botocore.config

    alice = cluster.members[0].node
    s3 = cluster.s3
    client = boto3.client(
        "s3", endpoint_url=s3.endpoint, region_name="us-east-1",
        aws_access_key_id=s3.admin[0], aws_secret_access_key=s3.admin[1],
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    bucket = f"nunet-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="in/words.txt", Body=b"alpha\nbeta\n")
    volumes = f"""    volume:
      - {{type: s3, name: input, mountpoint: /in, bucket: {bucket}, prefix: in,
          endpoint: "{s3.endpoint}", region: us-east-1, direction: input, read_only: true}}
      - {{type: s3, name: output, mountpoint: /out, bucket: {bucket}, prefix: out,
          endpoint: "{s3.endpoint}", region: us-east-1, direction: output}}
    failure_recovery: stay_down

nodes:
"""
    upper = '["sh", "-c", "tr a-z A-Z < /in/words.txt > /out/upper.txt"]'
    spec = hello(tmp_path, text=f'cmd: ["echo", "Hello from nunet!"]=>cmd: {upper}')
    text = spec.read_text()
    spec.write_text(text.replace("    failure_recovery: stay_down\n\nnodes:\n", volumes, 1))
    assert "direction: output" in spec.read_text()
    dep, result = deploy(alice, spec)
    assert result.code == 0, result.stderr + alice.log()
    assert status(alice, dep)["status"] == "Completed"
    body = client.get_object(Bucket=bucket, Key="out/upper.txt")["Body"].read()
    assert body == b"ALPHA\nBETA\n"
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["in/words.txt", "out/upper.txt"]  # the input was mounted read-only
    # The same outputs come back through the orchestrator.
    ok(alice, "results", dep, "-o", str(tmp_path / "results"))
    fetched = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in fetched] == [b"ALPHA\nBETA\n"], fetched
    assert containers_of(dep) == []


# --- 6. Resources: a pinned request larger than the onboarding ----------------------------


def test_a_pinned_request_over_the_onboarded_ram_fails_with_the_reason(
        cluster: Cluster, tmp_path: Path) -> None:
    alice, bob, _ = cluster.members
    onboarded = ok(bob.node, "resources", "onboarded", "--json").json()
    assert isinstance(onboarded, dict)
    spec = hello(tmp_path, peer=bob.node_did, text="size: 0.25 # GiB=>size: 4096 # GiB")
    dep, result = deploy(alice.node, spec, timeout="2")
    assert result.code == 1
    item = status(alice.node, dep)
    assert item["status"] == "Failed", item
    reason = str(item["reason"])
    assert "timed out after 2 s while Preparing" in reason
    assert "needs 4096 GiB RAM" in reason, reason
    assert reason in result.stdout + result.stderr  # the CLI prints why
    assert containers_of(dep) == []
    assert ok(bob.node, "resources", "free", "--json").json() == onboarded


# --- 5. Listing ------------------------------------------------------------------------------


def listing(alice: NodeProcess, *flags: str) -> dict[str, Any]:
    data = ok(alice, "get", "deployments", "--json", *flags).json()
    assert isinstance(data, dict)
    return data


def test_listing_pages_running_deployments(cluster: Cluster, tmp_path: Path) -> None:
    alice = cluster.members[0].node
    task, result = deploy(alice, hello(tmp_path))
    assert result.code == 0, result.stderr
    started = [ok(alice, "deploy", "-f", str(EXAMPLES / "service.yaml"), "-t", "60")
               .stdout.strip() for _ in range(2)]
    services = set(started)
    assert len(services) == 2
    wait_for(lambda: all(status(alice, s)["status"] == "Running" for s in services),
             lambda: [status(alice, s) for s in services], timeout=60)
    assert status(alice, task)["status"] == "Completed"

    first = listing(alice, "--status", "Running", "--limit", "1", "--offset", "0")
    assert (len(first["items"]), first["more"], first["total"]) == (1, True, 2), first
    second = listing(alice, "--status", "Running", "--limit", "1", "--offset", "1")
    assert (len(second["items"]), second["more"], second["total"]) == (1, False, 2), second
    assert {first["items"][0]["id"], second["items"][0]["id"]} == services
    assert listing(alice, "--status", "Running", "--limit", "1", "--offset", "2")["items"] == []
    completed = listing(alice, "--status", "Completed")
    assert task in [item["id"] for item in completed["items"]]
    assert not services & {item["id"] for item in completed["items"]}

    for service in services:
        assert len(containers_of(service)) == 1
        ok(alice, "shutdown", service)
    wait_for(lambda: all(status(alice, s)["status"] == "Completed" for s in services),
             lambda: [status(alice, s) for s in services], timeout=60)
    wait_for(lambda: all(containers_of(s) == [] for s in services),
             lambda: [containers_of(s) for s in services])
    assert listing(alice, "--status", "Running")["total"] == 0


# --- A provider outside the organisation ----------------------------------------------------


def test_a_provider_outside_the_organisation_refuses_a_deployment(
        cluster: Cluster, tmp_path: Path) -> None:
    alice = cluster.members[0].node
    cluster.dave = dave = start_node(cluster.root, "dave", cluster.boot, cluster.s3)
    dave.wait_ready()
    onboard(dave)
    dave_did = did_of(dave)
    wait_for(lambda: dave_did in ok(alice, "peers", "list", "--json").stdout,
             lambda: ok(alice, "peers", "list").stdout)
    dep, result = deploy(alice, hello(tmp_path, peer=dave_did), timeout="3")
    assert result.code == 1
    item = status(alice, dep)
    assert item["status"] == "Failed", item
    reason = str(item["reason"])
    assert "refused (untrusted_root)" in reason, reason  # dave answered: with a refusal
    assert "is not a trust anchor" in reason, reason  # the organisation, to dave
    assert containers_of(dep) == []
    assert item["providers"] == {}, item


# --- 4. Revocation (last: alice stays revoked) ----------------------------------------------


def test_a_revoked_member_is_refused_by_providers(cluster: Cluster, tmp_path: Path) -> None:
    alice, bob, _ = cluster.members
    pinned = hello(tmp_path, peer=bob.node_did)
    dep, result = deploy(alice.node, pinned)
    assert result.code == 0, result.stderr + alice.node.log()
    assert status(alice.node, dep)["providers"] == {"node1": bob.node_did}

    def hello_bob() -> CliResult:
        return alice.node.cli("actor", "cmd", "/public/hello", "-d", bob.node_did, "-e", "5")

    assert hello_bob().code == 0
    revoked = ok(alice.node, "cap", "revoke", "-c", "org", alice.grant, "--json").json()
    assert revoked["broadcast"] == {"broadcast": True}  # type: ignore[index]
    # bob hears the revocation by gossip.
    wait_for(lambda: hello_bob().code == 1, lambda: hello_bob())
    refused = hello_bob()
    assert "revoked" in refused.stderr, refused.stderr
    dep, result = deploy(alice.node, pinned, timeout="3")
    assert result.code == 1
    item = status(alice.node, dep)
    assert item["status"] == "Failed", item
    assert "refused (revoked)" in str(item["reason"]), item
    assert containers_of(dep) == []
