"""CPU stage: effective clock, integer throughput, floating-point peak and matrix-multiply GFLOPS,
on one thread and on every usable core.

The clock is measured, never read: a chain of dependent adds retires one add per cycle, so adds per
second is the clock the core actually runs at (turbo, throttling and the hypervisor included).
The per-core score that capacity is built on is `cpu.matmul.1t`: real work, within a few percent
of OpenBLAS, rather than the FMA peak no program reaches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nunet.benchmark.measure import StageContext, calibrate, parallel, split, summarize, timed
from nunet.benchmark.model import Result

STEPS = 7
STAGE = "cpu"
_FMA_MUL, _FMA_ADD = 0.999999, 1e-6  # converges to 1: no overflow, no denormals
_MR = 6  # the micro-kernel's rows: thread slices stay whole micro-panels


def _warm_up(ctx: StageContext) -> None:
    """Busy for `warmup_s`, so frequency scaling has settled before the first sample."""
    deadline = time.perf_counter() + ctx.plan.warmup_s
    while time.perf_counter() < deadline:
        ctx.kernels.clock_chain(10_000, 1)


def _rates(
    ctx: StageContext, work: Callable[[int], object], units: float, threads: int
) -> list[float]:
    """`repeats` samples of units/s; `units` is the work of one `work(t)` call."""
    if threads == 1:
        return [units / timed(lambda: work(0)) for _ in range(ctx.plan.repeats)]
    return [units * threads / parallel(work, threads) for _ in range(ctx.plan.repeats)]


def run(ctx: StageContext) -> list[Result]:
    k, plan, threads = ctx.kernels, ctx.plan, ctx.threads
    results: list[Result] = []
    _warm_up(ctx)

    iters = calibrate(lambda n: k.clock_chain(n, 1), plan.sample_s)
    ghz = _rates(ctx, lambda _t: k.clock_chain(iters, 1), iters * k.CLOCK_CHAIN / 1e9, 1)
    listed = f"listed {ctx.listed_mhz:.0f} MHz" if ctx.listed_mhz else "no listed clock"
    results.append(summarize("cpu.clock", STAGE, "GHz", ghz, note=f"dependent adds; {listed}"))
    ctx.step("clock")

    iters = calibrate(lambda n: k.int_mix(n, 1), plan.sample_s)
    gops = iters * k.INT_OPS / 1e9
    for suffix, n in (("1t", 1), ("all", threads)):
        samples = _rates(ctx, lambda t: k.int_mix(iters, t + 1), gops, n)
        results.append(summarize(f"cpu.int.{suffix}", STAGE, "Gops/s", samples, threads=n,
                                 note="64-bit multiply, add, shift, xor; 8 chains"))
        ctx.step(f"integer, {n} thread{'s' if n > 1 else ''}")

    iters = calibrate(lambda n: k.fma_peak(n, _FMA_MUL, _FMA_ADD), plan.sample_s)
    gflop = iters * k.FMA_LANES * 2 / 1e9
    for suffix, n in (("1t", 1), ("all", threads)):
        samples = _rates(ctx, lambda _t: k.fma_peak(iters, _FMA_MUL, _FMA_ADD), gflop, n)
        results.append(summarize(f"cpu.fma.{suffix}", STAGE, "GFLOPS", samples, threads=n,
                                 note=f"fp64 peak, independent multiply-adds, {k.simd()}"))
        ctx.step(f"FMA peak, {n} thread{'s' if n > 1 else ''}")

    for suffix, n in (("1t", 1), ("all", threads)):
        results.append(_matmul(ctx, suffix, n))
        ctx.step(f"matrix multiply, {n} thread{'s' if n > 1 else ''}")
    return results


def _matmul(ctx: StageContext, suffix: str, threads: int) -> Result:
    k = ctx.kernels
    size = ctx.plan.matmul_n
    if threads > 1:
        size = max(size, ctx.plan.matmul_rows * threads)
    a, b, c = (_matrix(ctx, size, value) for value in (0.5, 0.25, 0.0))
    shares = [split(size, threads, t, multiple=_MR) for t in range(threads)]
    scratch = [memoryview(bytearray(8 * k.MATMUL_WORK)).cast("d") for _ in range(threads)]

    def share(t: int, calls: int) -> None:
        lo, hi = shares[t]
        for _ in range(calls):
            k.matmul(a, b, c, lo, hi, scratch[t])

    calls = calibrate(lambda r: share(0, r), ctx.plan.sample_s)
    gflop = 2.0 * size**3 * calls / 1e9 / threads  # one thread's share
    samples = _rates(ctx, lambda t: share(t, calls), gflop, threads)
    return summarize(f"cpu.matmul.{suffix}", STAGE, "GFLOPS", samples, threads=threads,
                     note=f"fp64 {size}x{size} blocked GEMM, {k.simd()}")


def _matrix(ctx: StageContext, n: int, value: float) -> Any:
    raw = memoryview(bytearray(8 * n * n))
    ctx.kernels.fill(raw.cast("d"), value)
    return raw.cast("d", (n, n))
