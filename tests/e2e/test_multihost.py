"""Five nodes on five "machines" (network namespaces on one bridge), through the real CLI.

Discovery from one bootstrap peer, a killed node that restarts and rejoins, 100 ms of added
delay showing in QoS round-trip times, and a partitioned node marked unavailable that recovers
after the partition heals. Skipped only where namespaces cannot be made.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nunet.testing.cluster import NodeProcess
from nunet.testing.netns import Testbed, namespaces_available, relay_command

pytestmark = pytest.mark.skipif(
    namespaces_available() is not None, reason=str(namespaces_available())
)
PORT = 9000


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what}")


class Fleet:
    def __init__(self, bed: Testbed, root: Path) -> None:
        self.bed = bed
        self.nodes: list[NodeProcess] = []
        self.dids: list[str] = []
        for host in bed.hosts:
            node = NodeProcess(root, f"n{host.index}", use_socket=True)
            node.prefix = host.exec_prefix
            node.listen = f"/ip4/0.0.0.0/udp/{PORT}/quic-v1"
            node.extra_env.update({"DMS_P2P_QOS_INTERVAL": "1", "DMS_P2P_QOS_DEADLINE_MS": "500"})
            if host.index:
                node.extra_env["BOOTSTRAP_PEERS"] = f"/ip4/{bed.hosts[0].ip}/udp/{PORT}/quic-v1"
            self.nodes.append(node)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
            node.wait_ready()
            me = node.cli("peers", "self", "--json").json()
            assert isinstance(me, dict)
            self.dids.append(me["did"])

    def ping(self, i: int, j: int) -> float | None:
        done = self.nodes[i].cli("peers", "ping", self.dids[j], "--json", timeout=30)
        if done.code != 0:
            return None
        reply = done.json()
        assert isinstance(reply, dict)
        return float(reply["rtt_ms"])

    def score(self, i: int, j: int) -> dict[str, float] | None:
        scores = self.nodes[i].cli("peers", "score", "--json").json()
        assert isinstance(scores, dict)
        found = scores.get(self.dids[j])
        return found if isinstance(found, dict) else None

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Testbed(5) as bed:
        group = Fleet(bed, tmp_path)
        try:
            group.start()
            yield group
        finally:
            group.stop()


def test_discovery_restart_and_partition(fleet: Fleet) -> None:
    # Every node reaches every other, though each only knew the bootstrap node (DHT lookups).
    for j in range(1, 5):
        assert fleet.ping(4, j - 1) is not None, fleet.nodes[4].log()
    _wait_for(lambda: fleet.ping(1, 3) is not None, what="n1 reaches n3")

    # Gossip reaches everyone: each node's hello is heard by all the others.
    for node in fleet.nodes:
        assert node.cli("peers", "hello").code == 0
    everyone = set(fleet.dids)
    for i, node in enumerate(fleet.nodes):
        _wait_for(lambda node=node, i=i: _heard(node) >= everyone - {fleet.dids[i]},
                  what=f"n{i} hears every hello")

    # A killed node is noticed, and rejoins when it comes back.
    fleet.nodes[2].kill()
    assert fleet.ping(0, 2) is None
    fleet.nodes[2].start()
    fleet.nodes[2].wait_ready()
    _wait_for(lambda: fleet.ping(0, 2) is not None, what="n2 rejoined")

    # A partitioned node becomes unavailable in QoS, and recovers after the heal.
    assert fleet.ping(0, 3) is not None
    fleet.bed.partition(fleet.bed.hosts[3])
    _wait_for(lambda: (s := fleet.score(0, 3)) is not None and s["availability"] < 0.8,
              what="n3 marked unavailable")
    low = fleet.score(0, 3)
    assert low is not None
    fleet.bed.heal()
    _wait_for(lambda: (s := fleet.score(0, 3)) is not None and s["score"] > low["score"],
              timeout=45, what="n3 score recovers")


def test_added_delay_shows_in_rtt(fleet: Fleet) -> None:
    h1 = fleet.bed.hosts[1]
    relay = subprocess.Popen(
        [*h1.exec_prefix, *relay_command((h1.ip, 9100), (h1.ip, PORT), 0.05)],
        stdout=subprocess.PIPE, text=True,
    )
    late = NodeProcess(fleet.nodes[0].home.parent, "late", use_socket=True)
    try:
        assert relay.stdout is not None
        assert relay.stdout.readline().startswith("relay")
        direct = fleet.ping(2, 1)
        assert direct is not None
        # `late` lives on h4's machine and reaches n1 only through the relay: +50 ms each way.
        # Direct packets between the two are dropped, so neither side can open a faster path.
        h4 = fleet.bed.hosts[4]
        h1.drop(f"ip saddr {h4.ip} udp sport {PORT + 1} udp dport {PORT}")
        h4.drop(f"ip saddr {h1.ip} udp sport {PORT} udp dport {PORT + 1}")
        late.prefix = h4.exec_prefix
        late.listen = f"/ip4/0.0.0.0/udp/{PORT + 1}/quic-v1"
        late.extra_env.update({
            "BOOTSTRAP_PEERS": f"/ip4/{h1.ip}/udp/9100/quic-v1",
            "DMS_P2P_QOS_INTERVAL": "1",
            "DMS_P2P_QOS_DEADLINE_MS": "500",
        })
        late.start()
        late.wait_ready()
        done = late.cli("peers", "ping", fleet.dids[1], "--json", timeout=30)
        assert done.code == 0, done.stderr + late.log()
        reply = done.json()
        assert isinstance(reply, dict)
        assert reply["rtt_ms"] >= 100.0
        assert reply["rtt_ms"] > direct + 90.0
        _wait_for(lambda: _ewma(late, fleet.dids[1]) >= 100.0, what="QoS RTT shows the delay")
    finally:
        late.kill()
        relay.kill()
        relay.wait()
        if relay.stdout is not None:
            relay.stdout.close()


def _heard(node: NodeProcess) -> set[str]:
    heard = node.cli("peers", "heard", "--json").json()
    assert isinstance(heard, list)
    return {p["did"] for p in heard}


def _ewma(node: NodeProcess, did: str) -> float:
    scores = node.cli("peers", "score", "--json").json()
    assert isinstance(scores, dict)
    entry = scores.get(did)
    if not isinstance(entry, dict):
        return 0.0
    return float(entry.get("ewma_rtt_ms") or 0.0)
