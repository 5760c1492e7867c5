"""Machine benchmarking (`nunet bench`, nunet/benchmark) against the tools people trust, on the same
machine in the same run (goals in bench/README.md).

Baselines:
- `numpy-openblas`: `numpy.matmul` on the same fp64 matrices, OpenBLAS held to the same thread
  count (its `*_set_num_threads`, found in the loaded library).
- `c-stream`: STREAM's four loops and a threaded triad in C, compiled here with `gcc -O3` and no
  `-march` (as our wheel is), same array size, same number of passes, best pass.
- `fio`: the same pattern on the same file (psync, queue depth 1, O_DIRECT, same block size and
  time).
- `sysbench-cpu`: `sysbench cpu` runs the same prime-counting event as `kernels.primes`: a
  cross-check of the timing, not a figure of merit (the integer score is `cpu.int`).
- `listed-clock`: the MHz the kernel lists; the ratio is how far the measured clock is from it.
A missing tool (gcc, fio, sysbench) skips its baseline with a note; our figure is still reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._harness import BenchContext, Metric, alone, compare

METRICS = (
    "benchmark.cpu.gflops",
    "benchmark.cpu.gflops.all",
    "benchmark.cpu.fma_peak",
    "benchmark.cpu.clock",
    "benchmark.cpu.int",
    "benchmark.cpu.primes",
    "benchmark.memory.copy",
    "benchmark.memory.scale",
    "benchmark.memory.add",
    "benchmark.memory.triad",
    "benchmark.memory.triad.all",
    "benchmark.memory.latency",
    "benchmark.disk.seqwrite",
    "benchmark.disk.seqread",
    "benchmark.disk.randread.iops",
    "benchmark.disk.randwrite.iops",
    "benchmark.run.quick",
    "benchmark.run.full",
    "benchmark.repeat.cpu.gflops",
    "benchmark.repeat.cpu.int",
    "benchmark.repeat.cpu.clock",
    "benchmark.repeat.memory.triad",
    "benchmark.repeat.memory.latency",
    "benchmark.repeat.disk.seqread",
    "benchmark.repeat.disk.randread.iops",
)

MATMUL_N = 512
PRIME_LIMIT = 10_000  # sysbench's default --cpu-max-prime
MIB = 1 << 20
# Headline figures whose run-to-run spread is reported: metric suffix -> result name.
REPEATABILITY = {
    "cpu.gflops": "cpu.matmul.1t",
    "cpu.int": "cpu.int.1t",
    "cpu.clock": "cpu.clock",
    "memory.triad": "memory.triad",
    "memory.latency": "memory.latency",
    "disk.seqread": "disk.seq.read",
    "disk.randread.iops": "disk.rand.read",
}

C_STREAM = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double *a, *b, *c;
static long n, parts;
static pthread_barrier_t go;
static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9;
}
static double starts[256], ends[256];
static void *triad_part(void *arg) {
    long t = (long)arg, lo = n * t / parts, hi = n * (t + 1) / parts;
    pthread_barrier_wait(&go);
    starts[t] = now();
    for (long i = lo; i < hi; i++) a[i] = b[i] + 3.0 * c[i];
    ends[t] = now();
    return NULL;
}
int main(int argc, char **argv) {
    /* stream N PASSES THREADS: THREADS 0 runs the four loops on this thread, THREADS >= 1 the
       triad split over that many threads; prints the best pass of each in GB/s. */
    n = atol(argv[1]); int passes = atoi(argv[2]); parts = atol(argv[3]);
    a = malloc(n * 8); b = malloc(n * 8); c = malloc(n * 8);
    for (long i = 0; i < n; i++) { a[i] = 1.0; b[i] = 2.0; c[i] = 0.0; }
    double best[5] = {0};
    for (int p = 0; p < passes && parts == 0; p++) {
        double t, bw;
        t = now(); for (long i = 0; i < n; i++) c[i] = a[i];
        bw = 16.0 * n / (now() - t) / 1e9; if (bw > best[0]) best[0] = bw;
        t = now(); for (long i = 0; i < n; i++) b[i] = 3.0 * c[i];
        bw = 16.0 * n / (now() - t) / 1e9; if (bw > best[1]) best[1] = bw;
        t = now(); for (long i = 0; i < n; i++) c[i] = a[i] + b[i];
        bw = 24.0 * n / (now() - t) / 1e9; if (bw > best[2]) best[2] = bw;
        t = now(); for (long i = 0; i < n; i++) a[i] = b[i] + 3.0 * c[i];
        bw = 24.0 * n / (now() - t) / 1e9; if (bw > best[3]) best[3] = bw;
    }
    pthread_t th[256];
    for (int p = 0; p < passes && parts > 0; p++) {
        pthread_barrier_init(&go, NULL, parts);
        for (long t = 0; t < parts; t++) pthread_create(&th[t], NULL, triad_part, (void *)t);
        double first = 1e300, last = 0;
        for (long t = 0; t < parts; t++) pthread_join(th[t], NULL);
        for (long t = 0; t < parts; t++) {
            if (starts[t] < first) first = starts[t];
            if (ends[t] > last) last = ends[t];
        }
        pthread_barrier_destroy(&go);
        double bw = 24.0 * n / (last - first) / 1e9; if (bw > best[4]) best[4] = bw;
    }
    printf("{\"copy\": %g, \"scale\": %g, \"add\": %g, \"triad\": %g, \"triad.all\": %g, "
           "\"check\": %g}\n", best[0], best[1], best[2], best[3], best[4], a[n / 2]);
    return 0;
}
"""


