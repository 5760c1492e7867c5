"""Workload for the benchmark flame graph: `run_benchmark(QUICK)` over every stage, N times."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from nunet.benchmark.plan import QUICK
from nunet.benchmark.runner import run_benchmark

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="nunet-profile-bench-", dir=Path.home()) as tmp:
        for _ in range(ROUNDS):
            run_benchmark(QUICK, disk_dir=Path(tmp))


if __name__ == "__main__":
    main()
