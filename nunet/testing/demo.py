"""`make demo`: start a node on embedded defaults, onboard it, show it through the CLI, stop it.

Everything runs in a throw-away directory with free loopback ports, through the real `nunet`
command, so the demo is exactly what a user would type.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

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


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nunet-demo-") as tmp:
        node = NodeProcess(Path(tmp), "demo")
        print(f"starting a node in {node.home} (API on 127.0.0.1:{node.rest_port}) ...")
        node.start()
        try:
            ready = node.wait_ready()
            print(f"node ready after {ready:.3f} s")
            _step(node, "its identity", "peers", "self")
            _step(node, "what the machine has", "resources", "machine")
            cpu, ram, disk = _fifth_of_machine(node)
            _step(node, "offer a fifth", "onboard", "--cpu", cpu, "--ram", ram, "--disk", disk)
            _step(node, "onboarding status", "status")
            _step(node, "free resources", "resources", "free")
            _step(node, "peers (none yet: networking comes next)", "peers", "list")
            _step(node, "withdraw", "offboard")
        finally:
            code = node.stop()
        print(f"\nnode stopped with exit code {code}")
        if code != 0:
            print(node.log(), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