def run(ctx: BenchContext) -> Iterator[Metric]:
    from nunet.benchmark.runner import native_kernels

    kernels = native_kernels()
    ctx.log(f"benchmark: kernels dispatch to {kernels.simd()}")
    yield from _cpu(ctx, kernels)
    yield from _memory(ctx, kernels)
    yield from _disk(ctx, kernels)
    yield from _runs(ctx)


# --- CPU ------------------------------------------------------------------------------------------


def _openblas_threads() -> Callable[[int], None] | None:
    """numpy's OpenBLAS `set_num_threads`, looked up in the library numpy loaded."""
    import numpy  # noqa: F401 - loads OpenBLAS

    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "openblas" not in path.lower():
            continue
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                     "scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            if hasattr(lib, name):
                setter = getattr(lib, name)
                return lambda n: setter(ctypes.c_int(n))
    return None


def _cpu(ctx: BenchContext, k: Any) -> Iterator[Metric]:
    import os

    import numpy as np

    from nunet.benchmark.measure import parallel, split
    from nunet.node.machine import detect_cpu

    set_threads = _openblas_threads()
    if set_threads is None:
        ctx.log("benchmark.cpu: OpenBLAS thread control not found; numpy uses its default")
    a, b = np.full((MATMUL_N, MATMUL_N), 0.5), np.full((MATMUL_N, MATMUL_N), 0.25)
    c = np.empty_like(a)
    flops = 2.0 * MATMUL_N**3
    work = [np.empty(k.MATMUL_WORK) for _ in range(os.cpu_count() or 1)]  # as nunet bench does

    def ours() -> int:
        k.matmul(a, b, c, 0, -1, work[0])
        return 1

    def theirs() -> int:
        np.matmul(a, b, out=c)
        return 1

    with ctx.pinned(0):
        if ctx.wants("benchmark.cpu.gflops"):
            if set_threads:
                set_threads(1)
            s = ctx.interleave({"ours": _scaled(ctx.rate(ours), flops / 1e9),
                                "numpy": _scaled(ctx.rate(theirs), flops / 1e9)})
            yield compare("benchmark.cpu.gflops", "GFLOPS", s["ours"], "numpy-openblas",
                          s["numpy"])
        if ctx.wants("benchmark.cpu.clock"):
            samples = ctx.repeat(_scaled(ctx.rate(lambda: k.clock_chain(1000, 1) and 1000),
                                         k.CLOCK_CHAIN / 1e9))
            listed = detect_cpu().clock_mhz / 1000
            yield compare("benchmark.cpu.clock", "GHz", samples, "listed-clock", [listed])
        if ctx.wants("benchmark.cpu.fma_peak"):
            samples = ctx.repeat(_scaled(ctx.rate(lambda: k.fma_peak(10_000, 0.999, 1e-3) and 1),
                                         10_000 * k.FMA_LANES * 2 / 1e9))
            yield alone("benchmark.cpu.fma_peak", "GFLOPS", samples, "higher")
        if ctx.wants("benchmark.cpu.int"):
            samples = ctx.repeat(_scaled(ctx.rate(lambda: k.int_mix(100_000, 1) and 1),
                                         100_000 * k.INT_OPS / 1e9))
            yield alone("benchmark.cpu.int", "Gops/s", samples, "higher")
        if ctx.wants("benchmark.cpu.primes"):
            yield from _primes(ctx, k)

    if ctx.wants("benchmark.cpu.gflops.all"):
        threads = len(os.sched_getaffinity(0))
        n = max(1024, 128 * threads)
        big_a, big_b = np.full((n, n), 0.5), np.full((n, n), 0.25)
        big_c = np.empty_like(big_a)
        shares = [split(n, threads, t, multiple=6) for t in range(threads)]

        if set_threads:
            set_threads(threads)
        gflop = 2.0 * n**3 / 1e9
        calls = max(1, round(ctx.min_time / (gflop / 40)))  # ~min_time at 40 GFLOPS a core

        # As `nunet bench` measures: one thread per CPU doing `calls` multiplies on its rows,
        # timed from the first thread's start to the last one's end. OpenBLAS keeps its own
        # threads between calls, so back-to-back calls are its fair equivalent.
        def ours_all() -> float:
            def rows(t: int) -> None:
                for _ in range(calls):
                    k.matmul(big_a, big_b, big_c, *shares[t], work[t])

            return gflop * calls / parallel(rows, threads)

        def theirs_all() -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                np.matmul(big_a, big_b, out=big_c)
            return gflop * calls / (time.perf_counter() - t0)

        s = ctx.interleave({"ours": ours_all, "numpy": theirs_all})
        yield compare("benchmark.cpu.gflops.all", "GFLOPS", s["ours"], "numpy-openblas",
                      s["numpy"])


