"""Workload for the deployment flame graphs: records itself (py-spy attaches to the node processes).

Starts the network of `bench/bench_jobs.py`'s `orchestrator.deployments_per_s` (alice orchestrating,
PROVIDERS providers with the null executor, every one a real `nunet run` process on loopback,
an organisation made with `nunet cap`, providers onboarded), then, while py-spy records alice
(`deployment.svg`) and the first provider (`deployment_provider.svg`) for SECONDS, keeps posting
bursts of 50 small unpinned null tasks (`echo`) to alice's REST API (`bench_jobs.burst`: the
Completed deployments of the previous burst are deleted first, then the burst is posted and its
Completed count polled) and waits for each burst to be Completed. The set-up (node starts,
dozens of CLI calls) is not in the graphs: py-spy attaches once the network is ready. Prints
the medians of deployments/s and of the CPU time the node processes spent per deployment.

    python profiles/profile_deployment.py [SECONDS] [--providers N] [--rate HZ] [--out DIR]
                                          [--pinned] [--py-spy PATH]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_jobs import Burst, burst, network, null_yaml  # noqa: E402  (after sys.path)

BURST = 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=20.0)
    parser.add_argument("--providers", type=int, default=9)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--pinned", action="store_true", help="pin each task to a provider")
    parser.add_argument("--py-spy", dest="py_spy",
                        default=shutil.which("py-spy")
                        or str(Path(sys.executable).with_name("py-spy")))
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with network(args.providers, null=True, log=log) as net:
        api = net.api()
        providers = net.dids[1:]
        cycle = itertools.cycle(providers)

        def texts() -> list[str]:
            return [null_yaml(next(cycle) if args.pinned else None) for _ in range(BURST)]

        burst(api, [null_yaml(p) for p in providers])  # warm-up: every provider once
        burst(api, texts())
        pids = net.pids()  # alice first
        recorders = [
            subprocess.Popen([args.py_spy, "record", "--nonblocking", "--rate", str(args.rate),
                              "-d", str(int(args.seconds)), "--pid", str(pid),
                              "-o", str(args.out / name)])
            for name, pid in (("deployment.svg", pids[0]), ("deployment_provider.svg", pids[1]))
        ]
        time.sleep(1.0)  # py-spy attached
        bursts: list[Burst] = []
        while any(r.poll() is None for r in recorders):
            bursts.append(burst(api, texts(), pids))
        failed = sum(r.wait() != 0 for r in recorders)
    rate = statistics.median(b.rate for b in bursts)
    cpu = statistics.median(b.cpu_ms for b in bursts)
    alice = statistics.median(b.orchestrator_cpu_ms for b in bursts)
    print(f"{len(bursts)} bursts of {BURST} ({'pinned' if args.pinned else 'unpinned'}, "
          f"{args.providers} providers), medians: {rate:.1f} deployments/s; CPU per deployment "
          f"{cpu:.1f} ms (alice {alice:.1f} ms, providers {cpu - alice:.1f} ms)")
    if failed:
        print("py-spy failed (it needs ptrace permission: run as root or set "
              "kernel.yama.ptrace_scope=0)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
