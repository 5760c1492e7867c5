"""Real nodes on loopback find each other and talk: bootstrap, DHT lookups, ping, connect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nunet.testing.cluster import NodeProcess


def _self(node: NodeProcess) -> dict[str, object]:
    me = node.cli("peers", "self", "--json")
    assert me.code == 0, me.stderr
    data = me.json()
    assert isinstance(data, dict)
    return data


def _wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _peer_dids(node: NodeProcess) -> set[str]:
    listed = node.cli("peers", "list", "--json").json()
    assert isinstance(listed, list)
    return {p["did"] for p in listed}


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    nodes = [NodeProcess(tmp_path, name) for name in ("alice", "bob", "charlie")]
    try:
        nodes[0].start()
        nodes[0].wait_ready()
        boot = _self(nodes[0])["addresses"]
        assert isinstance(boot, list)
        assert boot, "alice announces no address"
        for node in nodes[1:]:
            node.extra_env["BOOTSTRAP_PEERS"] = boot[0]
            node.start()
        for node in nodes[1:]:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def test_bootstrap_discovery_and_ping(trio: list[NodeProcess]) -> None:
    alice, bob, _ = trio
    dids = {n.name: _self(n)["did"] for n in trio}
    _wait_for(lambda: {dids["bob"], dids["charlie"]} <= _peer_dids(alice))
    # bob never dialled charlie: the ping finds charlie's address through the DHT.
    ping = bob.cli("peers", "ping", str(dids["charlie"]), "--json")
    assert ping.code == 0, ping.stderr + bob.log()
    reply = ping.json()
    assert isinstance(reply, dict)
    assert reply["did"] == dids["charlie"]
    assert 0 < reply["rtt_ms"] < 5000
    dht = alice.cli("peers", "dht", "--json").json()
    assert isinstance(dht, dict)
    assert "table" in dht
    assert "stats" in dht


def test_peer_errors_are_clear(trio: list[NodeProcess]) -> None:
    alice = trio[0]
    bad = alice.cli("peers", "connect", "/ip4/127.0.0.1/tcp/1")
    assert bad.code == 1
    assert "addr" in bad.stderr
    assert "Traceback" not in bad.stderr
    dead = alice.cli("peers", "connect", "/ip4/127.0.0.1/udp/9/quic-v1")
    assert dead.code == 1
    malformed = alice.cli("peers", "ping", "did:key:nope")
    assert malformed.code == 1
    assert "did" in malformed.stderr.lower()


def test_killed_peer_rejoins(trio: list[NodeProcess]) -> None:
    alice, bob, _ = trio
    bob_did = _self(bob)["did"]
    _wait_for(lambda: bob_did in _peer_dids(alice))
    bob.kill()
    # Nothing tells alice that a killed process is gone; her next use of the connection does.
    lost = alice.cli("peers", "ping", str(bob_did))
    assert lost.code == 1
    assert "Traceback" not in lost.stderr
    _wait_for(lambda: bob_did not in _peer_dids(alice), timeout=30)
    bob.start()
    bob.wait_ready()
    _wait_for(lambda: bob_did in _peer_dids(alice))
