"""Timing helpers every stage shares: calibration, parallel runs on every core, the summary of a
set of samples, and the context a stage runs in.

A sample is one timed call of a compiled kernel that runs without the GIL; the all-core figures
start one Python thread per usable CPU at a barrier and count the wall time from the first start
to the last finish, so a straggler core lowers the figure as it would lower a real job.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nunet.benchmark.model import Better, Result
from nunet.benchmark.plan import Plan
from nunet.errors import LocalProtocolError


class Kernels(Protocol):
    """`nunet._native.kernels` (or its twin): the functions the stages call."""

    CLOCK_CHAIN: int
    INT_OPS: int
    FMA_LANES: int
    LINE_WORDS: int
    MATMUL_WORK: int

    def simd(self) -> str: ...
    def clock_chain(self, iters: int, step: int) -> int: ...
    def int_mix(self, iters: int, seed: int) -> int: ...
    def fma_peak(self, iters: int, mul: float, add: float) -> float: ...
    def matmul(
        self, a: Any, b: Any, c: Any, start: int = 0, stop: int = -1, work: Any | None = None
    ) -> None: ...
    def fill(self, dst: Any, value: float) -> None: ...
    def stream_copy(self, dst: Any, src: Any) -> None: ...
    def stream_scale(self, dst: Any, src: Any, scalar: float) -> None: ...
    def stream_add(self, dst: Any, a: Any, b: Any) -> None: ...
    def stream_triad(self, dst: Any, b: Any, c: Any, scalar: float) -> None: ...
    def chase_build(self, buf: Any, seed: int) -> None: ...
    def chase(self, buf: Any, steps: int, start: int = 0) -> int: ...
    def disk_seq(self, fd: int, buf: Any, offset: int, nbytes: int, write: bool) -> int: ...
    def disk_random(
        self, fd: int, buf: Any, nblocks: int, duration_ns: int, max_ops: int, write: bool,
        seed: int, lat_ns: Any,
    ) -> int: ...


@dataclass
class StageContext:
    plan: Plan
    kernels: Kernels
    threads: int  # usable CPUs: the all-core runs start this many threads
    cache_bytes: int  # last-level cache, 0 when unknown
    available_bytes: int  # RAM available now
    disk_dir: Path
    listed_mhz: float = 0.0
    step: Callable[[str], None] = field(default=lambda _label: None)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def calibrate(work: Callable[[int], object], target_s: float, *, start: int = 1) -> int:
    """An n for which `work(n)` takes about `target_s` (at least 1): grows n until a call takes a
    tenth of the target, then scales linearly."""
    n = max(1, start)
    while True:
        took = timed(lambda n=n: work(n))  # type: ignore[misc]
        if took >= target_s / 10 or n >= 1 << 40:
            break
        n *= 8 if took < target_s / 100 else 2
    return max(1, int(n * target_s / max(took, 1e-9)))


def parallel(work: Callable[[int], object], threads: int) -> float:
    """Runs `work(t)` for t in range(threads) on as many threads, released together; returns the
    wall time from the first start to the last finish. An error in any thread is re-raised."""
    if threads == 1:
        return timed(lambda: work(0))
    barrier = threading.Barrier(threads)
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def body(t: int) -> None:
        try:
            barrier.wait()
            start = time.perf_counter()
            work(t)
            spans.append((start, time.perf_counter()))
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)
            barrier.abort()

    # Daemon threads: a second Ctrl-C must not wait for a kernel call to finish.
    workers = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (real or errors)[0]
    return max(end for _, end in spans) - min(start for start, _ in spans)


def split(n: int, parts: int, index: int, *, multiple: int = 1) -> tuple[int, int]:
    """The index-th of `parts` near-equal slices of range(n), edges on multiples of `multiple`."""
    units = n // multiple
    lo = units * index // parts * multiple
    hi = n if index == parts - 1 else units * (index + 1) // parts * multiple
    return lo, hi


def summarize(
    name: str,
    stage: str,
    unit: str,
    samples: Sequence[float],
    *,
    better: Better = "higher",
    best: bool = False,
    threads: int = 1,
    note: str = "",
) -> Result:
    """Median (or, with `best`, the best sample) as the headline, with min, median, max."""
    if not samples:
        raise LocalProtocolError(f"{name}: no samples to summarize")
    median = statistics.median(samples)
    lo, hi = min(samples), max(samples)
    value = (hi if better == "higher" else lo) if best else median
    return Result(
        name=name,
        stage=stage,
        value=_sig(value),
        unit=unit,
        better=better,
        min=_sig(lo),
        median=_sig(median),
        max=_sig(hi),
        repeats=len(samples),
        spread_pct=round((hi - lo) / median * 100, 2) if median else 0.0,
        threads=threads,
        note=note,
    )


def _sig(value: float) -> float:
    """Five significant digits: more would only print noise."""
    return float(f"{value:.5g}")
