"""`make demo`: two nodes on embedded defaults find each other; one onboards; both stop cleanly.

Everything runs in a throw-away directory with free loopback ports, through the real `nunet`
command, so the demo is exactly what a user would type.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from nunet.testing.cluster import NodeProcess


def _step(node: NodeProcess, title: str, *args: str) -> str:
    print(f"\n$ nunet {' '.join(args)}    # {title}", flush=True)
    result = node.cli(*args)
    out = (result.stdout + result.stderr).rstrip()
    print(out, flush=True)
    if result.code != 0:
        raise SystemExit(f"demo failed: `nunet {' '.join(args)}` exited {result.code}")
    return out


def _fifth_of_machine(node: NodeProcess) -> tuple[str, str, str]:
    machine = node.cli("resources", "machine", "--json").json()
    assert isinstance(machine, dict)
    gib = 1 << 30
    cpu = max(1.0, round(machine["cpu"]["threads"] * 0.2, 1))
    ram = round(machine["ram_bytes"] * 0.2 / gib, 2)
    disk = round(min(machine["disk"]["free_bytes"] * 0.2 / gib, 2.0), 2)
    return str(cpu), str(ram), str(disk)


def _json_step(node: NodeProcess, *args: str) -> Any:
    result = node.cli(*args, "--json")
    if result.code != 0:
        raise SystemExit(f"demo failed: `nunet {' '.join(args)}` exited {result.code}")
    return result.json()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nunet-demo-") as tmp:
        alice = NodeProcess(Path(tmp), "alice")
        bob = NodeProcess(Path(tmp), "bob")
        nodes = [alice, bob]
        print(f"starting alice in {alice.home} (API on 127.0.0.1:{alice.rest_port}) ...")
        alice.start()
        try:
            print(f"alice ready after {alice.wait_ready():.3f} s")
            _step(alice, "alice's identity and p2p address", "peers", "self")
            address = _json_step(alice, "peers", "self")["addresses"][0]
            print(f"\nstarting bob with BOOTSTRAP_PEERS={address} ...")
            bob.extra_env["BOOTSTRAP_PEERS"] = address
            bob.start()
            print(f"bob ready after {bob.wait_ready():.3f} s")
            _step(alice, "what alice's machine has", "resources", "machine")
            cpu, ram, disk = _fifth_of_machine(alice)
            _step(alice, "offer a fifth of it (measures the machine first)", "onboard",
                  "--cpu", cpu, "--ram", ram, "--disk", disk)
            _step(alice, "onboarding status", "status")
            _step(alice, "alice's peers: bob found her through the bootstrap address",
                  "peers", "list")
            alice_did = _json_step(alice, "peers", "self")["did"]
            _step(bob, "bob pings alice over QUIC", "peers", "ping", alice_did)
            _step(alice, "withdraw", "offboard")
        finally:
            codes = [node.stop() for node in reversed(nodes)]
        print(f"\nnodes stopped with exit codes {codes}")
        if any(codes):
            for node in nodes:
                print(node.log(), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