def _scaled(sample: Callable[[], float], factor: float) -> Callable[[], float]:
    return lambda: sample() * factor


def _primes(ctx: BenchContext, k: Any) -> Iterator[Metric]:
    events = max(1, int(ctx.min_time * 3000))  # ~3k events/s per core here
    ours = ctx.rate(lambda: k.primes(PRIME_LIMIT, 10) and 10)
    if shutil.which("sysbench") is None:
        ctx.log("benchmark.cpu.primes: sysbench not installed (apt-get install sysbench): "
                "baseline skipped")
        yield alone("benchmark.cpu.primes", "events/s", ctx.repeat(ours), "higher")
        return

    def sysbench() -> float:
        out = subprocess.run(
            ["sysbench", "cpu", "--threads=1", f"--cpu-max-prime={PRIME_LIMIT}",
             f"--events={events}", "--time=0", "run"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout
        return float(out.split("events per second:")[1].split()[0])

    s = ctx.interleave({"ours": ours, "sysbench": sysbench})
    yield compare("benchmark.cpu.primes", "events/s", s["ours"], "sysbench-cpu", s["sysbench"])


# --- memory ---------------------------------------------------------------------------------------


def _compile_stream(directory: Path) -> Path | None:
    if shutil.which("gcc") is None:
        return None
    source = directory / "stream.c"
    source.write_text(C_STREAM)
    binary = directory / "stream"
    subprocess.run(["gcc", "-O3", "-pthread", "-o", str(binary), str(source)], check=True,
                   capture_output=True, timeout=120)
    return binary


def _memory(ctx: BenchContext, k: Any) -> Iterator[Metric]:
    import os

    from nunet.benchmark.measure import timed
    from nunet.benchmark.memory import array_bytes, zeroed
    from nunet.benchmark.plan import FULL
    from nunet.node.machine import detect_cpu

    if not any(ctx.wants(m) for m in METRICS if m.startswith("benchmark.memory.")):
        return
    threads = len(os.sched_getaffinity(0))
    size, sized = array_bytes(_stage_ctx(FULL, k, detect_cpu().cache_bytes))
    ctx.log(f"benchmark.memory: {sized}, {threads} threads for triad.all")
    yield from _stream(ctx, k, size, threads)  # returns before the latency buffer is made
    if ctx.wants("benchmark.memory.latency"):
        chain = zeroed(size).cast("Q")
        k.chase_build(chain, 1)
        k.chase(chain, size // 64)
        steps = 2_000_000
        with ctx.pinned(0):
            samples = ctx.repeat(lambda: timed(lambda: k.chase(chain, steps)) / steps * 1e9)
        yield alone("benchmark.memory.latency", "ns", samples, "lower")


def _stream(ctx: BenchContext, k: Any, size: int, threads: int) -> Iterator[Metric]:
    from nunet.benchmark.measure import parallel, split, timed
    from nunet.benchmark.memory import stream_arrays

    n, passes = size // 8, 3
    a, b, c = stream_arrays(size)
    k.fill(a, 1.0)
    k.fill(b, 2.0)
    k.fill(c, 0.0)
    slices = [slice(*split(n, threads, t)) for t in range(threads)]
    loops = {
        "copy": (16, lambda: k.stream_copy(c, a)),
        "scale": (16, lambda: k.stream_scale(b, c, 3.0)),
        "add": (24, lambda: k.stream_add(c, a, b)),
        "triad": (24, lambda: k.stream_triad(a, b, c, 3.0)),
    }
    # Timed as the C program times its threads: first start to last end (`parallel`'s span).
    triad_all = (24, lambda: parallel(
        lambda t: k.stream_triad(a[slices[t]], b[slices[t]], c[slices[t]], 3.0), threads))
    single = ("copy", "scale", "add", "triad")

    def ours(names: tuple[str, ...]) -> dict[str, float]:
        best = dict.fromkeys(names, 0.0)
        for _ in range(passes):
            for name in names:
                if name == "triad.all":
                    per, span = triad_all
                    best[name] = max(best[name], per * n / span() / 1e9)
                else:
                    per, fn = loops[name]
                    best[name] = max(best[name], per * n / timed(fn) / 1e9)
        return best

    with tempfile.TemporaryDirectory(prefix="nunet-bench-stream-") as tmp:
        binary = _compile_stream(Path(tmp))
        if binary is None:
            ctx.log("benchmark.memory: gcc not installed: c-stream baseline skipped")

        def theirs(parts: int) -> dict[str, float]:
            assert binary is not None
            out = subprocess.run([str(binary), str(n), str(passes), str(parts)],
                                 capture_output=True, text=True, check=True, timeout=300).stdout
            return {name: float(v) for name, v in json.loads(out).items()}

        # Each candidate's pass yields several figures: interleave by hand, warm-up first.
        rounds: dict[str, dict[str, list[float]]] = {"ours": {}, "c-stream": {}}
        for phase, names, parts in (("single", single, 0), ("all", ("triad.all",), threads)):
            pin = ctx.pinned(0) if phase == "single" else contextlib.nullcontext()
            with pin:
                for i in range(ctx.repeats + 1):
                    figures = {"ours": ours(names)}
                    if binary is not None:
                        figures["c-stream"] = theirs(parts)
                    for who, found in figures.items():
                        for name in names:
                            if i:  # round 0 is the warm-up
                                rounds[who].setdefault(name, []).append(found[name])
    for name in (*single, "triad.all"):
        metric = f"benchmark.memory.{name}"
        if not ctx.wants(metric):
            continue
        base = rounds["c-stream"].get(name)
        yield (compare(metric, "GB/s", rounds["ours"][name], "c-stream", base) if base
               else alone(metric, "GB/s", rounds["ours"][name], "higher"))


def _stage_ctx(plan: Any, k: Any, cache_bytes: int, disk_dir: Path | None = None) -> Any:
    from nunet.benchmark.measure import StageContext
    from nunet.benchmark.runner import available_bytes

    return StageContext(plan=plan, kernels=k, threads=1, cache_bytes=cache_bytes,
                        available_bytes=available_bytes(),
                        disk_dir=disk_dir or Path(tempfile.gettempdir()))


# --- disk -----------------------------------------------------------------------------------------


def _fio(pattern: str, block: str, path: Path, size: int, seconds: float, direct: bool) -> float:
    """IOPS (random patterns) or MB/s (sequential) of one fio run of `pattern`."""
    out = subprocess.run(
        ["fio", "--name=nunet", f"--filename={path}", f"--size={size}", f"--rw={pattern}",
         f"--bs={block}", f"--direct={int(direct)}", "--ioengine=psync", "--iodepth=1",
         f"--runtime={int(seconds * 1000)}ms", "--time_based", "--norandommap",
         "--randrepeat=0", "--output-format=json"],
        capture_output=True, text=True, check=True, timeout=seconds + 120,
    ).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    figures = job["write" if "write" in pattern else "read"]
    return float(figures["iops"]) if pattern.startswith("rand") else figures["bw_bytes"] / 1e6


def _disk(ctx: BenchContext, k: Any) -> Iterator[Metric]:
    import itertools

    import msgspec

    from nunet.benchmark.disk import probe_file
    from nunet.benchmark.plan import FULL

    patterns = {
        "benchmark.disk.seqwrite": ("write", "1M", "MB/s"),
        "benchmark.disk.seqread": ("read", "1M", "MB/s"),
        "benchmark.disk.randread.iops": ("randread", "4k", "IOPS"),
        "benchmark.disk.randwrite.iops": ("randwrite", "4k", "IOPS"),
    }
    wanted = [name for name in patterns if ctx.wants(name)]
    if not wanted:
        return
    seconds = max(0.25, ctx.min_time * 5)
    plan = msgspec.structs.replace(FULL, disk_seq_s=seconds, disk_rand_s=seconds)
    have_fio = shutil.which("fio") is not None
    if not have_fio:
        ctx.log("benchmark.disk: fio not installed (apt-get install fio): baseline skipped")
    seeds = itertools.count(1)
    with tempfile.TemporaryDirectory(prefix="nunet-bench-disk-", dir=Path.home()) as tmp:
        stage = _stage_ctx(plan, k, 0, Path(tmp))
        with probe_file(stage) as probe:
            # fio works on our very test file: same blocks, same state in every cache below us.
            fio_file = probe.path
            ctx.log(f"benchmark.disk: {probe.note}; fio on the same file, {seconds:g} s a sample")
            for name in wanted:
                pattern, block, unit = patterns[name]
                write = "write" in pattern
                if pattern.startswith("rand"):
                    ours = lambda write=write: probe.random(write, next(seeds))[0]  # noqa: E731
                else:
                    ours = lambda write=write: probe.sequential(write)  # noqa: E731
                candidates: dict[str, Callable[[], float]] = {"ours": ours}
                if have_fio:
                    candidates["fio"] = lambda p=pattern, b=block: _fio(  # type: ignore[misc]
                        p, b, fio_file, probe.size, seconds, probe.direct)
                s = ctx.interleave(candidates)
                yield (compare(name, unit, s["ours"], "fio", s["fio"]) if have_fio
                       else alone(name, unit, s["ours"], "higher"))


# --- whole runs: duration and run-to-run spread ---------------------------------------------------


def _runs(ctx: BenchContext) -> Iterator[Metric]:
    from nunet.benchmark.plan import FULL, QUICK
    from nunet.benchmark.runner import run_benchmark

    quick_wanted = ctx.wants("benchmark.run.quick") or any(
        ctx.wants(f"benchmark.repeat.{suffix}") for suffix in REPEATABILITY)
    with tempfile.TemporaryDirectory(prefix="nunet-bench-runs-", dir=Path.home()) as tmp:
        if quick_wanted:
            durations, reports = [], []
            for _ in range(ctx.repeats):
                t0 = time.perf_counter()
                reports.append(run_benchmark(QUICK, disk_dir=Path(tmp)))
                durations.append(time.perf_counter() - t0)
            if ctx.wants("benchmark.run.quick"):
                yield alone("benchmark.run.quick", "s", durations, "lower")
            for suffix, result in REPEATABILITY.items():
                if not ctx.wants(f"benchmark.repeat.{suffix}"):
                    continue
                values = [r.result(result).value for r in reports]  # type: ignore[union-attr]
                ctx.log(f"benchmark.repeat.{suffix}: {result} over {len(values)} quick runs: "
                        f"{', '.join(f'{v:g}' for v in values)}")
                spread = (max(values) - min(values)) / statistics.median(values) * 100
                yield alone(f"benchmark.repeat.{suffix}", "%", [spread], "lower")
        if ctx.wants("benchmark.run.full"):
            t0 = time.perf_counter()
            run_benchmark(FULL, disk_dir=Path(tmp))
            yield alone("benchmark.run.full", "s", [time.perf_counter() - t0], "lower")
