"""What the jobs e2e tests share: running a CLI command that must succeed, onboarding a provider,
and listing the containers of a label (the engine is shared with other tests)."""

from __future__ import annotations

import subprocess

from nunet.testing.cluster import CliResult, NodeProcess

GIB = 1 << 30


def ok(node: NodeProcess, *args: str, timeout: float = 120) -> CliResult:
    result = node.cli(*args, timeout=timeout)
    assert result.code == 0, f"nunet {' '.join(args)}: {result.stderr}\n{node.log()}"
    assert "Traceback" not in result.stderr
    return result


def onboard(node: NodeProcess) -> None:
    """1 core, a fifth of the RAM, 2 GiB of disk; no benchmark (it is not what is tested)."""
    machine = ok(node, "resources", "machine", "--json").json()
    assert isinstance(machine, dict)
    ram = round(machine["ram_bytes"] * 0.2 / GIB, 2)
    ok(node, "onboard", "--cpu", "1", "--ram", str(ram), "--disk", "2", "--no-bench")


def containers(label: str, *, running_only: bool = False) -> list[str]:
    """Ids of the containers with `label` (`key=value`), stopped ones too unless told."""
    flags = "-q" if running_only else "-aq"
    done = subprocess.run(["docker", "ps", flags, "--filter", f"label={label}"],
                          capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.split()
