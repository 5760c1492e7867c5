"""`make profile`: record the py-spy flame graphs of the hot paths into profiles/.

Each entry: output file, workload command. The same commands are listed in profiles/README.md.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (extra py-spy flags, workload)
PROFILES: dict[str, tuple[list[str], list[str]]] = {
    "framing_decode.svg": ([], [sys.executable, str(HERE / "profile_framing.py")]),
    "framing_decode_native.svg": (["--native"], [sys.executable, str(HERE / "profile_framing.py")]),
    "node_startup.svg": ([], [sys.executable, str(HERE / "profile_startup.py"), "20"]),
    "transport_receive.svg": ([], [sys.executable, str(HERE / "profile_transport.py"), "5"]),
    "bench_quick.svg": (["--threads"], [sys.executable, str(HERE / "profile_bench.py"), "2"]),
    "actor_dispatch.svg": ([], [sys.executable, str(HERE / "profile_actor.py"), "5"]),
    "actor_dispatch_inproc.svg": (
        # --native unwinding at 500 Hz falls behind and slows the workload down
        ["--native", "--rate", "100"],
        [sys.executable, str(HERE / "profile_actor.py"), "5", "--inproc"],
    ),
}
# Workloads that run py-spy themselves (it attaches to the node processes they start once their
# set-up is done), writing the listed files into profiles/: workload command.
SELF_RECORDING: dict[tuple[str, ...], list[str]] = {
    ("deployment.svg", "deployment_provider.svg"): [
        sys.executable, str(HERE / "profile_deployment.py"), "20", "--out", str(HERE)],
}


def main(only: list[str]) -> int:
    """Record every flame graph, or only those named (`record.py actor_dispatch.svg`)."""
    known = {*PROFILES, *(n for names in SELF_RECORDING for n in names)}
    unknown = sorted(set(only) - known)
    if unknown:
        print(f"unknown: {', '.join(unknown)}; known: {', '.join(sorted(known))}",
              file=sys.stderr)
        return 2
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    failed = 0
    for name, (flags, workload) in PROFILES.items():
        if only and name not in only:
            continue
        out = HERE / name
        rate = [] if "--rate" in flags else ["--rate", "500"]
        cmd = [py_spy, "record", *rate, *flags, "-o", str(out), "--", *workload]
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            print(f"py-spy failed for {name} (it needs ptrace permission: run as root or set "
                  "kernel.yama.ptrace_scope=0)", file=sys.stderr)
            failed += 1
    for names, workload in SELF_RECORDING.items():
        if only and not set(names) & set(only):
            continue
        print(f"$ {' '.join(workload)}  # -> {', '.join(names)}", flush=True)
        if subprocess.run([*workload, "--py-spy", py_spy], check=False).returncode != 0:
            print(f"recording {', '.join(names)} failed", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
