"""The small harness every `bench/bench_*.py` module uses (rules: shared/design/performance.md).

A benchmark module declares the metric names it can produce and yields `Metric`s:

    METRICS = ("thing.ops",)

    def run(ctx: BenchContext) -> Iterator[Metric]:
        samples = ctx.interleave({"ours": ctx.rate(ours_once), "base": ctx.rate(base_once)})
        yield compare("thing.ops", "ops/s", samples["ours"], "base", samples["base"])

`ctx.interleave` measures the candidates A B A B ... over `ctx.repeats` rounds so drift and noise
hit them alike; `compare` quotes medians with min and max and the ratio to the baseline.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal

Better = Literal["higher", "lower"]
Sample = Callable[[], float]

VERSIONED = ("aioquic", "PyNaCl", "blake3", "msgspec", "rocksdict", "Cython", "uvloop")


def _sig(value: float | None) -> float | None:
    """Four significant digits: more would only print noise."""
    return None if value is None else float(f"{value:.4g}")


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str
    better: Better
    baseline: str | None
    baseline_value: float | None
    repeats: int
    min: float
    max: float

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        assert self.baseline_value is not None
        return self.value / self.baseline_value

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": _sig(self.value),
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": _sig(self.baseline_value),
            "ratio": _sig(self.ratio),
            "repeats": self.repeats,
            "min": _sig(self.min),
            "max": _sig(self.max),
            "better": self.better,
        }


def compare(
    name: str,
    unit: str,
    samples: list[float],
    baseline: str,
    baseline_samples: list[float],
    better: Better = "higher",
) -> Metric:
    """Our median against the baseline's median, measured in the same interleaved run."""
    return Metric(
        name=name,
        value=statistics.median(samples),
        unit=unit,
        better=better,
        baseline=baseline,
        baseline_value=statistics.median(baseline_samples),
        repeats=len(samples),
        min=min(samples),
        max=max(samples),
    )


def speedup(
    name: str, samples: list[float], baseline: str, baseline_samples: list[float]
) -> Metric:
    """A unit-less "x" metric: the ratio within each interleaved pair, so that drift between rounds
    cancels; baseline_value is 1 (the baseline against itself), hence ratio == value."""
    ratios = [a / b for a, b in zip(samples, baseline_samples, strict=True)]
    return Metric(
        name=name,
        value=statistics.median(ratios),
        unit="x",
        better="higher",
        baseline=baseline,
        baseline_value=1.0,
        repeats=len(ratios),
        min=min(ratios),
        max=max(ratios),
    )


def alone(name: str, unit: str, samples: list[float], better: Better) -> Metric:
    """A metric with no baseline (start-up time, RSS): median, min and max; ratio is null."""
    return Metric(
        name=name,
        value=statistics.median(samples),
        unit=unit,
        better=better,
        baseline=None,
        baseline_value=None,
        repeats=len(samples),
        min=min(samples),
        max=max(samples),
    )


@dataclass
class BenchContext:
    repeats: int = 7
    min_time: float = 0.2  # seconds of work per sample
    prefixes: tuple[str, ...] = ()
    pin: bool = True
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))

    def wants(self, name: str) -> bool:
        """Whether `name` was asked for: modules may skip the work for metrics nobody wants."""
        return not self.prefixes or name.startswith(self.prefixes)

    def rate(self, once: Callable[[], int]) -> Sample:
        """A sample that calls `once` (which returns the units of work it did) for at least
        `min_time` seconds and returns units per second."""

        def sample() -> float:
            gc.collect()
            units = 0
            start = time.perf_counter()
            deadline = start + self.min_time
            while True:
                units += once()
                now = time.perf_counter()
                if now >= deadline:
                    return units / (now - start)

        return sample

    def interleave(self, candidates: dict[str, Sample]) -> dict[str, list[float]]:
        """Runs every candidate once to warm up, then A B C ... A B C ... for `repeats` rounds."""
        for sample in candidates.values():
            sample()
        results: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(self.repeats):
            for name, sample in candidates.items():
                results[name].append(sample())
        return results

    def repeat(self, sample: Sample) -> list[float]:
        """`repeats` samples of one measurement with no baseline to interleave with."""
        return [sample() for _ in range(self.repeats)]

    @contextlib.contextmanager
    def pinned(self, cpu: int = 0) -> Iterator[None]:
        """Single-thread phases run on one CPU (performance.md); restored afterwards."""
        if not self.pin or not hasattr(os, "sched_setaffinity"):
            yield
            return
        before = os.sched_getaffinity(0)
        target = cpu if cpu in before else min(before)
        os.sched_setaffinity(0, {target})
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)


# --- machine facts --------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _native_built() -> dict[str, bool]:
    from importlib.util import find_spec

    import nunet._native

    names = sorted(p.stem for p in Path(nunet._native.__file__).parent.glob("*.pyx"))
    return {name: find_spec(f"nunet._native.{name}") is not None for name in names}


def machine_facts() -> dict[str, object]:
    """What a reader needs to judge the figures, from the node's own machine detection. The clock
    is the one the kernel lists: measuring it would cost more than this whole report."""
    from nunet.node.machine import detect_machine

    machine = detect_machine(Path.cwd())
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": machine.cpu.model,
        "cpu_mhz": machine.cpu.clock_mhz or None,
        "cpu_mhz_source": "listed by the kernel (/proc/cpuinfo, else cpufreq)",
        "cores": machine.cpu.threads,
        "cores_usable": len(affinity) if affinity is not None else None,
        "ram_gib": round(machine.ram_bytes / 2**30, 1),
        "kernel": machine.kernel,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "versions": {dist: _version(dist) for dist in VERSIONED},
        "nunet_native_built": _native_built(),
        "git_commit": _git_commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
