"""Ensemble V1: good files parse to the right values, every bad case is reported with its path
and line, all problems of a file at once."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from nunet.cli.main import main
from nunet.crypto.keys import KeyPair
from nunet.errors import EnsembleInvalid, ValidationError
from nunet.jobs.spec import Ensemble, ensemble_from_data, ensemble_id, load_ensemble, parse_ensemble
from nunet.node.resources import GIB

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PEER = KeyPair.generate().did
OTHER = KeyPair.generate().did

BASE = """\
version: "V1"
allocations:
  alloc1:
    type: task
    executor: docker
    resources:
      cpu:
        cores: 1
      ram:
        size: 1
      disk:
        size: 2
    execution:
      type: docker
      image: busybox:latest
      cmd: ["echo", "hi"]
nodes:
  node1:
    allocations: [alloc1]
"""


def problems(text: str) -> dict[str, str]:
    """path -> message of every problem in `text`."""
    with pytest.raises(EnsembleInvalid) as info:
        parse_ensemble(textwrap.dedent(text))
    return {p.path or "": p.message for p in info.value.problems}


def one_problem(text: str) -> tuple[str, str]:
    found = problems(text)
    assert len(found) == 1, found
    return next(iter(found.items()))


def base(**changes: object) -> dict:
    """BASE as data, with dotted-path changes applied (a value of ... deletes the key)."""
    import yaml

    data = yaml.safe_load(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = data
        for key in parents:
            target = target[key]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return data


def data_problems(data: object) -> dict[str, str]:
    with pytest.raises(EnsembleInvalid) as info:
        ensemble_from_data(data)
    return {p.path or "": p.message for p in info.value.problems}


# --- good files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hello", "two-tasks", "service"])
def test_examples_validate_and_round_trip(name: str) -> None:
    ensemble = load_ensemble(EXAMPLES / f"{name}.yaml")
    again = parse_ensemble(ensemble.to_json())
    assert again == ensemble
    assert ensemble_id(again) == ensemble_id(ensemble)


def test_hello_example_is_the_greeting_task() -> None:
    e = load_ensemble(EXAMPLES / "hello.yaml")
    alloc = e.allocations["hello"]
    assert (alloc.type, alloc.executor) == ("task", "docker")
    assert alloc.execution.image == "nunet-test/busybox:latest"
    assert "Hello from nunet!" in " ".join(alloc.execution.cmd)
    assert e.nodes["node1"].allocations == ("hello",)
    assert e.summary() == "1 allocation on 1 node"


def test_two_tasks_and_service_examples() -> None:
    two = load_ensemble(EXAMPLES / "two-tasks.yaml")
    assert [a.type for a in two.allocations.values()] == ["task", "task"]
    assert {n: x.allocations for n, x in two.nodes.items()} == {
        "node-a": ("task-one",), "node-b": ("task-two",)}
    service = load_ensemble(EXAMPLES / "service.yaml").allocations["web"]
    assert service.type == "service"
    assert service.healthcheck is not None
    assert service.healthcheck.type == "command"
    assert service.healthcheck.interval == 5.0


def test_base_values() -> None:
    e = parse_ensemble(BASE)
    a = e.allocations["alloc1"]
    assert a.resources.cpu.cores == 1.0
    assert a.resources.ram.bytes == GIB
    assert a.resources.disk.bytes == 2 * GIB
    assert a.execution.cmd == ("echo", "hi")
    assert a.failure_recovery == "stay_down"
    assert e.node_of("alloc1") == "node1"
    r = e.node_resources("node1")
    assert (r.cpu_cores, r.ram_bytes, r.disk_bytes, r.gpus) == (1.0, GIB, 2 * GIB, ())


def test_json_input_is_the_same_ensemble() -> None:
    as_json = json.dumps(base())
    assert parse_ensemble(as_json) == parse_ensemble(BASE)
    assert parse_ensemble(as_json.encode()) == parse_ensemble(BASE)


@pytest.mark.parametrize(("text", "gib"), [
    ("512MiB", 0.5), ("2GB", 2e9 / GIB), ("1.5 GiB", 1.5), ("1024 KiB", 1 / 1024),
    ("3", 3.0), ("1tib", 1024.0), (0.25, 0.25),
])
def test_sizes_with_units(text: object, gib: float) -> None:
    e = ensemble_from_data(base(allocations__alloc1__resources__ram={"size": text}))
    assert e.allocations["alloc1"].resources.ram.size == pytest.approx(gib)


def test_same_size_spelled_differently_gives_the_same_id() -> None:
    a = ensemble_from_data(base(allocations__alloc1__resources__ram={"size": "512MiB"}))
    b = ensemble_from_data(base(allocations__alloc1__resources__ram={"size": 0.5}))
    c = ensemble_from_data(base(allocations__alloc1__resources__ram={"size": 0.75}))
    assert ensemble_id(a) == ensemble_id(b) != ensemble_id(c)
    assert len(ensemble_id(a)) == 32


def test_everything_supported_at_once() -> None:
    e = parse_ensemble(f"""
