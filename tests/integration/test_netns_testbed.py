"""The multi-host test bed itself: namespaces, bridge, nftables impairments, the delay relay."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from nunet.testing.netns import Host, Testbed, namespaces_available, relay_command

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
"""

PROBE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
t0 = time.perf_counter()
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
try:
    s.recvfrom(2048)
    print(f"{(time.perf_counter() - t0) * 1000:.2f}")
except OSError:
    print("lost")
"""

pytestmark = pytest.mark.skipif(
    namespaces_available() is not None, reason=str(namespaces_available())
)


@pytest.fixture
def bed() -> Iterator[Testbed]:
    with Testbed(3) as testbed:
        yield testbed


def _serve_echo(host: Host, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*host.exec_prefix, sys.executable, "-c", ECHO, host.ip, str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _probe(host: Host, ip: str, port: int, timeout: float = 1.0) -> str:
    return host.run([sys.executable, "-c", PROBE, ip, str(port), str(timeout)]).strip()


def test_hosts_reach_each_other_and_impairments_apply(bed: Testbed) -> None:
    h0, h1, h2 = bed.hosts
    echo = _serve_echo(h1, 7000)
    try:
        assert _probe(h0, h1.ip, 7000) != "lost"
        assert _probe(h2, h1.ip, 7000) != "lost"
        h1.loss(100, from_host=h0)
        assert _probe(h0, h1.ip, 7000, 0.3) == "lost"
        assert _probe(h2, h1.ip, 7000) != "lost"
        bed.heal()
        bed.partition(h1)
        assert _probe(h2, h1.ip, 7000, 0.3) == "lost"
        bed.heal()
        assert _probe(h0, h1.ip, 7000) != "lost"
    finally:
        _stop(echo)


def test_delay_relay_adds_latency(bed: Testbed) -> None:
    h0, h1, _ = bed.hosts
    echo = _serve_echo(h1, 7000)
    relay = subprocess.Popen(
        [*h1.exec_prefix, *relay_command((h1.ip, 7100), (h1.ip, 7000), 0.05)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert relay.stdout is not None
        assert relay.stdout.readline().startswith("relay")
        direct = float(_probe(h0, h1.ip, 7000))
        delayed = float(_probe(h0, h1.ip, 7100, 2.0))
        assert delayed >= 100.0  # 50 ms each way
        assert delayed > direct + 90.0
    finally:
        _stop(relay, echo)


def test_teardown_removes_namespaces() -> None:
    with Testbed(2) as testbed:
        names = [h.ns for h in testbed.hosts] + [testbed.switch]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
