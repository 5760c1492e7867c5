"""Memory stage: STREAM copy/scale/add/triad bandwidth (one thread, and triad on every core) and
the latency of dependent loads from random cache lines.

STREAM's rules: each array is at least 4x the last-level cache so no pass is served from cache,
bytes are counted as the kernel names them (16 per element for copy and scale, 24 for add and
triad; write-allocate traffic is not counted) and the figure is the best of N passes. Latency
chases one random cycle through every 64-byte line of an array as large, so each load misses the
caches and most miss the TLB too: it is what a pointer-heavy job sees, not the DRAM's datasheet.
"""

from __future__ import annotations

import mmap

from nunet.benchmark.measure import StageContext, calibrate, parallel, split, summarize, timed
from nunet.benchmark.model import Result

STEPS = 3
STAGE = "memory"
MIB = 1 << 20
_SCALAR = 3.0
_LINE = 64


def zeroed(size: int) -> memoryview:
    """`size` zero bytes, mapped lazily: a bytearray would zero-fill them holding the GIL (a
    tenth of the quick run); here the first touch happens in a kernel. Unmapped with the view."""
    return memoryview(mmap.mmap(-1, size))


def stream_arrays(size: int) -> tuple[memoryview[float], memoryview[float], memoryview[float]]:
    """STREAM's a, b, c: `size` bytes of float64 each, staggered by a few cache lines (STREAM's
    OFFSET). Arrays that start at the same offset modulo a large power of two contend for the
    same cache sets and DRAM banks: ~10% of the bandwidth here."""
    stagger = 7 * _LINE
    whole = zeroed(3 * size + 3 * stagger)
    return (whole[0:size].cast("d"),
            whole[size + stagger:2 * size + stagger].cast("d"),
            whole[2 * size + 2 * stagger:3 * size + 2 * stagger].cast("d"))


def array_bytes(ctx: StageContext) -> tuple[int, str]:
    """Bytes per array, and how that size was chosen (for the result notes)."""
    plan = ctx.plan
    size = max(plan.mem_min_bytes, plan.mem_llc_factor * ctx.cache_bytes)
    why = (
        f"{plan.mem_llc_factor}x the {ctx.cache_bytes / MIB:g} MiB last-level cache"
        if size > plan.mem_min_bytes
        else "minimum size"
    )
    if size > plan.mem_max_bytes:
        size, why = plan.mem_max_bytes, "plan's cap"
    ram_cap = ctx.available_bytes // 24 if ctx.available_bytes else size
    if size > ram_cap:
        size, why = ram_cap, "capped at 1/8 of the available RAM: may be served partly from cache"
    size = max(_LINE, size // _LINE * _LINE)
    return size, f"{size / MIB:g} MiB arrays ({why})"


def run(ctx: StageContext) -> list[Result]:
    size, sized = array_bytes(ctx)
    results = _stream(ctx, size, sized)  # frees its arrays before the latency buffer is made
    results.append(_latency(ctx, size, sized))
    ctx.step("latency")
    return results


def _stream(ctx: StageContext, size: int, sized: str) -> list[Result]:
    k, plan = ctx.kernels, ctx.plan
    n = size // 8
    a, b, c = stream_arrays(size)
    k.fill(a, 1.0)
    k.fill(b, 2.0)
    k.fill(c, 0.0)
    kernels = {
        "copy": (16, lambda: k.stream_copy(c, a)),
        "scale": (16, lambda: k.stream_scale(b, c, _SCALAR)),
        "add": (24, lambda: k.stream_add(c, a, b)),
        "triad": (24, lambda: k.stream_triad(a, b, c, _SCALAR)),
    }
    samples: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(plan.mem_repeats):
        for name, (per_element, fn) in kernels.items():
            samples[name].append(per_element * n / timed(fn) / 1e9)
    results = [
        summarize(f"memory.{name}", STAGE, "GB/s", values, best=True, note=sized)
        for name, values in samples.items()
    ]
    ctx.step("STREAM, 1 thread")

    slices = [split(n, ctx.threads, t) for t in range(ctx.threads)]

    def triad_share(t: int) -> None:
        lo, hi = slices[t]
        k.stream_triad(a[lo:hi], b[lo:hi], c[lo:hi], _SCALAR)

    triad_all = [24 * n / parallel(triad_share, ctx.threads) / 1e9 for _ in range(plan.mem_repeats)]
    results.append(summarize("memory.triad.all", STAGE, "GB/s", triad_all, best=True,
                             threads=ctx.threads, note=sized))
    ctx.step(f"triad, {ctx.threads} threads")
    return results


def _latency(ctx: StageContext, size: int, sized: str) -> Result:
    k = ctx.kernels
    chain = zeroed(size).cast("Q")
    k.chase_build(chain, 1)
    lines = size // _LINE
    k.chase(chain, lines)  # one lap: page tables and the TLB walk caches warm, as in a real job
    steps = calibrate(lambda s: k.chase(chain, s), ctx.plan.sample_s, start=1024)
    samples = [timed(lambda: k.chase(chain, steps)) / steps * 1e9 for _ in range(ctx.plan.repeats)]
    return summarize("memory.latency", STAGE, "ns", samples, better="lower",
                     note=f"random 64-byte lines over {sized}")