version: V1
escalation_strategy: redeploy
exclude_peers: [{OTHER}]
metadata: {{owner: alice, priority: 3}}
subnet: {{join: false}}
keys: {{}}
scripts: {{}}
contracts: []
allocations:
  db:
    type: service
    executor: docker
    dnsname: db
    resources:
      cpu: {{cores: 0.5, architecture: amd64, model: ""}}
      ram: {{size: 256MiB}}
      disk: {{size: 1}}
      gpus: [{{vendor: NVIDIA, model: "RTX 3090", vram: 20}}]
    execution:
      type: docker
      image: registry.example.com:5000/team/db@sha256:{"a" * 64}
      entrypoint: ["/bin/sh", "-c"]
      cmd: ["exec db"]
      environment: ["A=1", "B=x=y"]
      working_directory: /srv
    healthcheck: {{type: command, exec: ["true"], interval: 500ms,
                  response: {{type: string, value: ok}}}}
    volumes:
      - {{type: local, name: scratch, mountpoint: /scratch}}
      - {{type: s3, name: inputs, mountpoint: /in, read_only: true, bucket: my-data,
          prefix: runs/1/, endpoint: "http://127.0.0.1:9000", region: us-east-1,
          direction: input}}
    failure_recovery: one_for_one
    keys: []
    provision: []
  web:
    type: service
    executor: null
    resources: {{cpu: {{cores: 1}}, ram: {{size: 1}}, disk: {{size: 1}}}}
    execution: {{type: "null"}}
    depends_on: [db]
  batch:
    type: task
    executor: "null"
    resources: {{cpu: {{cores: 1}}, ram: {{size: 1}}, disk: {{size: 1}}}}
    execution: {{type: "null", cmd: ["x"]}}
nodes:
  n1:
    allocations: [db, web]
    ports:
      - {{public: 8080, private: 80, allocation: web}}
      - {{public: 0, private: 5432, allocation: db}}
    location:
      accept: [{{continent: europe, country: DE, city: Berlin}}, {{continent: Asia}}]
      reject: [{{continent: Europe, country: FR}}]
    peer: {PEER}
    redundancy: 1
    failure_recovery: redeploy
  n2:
    allocations: [batch]
edge_constraints:
  - edges: [n1, n2]
    rtt: 50
""")
    db = e.allocations["db"]
    assert db.dns_name == "db"
    assert db.resources.cpu.architecture == "x86_64"
    assert db.resources.gpus[0].vendor == "nvidia"
    assert db.resources.gpus[0].vram == 20.0
    assert db.execution.env() == {"A": "1", "B": "x=y"}
    assert [v.type for v in db.volume] == ["local", "s3"]
    assert db.volume[1].prefix == "runs/1/"
    assert db.healthcheck is not None
    assert db.healthcheck.interval == 0.5
    assert db.healthcheck.response is not None
    assert db.healthcheck.response.value == "ok"
    assert e.allocations["web"].executor == "null"  # YAML's null is DMS's null executor
    assert e.allocations["batch"].executor == "null"
    n1 = e.nodes["n1"]
    assert n1.peer == PEER
    assert n1.location.accept[0].continent == "Europe"
    assert n1.redundancy == 1
    assert e.edges[0].s == "n1"
    assert e.edges[0].t == "n2"
    assert e.edges[0].rtt == 50.0
    assert e.metadata == {"owner": "alice", "priority": 3}
    assert parse_ensemble(e.to_json()) == e


def test_yaml_12_scalars_as_dms_reads_them() -> None:
    e = parse_ensemble(BASE.replace("cmd: [\"echo\", \"hi\"]",
                                    "cmd: [echo, NO, yes, 22:22, 2001-01-01]"))
    assert e.allocations["alloc1"].execution.cmd == ("echo", "NO", "yes", "22:22", "2001-01-01")


def test_anchors_and_merge_keys() -> None:
    e = parse_ensemble("""
