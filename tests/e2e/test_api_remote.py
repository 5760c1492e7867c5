"""The local API refuses a caller on another host even when bound to 0.0.0.0.

Two network namespaces joined by a veth pair stand in for two machines; the node runs in one,
the would-be remote caller in the other. Skipped where namespaces cannot be made (not root).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nunet.testing.cluster import NodeProcess

PROBE = """
import json, sys, time, urllib.request, urllib.error
url, host, deadline = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
while True:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            print(r.status, r.read().decode()); break
    except urllib.error.HTTPError as e:
        print(e.code, e.read().decode()); break
    except OSError:
        if time.time() > deadline: print(0, "unreachable"); break
        time.sleep(0.05)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str, str]]:
    tag = secrets.token_hex(3)
    srv, cli = f"nunet-s{tag}", f"nunet-c{tag}"
    octet = int(tag[:2], 16)
    try:
        _ip("netns", "add", srv)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        _ip("netns", "add", cli)
        _ip("link", "add", f"vs{tag}", "type", "veth", "peer", "name", f"vc{tag}")
        _ip("link", "set", f"vs{tag}", "netns", srv)
        _ip("link", "set", f"vc{tag}", "netns", cli)
        for ns, dev, host in ((srv, f"vs{tag}", 1), (cli, f"vc{tag}", 2)):
            _ip("-n", ns, "addr", "add", f"10.203.{octet}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield srv, cli, f"10.203.{octet}.1"
    finally:
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _probe(ns: str, url: str, host: str, wait: float = 15.0) -> tuple[int, str]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, url, host, str(wait)],
        capture_output=True, text=True, timeout=wait + 20, check=True,
    ).stdout
    code, _, body = out.partition(" ")
    return int(code), body


def test_remote_caller_is_refused(two_hosts: tuple[str, str, str], tmp_path: Path) -> None:
    srv, cli, srv_ip = two_hosts
    node = NodeProcess(tmp_path, "alice")
    node.prefix = ["ip", "netns", "exec", srv]
    node.start("--rest-addr", "0.0.0.0")
    try:
        local = f"http://127.0.0.1:{node.rest_port}/health"
        code, body = _probe(srv, local, f"127.0.0.1:{node.rest_port}")
        assert code == 200, node.log()
        remote = f"http://{srv_ip}:{node.rest_port}/health"
        # Even with a Host header that looks local, the peer address gives the caller away.
        code, body = _probe(cli, remote, f"127.0.0.1:{node.rest_port}", wait=5)
        assert code == 403, body
        assert '"forbidden"' in body
    finally:
        node.kill()
