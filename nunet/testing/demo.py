"""`make demo`: three nodes on loopback run real jobs in Docker, end to end.

alice is the user and orchestrator; bob and charlie are providers. The three join a local
organisation with `nunet cap` (the DMS "join an organisation" flow), the providers onboard a
fifth of the machine, and alice deploys `examples/hello.yaml` (pinned to bob) and
`examples/two-tasks.yaml` (one task on each provider), then prints statuses and logs. Everything
runs in a throw-away directory with free loopback ports through the real `nunet` command, so the
demo is exactly what a user would type.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nunet.testing.cluster import NodeProcess
from nunet.testing.images import ensure_busybox_image
from nunet.testing.org import organisation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GIB = 1 << 30


def _step(node: NodeProcess, title: str, *args: str) -> str:
    print(f"\n[{node.name}] $ nunet {' '.join(args)}    # {title}", flush=True)
    result = node.cli(*args, timeout=180)
    out = (result.stdout + result.stderr).rstrip()
    print(out, flush=True)
    if result.code != 0:
        raise SystemExit(f"demo failed: `nunet {' '.join(args)}` exited {result.code}")
    return result.stdout


def _json(node: NodeProcess, *args: str) -> Any:
    result = node.cli(*args, "--json")
    if result.code != 0:
        raise SystemExit(f"demo failed: `nunet {' '.join(args)}` exited {result.code}:\n"
                         f"{result.stderr}")
    return result.json()


def _fifth_of_machine(node: NodeProcess) -> tuple[str, str, str]:
    machine = _json(node, "resources", "machine")
    cpu = max(1.0, round(machine["cpu"]["threads"] * 0.2, 1))
    ram = max(0.5, round(machine["ram_bytes"] * 0.2 / GIB, 2))
    disk = round(min(machine["disk"]["free_bytes"] * 0.2 / GIB, 2.0), 2)
    return str(cpu), str(ram), str(disk)


def _pinned(tmp: Path, did: str) -> Path:
    text = (EXAMPLES / "hello.yaml").read_text()
    path = tmp / "hello-on-bob.yaml"
    path.write_text(text.rstrip("\n") + f"\n    peer: {did}\n")
    return path


def main() -> int:
    t0 = time.monotonic()
    print("building the local busybox image (no registry needed) ...", flush=True)
    image = ensure_busybox_image()
    print(f"image {image} ready")
    with tempfile.TemporaryDirectory(prefix="nunet-demo-") as tmp:
        root = Path(tmp)
        alice, bob, charlie = (NodeProcess(root, name) for name in ("alice", "bob", "charlie"))
        nodes = [alice, bob, charlie]
        for node in nodes:
            node.extra_env["NUNET_BID_WINDOW_S"] = "0.5"
        try:
            print(f"\nstarting alice in {alice.home} (API on 127.0.0.1:{alice.rest_port}) ...")
            alice.start()
            print(f"alice ready after {alice.wait_ready():.3f} s")
            address = _json(alice, "peers", "self")["addresses"][0]
            print(f"starting bob and charlie with BOOTSTRAP_PEERS={address} ...")
            for node in (bob, charlie):
                node.extra_env["BOOTSTRAP_PEERS"] = address
                node.start()
            for node in (bob, charlie):
                print(f"{node.name} ready after {node.wait_ready():.3f} s")

            print("\nthe three join an organisation whose key lives with alice: the org grants "
                  "each user /dms/deployment, /public, /broadcast (topic /nunet); each node "
                  "trusts the org for that, trusts its own user, and holds its user's "
                  "delegation", flush=True)
            members = organisation(nodes)
            for member in members:
                print(f"  {member.node.name}: node {member.node_did}, user {member.user_did}")
            _step(bob, "bob's capability context", "cap", "list", "-c", "dms")

            for node in (bob, charlie):
                cpu, ram, disk = _fifth_of_machine(node)
                _step(node, f"{node.name} offers a fifth of the machine", "onboard",
                      "--cpu", cpu, "--ram", ram, "--disk", disk, "--no-bench")
            _step(alice, "bob answers alice (a capability-checked actor call)",
                  "actor", "cmd", "/public/hello", "-d", members[1].node_did)

            hello = _pinned(root, members[1].node_did)
            out = _step(alice, "deploy the greeting, pinned to bob, and wait", "deploy",
                        "-f", str(hello), "--wait", "-t", "60")
            first = out.splitlines()[0]
            _step(alice, "its logs", "logs", first, "--allocation", "hello")

            out = _step(alice, "two tasks: one on each provider", "deploy",
                        "-f", str(EXAMPLES / "two-tasks.yaml"), "--wait", "-t", "60")
            second = out.splitlines()[0]
            _step(alice, "their logs", "logs", second)
            _step(alice, "where everything ran", "get", "allocations", second)
            _step(alice, "all deployments", "get", "deployments")
            _step(bob, "bob's resources are free again", "resources", "free")
        finally:
            codes = [node.stop() for node in reversed(nodes)]
        print(f"\nnodes stopped with exit codes {codes} after {time.monotonic() - t0:.1f} s")
        if any(codes):
            for node in nodes:
                print(node.log(), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