allocations:
  a: &alloc
    type: task
    executor: docker
    resources: &res {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}
    execution: {type: docker, image: busybox}
  b:
    <<: *alloc
    resources: {<<: *res, ram: {size: 2}}
nodes:
  n1: {allocations: [a, b]}
""")
    assert e.allocations["b"].resources.ram.size == 2.0
    assert e.allocations["b"].resources.cpu.cores == 1.0


# --- bad files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "where"), [
    ("allocations: [", "line 1, column"),
    ("allocations:\n  a: 1\n   b: 2\n", "line 3"),
    ("a: 1\na: 2\n", "line 2, column 1: key 'a' given twice"),
    ("nodes: !!python/object:os.system x\n", "could not determine a constructor"),
    ("x: \x00", "unacceptable character"),
])
def test_invalid_yaml_names_line_and_column(text: str, where: str) -> None:
    path, message = one_problem(text)
    assert path == ""
    assert message.startswith("invalid YAML")
    assert where in message


def test_duplicate_allocation_name_is_not_silently_dropped() -> None:
    text = BASE + "  node1:\n    allocations: [alloc1]\n"
    path, message = one_problem(text)
    assert (path, "given twice") == ("", message[message.find("given twice"):][:11])


@pytest.mark.parametrize("text", [b"\xff\xfe\x00", "", "# only a comment\n", "42", "[1, 2]"])
def test_not_an_ensemble(text: str | bytes) -> None:
    with pytest.raises(EnsembleInvalid) as info:
        parse_ensemble(text)
    assert len(info.value.problems) == 1


def test_too_large_file() -> None:
    with pytest.raises(EnsembleInvalid, match="too large"):
        parse_ensemble("#" * (2 << 20))


def test_unknown_fields_name_their_path_and_suggest() -> None:
    found = problems(BASE.replace("      cmd:", "      args: [x]\n      cmd:")
                     .replace("    type: task", "    type: task\n    dns_nme: x")
                     + "foo: 1\n")
    assert found == {
        "allocations.alloc1.dns_nme": "unknown field (did you mean `dns_name`?) (line 5)",
        "allocations.alloc1.execution.args": "unknown field (did you mean `cmd`?) (line 17)",
        "foo": "unknown field (line 22)",
    }


def test_negative_and_zero_resources() -> None:
    found = problems(BASE.replace("cores: 1", "cores: -2").replace("size: 1", "size: 0")
                     .replace("size: 2", "size: -1GB"))
    assert found == {
        "allocations.alloc1.resources.cpu.cores": "must be > 0, got -2 (line 8)",
        "allocations.alloc1.resources.ram.size": "must be > 0, got 0 (line 10)",
        "allocations.alloc1.resources.disk.size":
            'must be GiB or a size such as "512MiB" or "2GB" (units: B, KB, MB, GB, TB, KiB, '
            "MiB, GiB, TiB), got '-1GB' (line 12)",
    }


@pytest.mark.parametrize(("value", "message"), [
    ("true", "must be a number, got a boolean"),
    (".nan", "must be a finite number"),
    ("1e999", "must be a finite number"),
    ("10000", "must be at most 4096"),
    ("0.0001", "must be at least 0.001"),
    ("'4'", "must be a number, got text"),
    ("1" + "0" * 400, "must be at most 4096"),
])
def test_bad_core_counts(value: str, message: str) -> None:
    path, got = one_problem(BASE.replace("cores: 1", f"cores: {value}"))
    assert path == "allocations.alloc1.resources.cpu.cores"
    assert got.startswith(message)


@pytest.mark.parametrize(("executor", "message"), [
    ("kubernetes", "must be one of docker, null, got 'kubernetes'"),
    ("firecracker", "firecracker: not supported yet"),
    ("microvm", "microvm: not supported yet"),
    ("7", "must be text, got a number"),
])
def test_unknown_executor(executor: str, message: str) -> None:
    found = problems(BASE.replace("executor: docker", f"executor: {executor}"))
    assert found["allocations.alloc1.executor"].startswith(message)


def test_executor_must_match_execution_type() -> None:
    path, message = one_problem(BASE.replace("executor: docker", "executor: 'null'"))
    assert path == "allocations.alloc1.execution.type"
    assert message.startswith("must match the allocation's executor (null)")


def test_missing_image_and_required_fields() -> None:
    found = problems(BASE.replace("      image: busybox:latest\n", "")
                     .replace("    type: task\n", "")
                     .replace("      disk:\n        size: 2\n", ""))
    assert found == {
        "allocations.alloc1.execution.image": "required for the docker executor (line 10)",
        "allocations.alloc1.type": "required (line 3)",
        "allocations.alloc1.resources.disk": "required (line 5)",
    }


def test_null_executor_needs_no_image() -> None:
    text = BASE.replace("executor: docker", "executor: null").replace("type: docker",
                                                                        "type: 'null'")
    e = parse_ensemble(text.replace("      image: busybox:latest\n", ""))
    assert e.allocations["alloc1"].execution.image is None


@pytest.mark.parametrize(("image", "ok"), [
    ("busybox", True), ("nunet-test/busybox:latest", True), ("localhost:5000/a/b:v1.2", True),
    ("ghcr.io/org/img@sha256:" + "0" * 64, True), ("Bad Image", False), ("UPPER/x", False),
    ("busybox:", False), ("-x", False),
])
def test_image_references(image: str, ok: bool) -> None:
    data = base(allocations__alloc1__execution__image=image)
    if ok:
        assert ensemble_from_data(data).allocations["alloc1"].execution.image == image
    else:
        assert "allocations.alloc1.execution.image" in data_problems(data)


def test_dependency_cycle_self_and_unknown() -> None:
    found = problems("""
