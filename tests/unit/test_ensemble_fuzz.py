"""Fuzzing the ensemble parser against one rule: any input gives an `Ensemble` or an
`EnsembleInvalid` (a ValidationError) listing problems with paths, never another exception. A
valid result always round-trips through its canonical JSON."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nunet.errors import EnsembleInvalid
from nunet.jobs.spec import Ensemble, ensemble_from_data, ensemble_id, parse_ensemble

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

VALID: dict[str, Any] = {
    "version": "V1",
    "allocations": {
        "a1": {
            "type": "service", "executor": "docker",
            "resources": {"cpu": {"cores": 1}, "ram": {"size": "512MiB"}, "disk": {"size": 1},
                          "gpus": [{"vendor": "nvidia", "vram": 4}]},
            "execution": {"type": "docker", "image": "busybox", "cmd": ["sh", "-c", "x"],
                          "environment": ["A=1"]},
            "healthcheck": {"type": "command", "exec": ["true"]},
            "volume": [{"type": "s3", "name": "in", "mountpoint": "/in", "bucket": "data",
                        "direction": "input"}],
            "depends_on": ["a2"],
        },
        "a2": {
            "type": "task", "executor": "null",
            "resources": {"cpu": {"cores": 0.5}, "ram": {"size": 1}, "disk": {"size": 1}},
            "execution": {"type": "null"},
        },
    },
    "nodes": {
        "n1": {"allocations": ["a1", "a2"],
               "ports": [{"public": 8080, "private": 80, "allocation": "a1"}],
               "location": {"accept": [{"continent": "Europe", "country": "DE"}]},
               "redundancy": 1, "failure_recovery": "redeploy"},
    },
    "metadata": {"k": "v"},
}

FIELD_NAMES = sorted({
    "version", "allocations", "nodes", "edges", "edge_constraints", "supervisor", "keys",
    "scripts", "subnet", "exclude_peers", "metadata", "contracts", "escalation_strategy",
    "executor", "type", "resources", "execution", "dns_name", "dnsname", "healthcheck",
    "volume", "volumes", "failure_recovery", "depends_on", "provision", "cpu", "ram", "disk",
    "gpus", "cores", "size", "vram", "vendor", "model", "image", "cmd", "entrypoint",
    "environment", "working_directory", "exec", "response", "value", "interval", "name",
    "mountpoint", "read_only", "bucket", "key", "prefix", "direction", "ports", "public",
    "private", "allocation", "location", "accept", "reject", "continent", "country", "city",
    "peer", "redundancy", "s", "t", "rtt", "bw", "join", "architecture",
})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(), st.text(max_size=20), st.sampled_from(FIELD_NAMES),
    st.sampled_from(["docker", "null", "task", "service", "512MiB", "-1", "V1", "/x", "a1"]),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10), st.integers(),
                 st.booleans(), st.none())
data = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(keys, children, max_size=6)),
    max_leaves=40,
)


def outcome(run: Any, *args: Any) -> Ensemble | None:
    """Runs the parser; fails the test on any exception but EnsembleInvalid."""
    failure: EnsembleInvalid | None = None
    try:
        ensemble = run(*args)
    except EnsembleInvalid as exc:
        failure = exc
    if failure is not None:
        assert failure.problems
        assert all(p.message and str(p) for p in failure.problems)
        assert len(failure.to_dict()["errors"]) == len(failure.problems)  # type: ignore[arg-type]
        return None
    assert isinstance(ensemble, Ensemble)
    assert parse_ensemble(ensemble.to_json()) == ensemble
    assert len(ensemble_id(ensemble)) == 32
    return ensemble


@FUZZ
@given(st.text(max_size=400))
def test_any_text(text: str) -> None:
    outcome(parse_ensemble, text)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes(raw: bytes) -> None:
    outcome(parse_ensemble, raw)


@FUZZ
@given(data)
def test_any_data(value: Any) -> None:
    outcome(ensemble_from_data, value)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELD_NAMES), data, max_size=8))
def test_any_top_level_mapping(value: dict[str, Any]) -> None:
    outcome(ensemble_from_data, value)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


PATHS = [p for p in _paths(VALID) if p]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The valid ensemble with a few values replaced, deleted or given extra keys."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(data)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent[path[-1]], dict):
                parent[path[-1]][draw(keys)] = draw(data)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced the way there
    return doc


def test_the_seed_is_valid() -> None:
    assert outcome(ensemble_from_data, VALID) is not None


@FUZZ
@given(mutated())
def test_mutated_data(doc: dict[str, Any]) -> None:
    outcome(ensemble_from_data, doc)


@FUZZ
@given(mutated(), st.sampled_from(["yaml", "json"]), st.integers(0, 400), st.text(max_size=5))
def test_mutated_text(doc: dict[str, Any], kind: str, cut: int, junk: str) -> None:
    try:
        text = (yaml.safe_dump(doc, allow_unicode=True) if kind == "yaml"
                else json.dumps(doc, allow_nan=True))
    except (ValueError, TypeError, yaml.YAMLError):
        return  # hypothesis built something the dumpers refuse (non-string JSON keys, ...)
    outcome(parse_ensemble, text)
    outcome(parse_ensemble, text[:cut] + junk + text[cut:])