allocations:
  a: &a
    type: task
    executor: docker
    resources: {cpu: {cores: 1}, ram: {size: 1}, disk: {size: 1}}
    execution: {type: docker, image: busybox}
    depends_on: [b]
  b: {<<: *a, depends_on: [c]}
  c: {<<: *a, depends_on: [a, c, ghost]}
  d: {<<: *a, depends_on: [a]}
nodes:
  n1: {allocations: [a, b, c]}
  n2: {allocations: [d]}
""")
    assert found["allocations.a.depends_on"].startswith("dependency cycle: a -> b -> c -> a")
    assert found["allocations.c.depends_on[1]"].startswith("an allocation cannot depend on itself")
    assert found["allocations.c.depends_on[2]"].startswith("no allocation named 'ghost'")
    assert found["allocations.d.depends_on[0]"].startswith(
        "'a' runs on node 'n1' and 'd' on 'n2': dependent allocations must share a node")


def test_duplicate_ports() -> None:
    found = problems(BASE + """\
    ports:
      - {public: 8080, private: 80}
      - {public: 8080, private: 81}
      - {public: 9090, private: 80}
      - {public: 80, private: 70000}
      - {public: 9091, private: 82, allocation: other}
""")
    assert found == {
        "nodes.node1.ports[1].public": "port 8080 is already used by nodes.node1.ports[0] "
                                       "(line 22)",
        "nodes.node1.ports[2].private": "alloc1:80 is already published by nodes.node1.ports[0] "
                                        "(line 23)",
        "nodes.node1.ports[3].public": "must be 0 (any) or 1025..65535, got 80 (line 24)",
        "nodes.node1.ports[3].private": "must be at most 65535, got 70000 (line 24)",
        "nodes.node1.ports[4].allocation": "'other' is not an allocation of this node (line 25)",
    }


def test_placement_rules() -> None:
    found = data_problems(base(nodes={
        "node1": {"allocations": ["alloc1", "ghost", "alloc1"]},
        "node2": {"allocations": ["alloc1"]},
        "bad name!": {"allocations": []},
    }))
    assert found["nodes.node1.allocations[1]"] == "no allocation named 'ghost'"
    assert found["nodes.node1.allocations[2]"] == "'alloc1' is listed twice"
    assert found["nodes.node2.allocations[0]"].startswith("'alloc1' is already on node 'node1'")
    assert found["nodes.bad name!"].startswith("bad name")
    assert found["nodes.bad name!.allocations"] == "must not be empty"


def test_an_allocation_on_no_node() -> None:
    data = base()
    data["allocations"]["lonely"] = data["allocations"]["alloc1"]
    assert data_problems(data) == {
        "allocations.lonely": "not placed on any node: list it under a node's `allocations`"}


def test_peer_pins() -> None:
    found = data_problems(base(
        nodes={"n1": {"allocations": ["alloc1"], "peer": "12D3KooWJwNf7KGNwGxgkGXuYvfS5ZKr"}}))
    assert found["nodes.n1.peer"].startswith("must be a provider's did:key")
    data = base(exclude_peers=[PEER])
    data["allocations"]["b"] = data["allocations"]["alloc1"]
    data["nodes"] = {"n1": {"allocations": ["alloc1"], "peer": PEER},
                     "n2": {"allocations": ["b"], "peer": PEER}}
    with pytest.raises(EnsembleInvalid) as info:
        ensemble_from_data(data)
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("nodes.n1.peer", "this peer is in exclude_peers"),
        ("nodes.n2.peer", "node 'n1' is pinned to the same peer: different nodes run on "
                          "different providers"),
        ("nodes.n2.peer", "this peer is in exclude_peers"),
    ]


def test_task_and_service_rules() -> None:
    found = data_problems(base(allocations__alloc1__healthcheck={"type": "command",
                                                                 "exec": ["true"]}))
    assert found == {"allocations.alloc1.healthcheck":
                     "only a service has a health check: a task's health is its exit code"}
    found = data_problems(base(allocations__alloc1__type="job"))
    assert found == {"allocations.alloc1.type": "must be one of task, service, got 'job'"}


@pytest.mark.parametrize(("changes", "path", "message"), [
    ({"contracts": [{"price": 1}]}, "contracts", "not supported yet"),
    ({"supervisor": {"strategy": "OneForOne"}}, "supervisor", "not supported yet"),
    ({"keys": {"k": "ssh-ed25519 AAAA"}}, "keys", "not supported yet"),
    ({"scripts": {"s": "echo"}}, "scripts", "not supported yet"),
    ({"subnet": {"join": True}}, "subnet.join", "not supported yet"),
    ({"allocations__alloc1__provision": ["setup"]}, "allocations.alloc1.provision",
     "not supported yet"),
    ({"allocations__alloc1__keys": ["k"]}, "allocations.alloc1.keys", "not supported yet"),
    ({"allocations__alloc1__resources__cpu": {"cores": 1, "clock_speed": 3000}},
     "allocations.alloc1.resources.cpu.clock_speed", "not supported yet"),
    ({"allocations__alloc1__volume": {"type": "glusterfs", "name": "v", "mountpoint": "/v"}},
     "allocations.alloc1.volume.type", "glusterfs: not supported yet"),
    ({"edges": [{"s": "node1", "t": "node1", "bw": 10}]}, "edges[0].bw", "not supported yet"),
    ({"nodes__node1__location": {"accept": [{"continent": "Europe", "asn": 15169}]}},
     "nodes.node1.location.accept[0].asn", "not supported yet"),
])
def test_recognised_but_unsupported_is_never_ignored(changes: dict, path: str,
                                                     message: str) -> None:
    found = data_problems(base(**changes))
    assert found[path].startswith(message)


def test_old_dms_spellings() -> None:
    e = ensemble_from_data(base(allocations__alloc1__dnsname="legacy"))
    assert e.allocations["alloc1"].dns_name == "legacy"
    found = data_problems(base(allocations__alloc1__dnsname="a", allocations__alloc1__dns_name="b"))
    assert found == {"allocations.alloc1.dnsname":
                     "`dnsname` is the old spelling of `dns_name`: give only `dns_name`"}


def test_volume_rules() -> None:
    found = data_problems(base(allocations__alloc1__volume=[
        {"type": "local", "name": "a", "mountpoint": "relative", "bucket": "b"},
        {"type": "s3", "name": "a", "mountpoint": "/out", "bucket": "B!", "direction": "output",
         "read_only": True, "key": "k", "prefix": "p"},
        {"type": "s3", "name": "c", "mountpoint": "/", "bucket": "ok-bucket"},
        {"type": "local", "name": "d", "mountpoint": "/x/../etc"},
    ]))
    v = "allocations.alloc1.volume"
    assert found == {
        f"{v}[0].mountpoint": "must be an absolute path without `..`, got 'relative'",
        f"{v}[0].bucket": "only for s3 volumes",
        f"{v}[1].bucket": "must be an S3 bucket name, got 'B!'",
        f"{v}[1].prefix": "give `key` (one object) or `prefix`, not both",
        f"{v}[1].read_only": "an output volume must be writable",
        f"{v}[2].mountpoint": "cannot mount over /",
        f"{v}[2].direction": "must be text, got nothing",
        f"{v}[3].mountpoint": "must be an absolute path without `..`, got '/x/../etc'",
    }


def test_volumes_unique_per_allocation() -> None:
    found = data_problems(base(allocations__alloc1__volume=[
        {"type": "local", "name": "a", "mountpoint": "/a"},
        {"type": "local", "name": "a", "mountpoint": "/a/"},
    ]))
    assert found == {"allocations.alloc1.volume[1].name": "same name as allocations.alloc1."
                                                           "volume[0]",
                     "allocations.alloc1.volume[1].mountpoint": "same mountpoint as "
                                                                 "allocations.alloc1.volume[0]"}


def test_environment_rules() -> None:
    found = data_problems(base(allocations__alloc1__execution__environment=[
        "A=1", "A=2", "1X=3", "novalue", 5]))
    e = "allocations.alloc1.execution.environment"
    assert found == {f"{e}[1]": f"A is already set by {e}[0]", f"{e}[2]": "bad variable name '1X'",
                     f"{e}[3]": "must be \"KEY=VALUE\", got 'novalue'",
                     f"{e}[4]": "must be \"KEY=VALUE\", got 5"}
    found = data_problems(base(allocations__alloc1__execution__environment={"A": "1"}))
    assert found == {e: 'must be a list of "KEY=VALUE" texts'}


def test_location_rules() -> None:
    found = data_problems(base(nodes__node1__location={"accept": [
        {"continent": "Atlantis"}, {"country": "DE"}, {"continent": "Europe", "city": "Paris"}]}))
    a = "nodes.node1.location.accept"
    assert found[f"{a}[0].continent"].startswith("must be one of Africa, Antarctica, Asia")
    assert found[f"{a}[1].continent"] == "required"
    assert found[f"{a}[2].city"] == "a city needs its country"


def test_edges_must_join_existing_different_nodes() -> None:
    found = data_problems(base(edges=[{"s": "node1", "t": "nope", "rtt": 10},
                                      {"s": "node1", "t": "node1"}]))
    assert found == {"edges[0]": "no node named 'nope'", "edges[1]": "an edge joins two "
                                                                       "different nodes"}
    found = data_problems(base(edges=[{"s": "a", "t": "b"}], edge_constraints=[]))
    assert found == {"edge_constraints": "give `edges` or DMS's older `edge_constraints`, "
                                         "not both"}


def test_architectures_on_one_node_must_agree() -> None:
    data = base(allocations__alloc1__resources__cpu={"cores": 1, "architecture": "arm64"})
    data["allocations"]["b"] = dict(data["allocations"]["alloc1"])
    data["allocations"]["b"]["resources"] = {"cpu": {"cores": 1, "architecture": "x86_64"},
                                             "ram": {"size": 1}, "disk": {"size": 1}}
    data["nodes"]["node1"]["allocations"] = ["alloc1", "b"]
    assert data_problems(data) == {"nodes.node1.allocations": "its allocations want different "
                                   "CPU architectures (arm64, x86_64) but share one provider"}


def test_names_and_keys() -> None:
    data = base()
    data["allocations"]["ALLOC1"] = data["allocations"]["alloc1"]
    data["allocations"]["bad_name"] = data["allocations"]["alloc1"]
    data["allocations"][7] = {}
    data["nodes"]["node1"]["allocations"] = ["alloc1", "ALLOC1", "bad_name"]
    found = data_problems(data)
    assert found["allocations.ALLOC1"] == "same name as 'alloc1' (names ignore case)"
    assert found["allocations.bad_name"].startswith("bad name: must be a host name")
    assert found["allocations"] == "allocations names must be text, got a number 7"


def test_every_problem_at_once_sorted_by_line() -> None:
    text = BASE.replace("cores: 1", "cores: 0").replace("image: busybox:latest", "image: 'x y'")
    text = text.replace("allocations: [alloc1]", "allocations: [alloc1]\n    redundancy: -1")
    with pytest.raises(EnsembleInvalid) as info:
        parse_ensemble(text + "bogus: true\n")
    err = info.value
    assert [p.path for p in err.problems] == [
        "allocations.alloc1.resources.cpu.cores", "allocations.alloc1.execution.image",
        "nodes.node1.redundancy", "bogus"]
    assert isinstance(err, ValidationError)
    assert err.to_dict()["code"] == "ensemble_invalid"
    assert len(err.to_dict()["errors"]) == 4  # type: ignore[arg-type]
    assert str(err).splitlines()[0] == ("allocations.alloc1.resources.cpu.cores: must be > 0, "
                                        "got 0 (line 8)")


def test_many_problems_are_capped() -> None:
    data = base(allocations__alloc1__execution__cmd=list(range(500)))
    with pytest.raises(EnsembleInvalid) as info:
        ensemble_from_data(data)
    assert len(info.value.problems) == 201
    assert info.value.problems[-1].message == "... and 300 more problems"


def test_alias_bomb_is_cheap() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\n"
    found = problems(bomb + BASE.replace('cmd: ["echo", "hi"]', "cmd: *a9"))
    # Ten bad entries (lists, not texts) plus the unknown a0..a9 fields: never 10**10 of them.
    assert sum(1 for p in found if p.startswith("allocations.alloc1.execution.cmd[")) == 10


def test_merge_key_bomb_is_cheap() -> None:
    lines = ["a0: &a0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}"]
    lines += [f"a{i}: &a{i} {{<<: [" + ", ".join([f"*a{i - 1}"] * 10) + "]}" for i in range(1, 9)]
    found = problems("\n".join(lines) + "\n" + BASE)
    assert sorted(found) == [f"a{i}" for i in range(9)]


def test_load_ensemble_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EnsembleInvalid) as info:
        load_ensemble(tmp_path / "nope.yaml")
    assert info.value.problems[0].path == "file"


def test_to_json_is_canonical() -> None:
    a = parse_ensemble(BASE)
    b = parse_ensemble(json.dumps(base(), sort_keys=True, indent=3))
    assert a.to_json() == b.to_json()
    assert isinstance(Ensemble, type)
    assert json.loads(a.to_json())["allocations"]["alloc1"]["resources"]["ram"] == {"size": 1.0}


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_validate_good(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES / "two-tasks.yaml")]) == 0
    assert capsys.readouterr().out == "valid: 2 allocations on 2 nodes\n"
    assert main(["validate", str(EXAMPLES / "hello.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True
    assert out["id"] == ensemble_id(load_ensemble(EXAMPLES / "hello.yaml"))


def test_cli_validate_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("cores: 1", "cores: -1") + "foo: 1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(bad)])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"invalid: {bad}: 2 problems",
        "  allocations.alloc1.resources.cpu.cores: must be > 0, got -1 (line 8)",
        "  foo: unknown field (line 20)",
    ]
    assert "Traceback" not in captured.out + captured.err
    with pytest.raises(SystemExit):
        main(["validate", str(bad), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert [e["field"] for e in out["errors"]] == ["allocations.alloc1.resources.cpu.cores", "foo"]
