"""Benchmark kernels, pure Python: the readable specification of `nunet/_native/kernels.pyx`.

The compiled kernels are the measuring tools of `nunet bench` (`nunet/benchmark/`); this twin
exists so that differential tests can hold them to the same results on small inputs. It is far
too slow to measure anything and `nunet bench` refuses to run on it.

Invariants (both twins keep them):
- Every kernel is deterministic: the same arguments give the same result (floating-point results
  agree to rounding: the compiled FMA path rounds once where this twin rounds twice).
- The compiled kernels release the GIL for their whole loop, so several threads calling them run
  in parallel on several cores; arrays passed to concurrent calls must not overlap where written.
- Arrays are contiguous buffers of float64 (`"d"`) or uint64 (`"Q"`), 1-D unless said otherwise;
  a wrong shape, length, type or a negative count is the caller's bug: `LocalProtocolError`.
- The disk kernels raise `OSError` as the system call does (the caller translates it); O_DIRECT's
  alignment (buffer, offset, length) is the caller's job.

Work units (what a caller divides by the elapsed time):
- `clock_chain(iters, step)`: `iters * CLOCK_CHAIN` dependent 64-bit adds, one per cycle on every
  core made this century, so adds/s is the effective clock.
- `int_mix(iters, seed)`: `iters * INT_OPS` integer ops (multiply, add, shift, xor on 8 independent
  64-bit chains).
- `primes(limit, events)`: `events` times sysbench's `cpu` test event (trial division of every
  integer below `limit`), so events/s compare with `sysbench cpu --cpu-max-prime=limit`.
- `fma_peak(iters, mul, add)`: `iters * FMA_LANES` multiply-adds (2 flops each) on independent
  accumulators: the floating-point peak of one core.
- `matmul(a, b, c, start, stop)`: `2 * (stop - start) * k * n` flops.
- STREAM kernels: bytes moved are 16 per element (copy, scale) or 24 (add, triad), counted as
  STREAM counts them.
- `chase(buf, steps, start)`: `steps` dependent loads, each from another 64-byte line.
"""

from __future__ import annotations

import errno
import math
import os
import time
from typing import Any

from nunet.errors import LocalProtocolError

CLOCK_CHAIN: int = 100
INT_OPS: int = 32
FMA_LANES: int = 48
LINE_WORDS: int = 8  # uint64 words per 64-byte cache line
MATMUL_WORK: int = 96 * 256 + 256 * 2048 + 8  # doubles of packing space the compiled GEMM uses

_MASK = (1 << 64) - 1
_INT_CHAINS = 8
_INT_MUL = 0x9E3779B97F4A7C15
_GOLDEN = 0x9E3779B97F4A7C15


def simd() -> str:
    """Which instruction set the floating-point kernels dispatched to: here, none."""
    return "python"


def _count(value: int, what: str) -> int:
    if not isinstance(value, int) or value < 0:
        raise LocalProtocolError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _splitmix(state: int) -> tuple[int, int]:
    """One step of splitmix64: (new state, output)."""
    state = (state + _GOLDEN) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return state, z ^ (z >> 31)


# The struct formats a buffer of each element type may carry (numpy's uint64 says "L" on LP64),
# and the element size.
_FORMATS = {"d": (("d",), 8), "Q": (("Q", "L"), 8), "q": (("q", "l"), 8), "B": (("B",), 1)}


def _view(obj: Any, fmt: str, what: str, *, writable: bool, ndim: int = 1) -> Any:
    need = (f"{what} must be a {'writable, ' if writable else ''}contiguous {ndim}-D buffer "
            f"of {fmt!r}")
    try:
        view = memoryview(obj)
    except TypeError:
        raise LocalProtocolError(need) from None
    if (
        view.format.lstrip("@=") not in _FORMATS[fmt][0]
        or view.itemsize != _FORMATS[fmt][1]
        or view.ndim != ndim
        or not view.c_contiguous
        or (writable and view.readonly)
    ):
        raise LocalProtocolError(need)
    return view


def _same_length(*views: Any) -> int:
    n = len(views[0])
    if any(len(v) != n for v in views):
        raise LocalProtocolError(f"arrays must have the same length, got {[len(v) for v in views]}")
    return n


# --- CPU ------------------------------------------------------------------------------------------


def clock_chain(iters: int, step: int) -> int:
    """`iters * CLOCK_CHAIN` dependent adds of `step` from 0; returns the sum mod 2**64."""
    _count(iters, "iters")
    _count(step, "step")
    return (iters * CLOCK_CHAIN * step) & _MASK


def int_mix(iters: int, seed: int) -> int:
    """8 chains `x = x * C + i; x ^= x >> 29` for i in range(iters); returns their xor."""
    _count(iters, "iters")
    _count(seed, "seed")
    chains = [(seed + j * _GOLDEN) & _MASK for j in range(_INT_CHAINS)]
    for i in range(iters):
        for j in range(_INT_CHAINS):
            x = (chains[j] * _INT_MUL + i) & _MASK
            chains[j] = x ^ (x >> 29)
    out = 0
    for x in chains:
        out ^= x
    return out


def primes(limit: int, events: int) -> int:
    """sysbench's cpu event, `events` times: count the integers in [3, limit) that no l in
    [2, sqrt(c)] divides. Returns the count summed over the events."""
    _count(limit, "limit")
    _count(events, "events")
    found = 0
    for c in range(3, limit):
        t = math.sqrt(c)
        d = 2
        while d <= t:
            if c % d == 0:
                break
            d += 1
        if d > t:
            found += 1
    return found * events


def fma_peak(iters: int, mul: float, add: float) -> float:
    """`FMA_LANES` accumulators, lane i starting at float(i), each updated `iters` times by
    `acc = acc * mul + add`; returns the sum of the lanes in lane order."""
    _count(iters, "iters")
    total = 0.0
    for lane in range(FMA_LANES):
        acc = float(lane)
        for _ in range(iters):
            acc = acc * mul + add
        total += acc
    return total


def matmul(
    a: Any, b: Any, c: Any, start: int = 0, stop: int = -1, work: Any | None = None
) -> None:
    """Rows `start:stop` of `c = a @ b` (`stop=-1`: to the end); a is m x k, b k x n, c m x n,
    all C-contiguous 2-D float64. Other rows of c are left alone. `work`, at least
    `MATMUL_WORK` float64, is scratch space a caller may reuse across calls (one per thread);
    without it the compiled kernel allocates its own each call."""
    if work is not None and len(_view(work, "d", "work", writable=True)) < MATMUL_WORK:
        raise LocalProtocolError(f"work holds fewer than {MATMUL_WORK} doubles")
    av = _view(a, "d", "a", writable=False, ndim=2)
    bv = _view(b, "d", "b", writable=False, ndim=2)
    cv = _view(c, "d", "c", writable=True, ndim=2)
    m, k = av.shape or (0, 0)
    kb, n = bv.shape or (0, 0)
    if kb != k or cv.shape != (m, n):
        raise LocalProtocolError(f"shapes do not multiply: {av.shape} @ {bv.shape} -> {cv.shape}")
    stop = m if stop == -1 else stop
    if not 0 <= start <= stop <= m:
        raise LocalProtocolError(f"row range {start}:{stop} is outside 0:{m}")
    for i in range(start, stop):
        for j in range(n):
            total = 0.0
            for p in range(k):
                total += av[i, p] * bv[p, j]
            cv[i, j] = total


# --- memory ---------------------------------------------------------------------------------------


def fill(dst: Any, value: float) -> None:
    d = _view(dst, "d", "dst", writable=True)
    for i in range(len(d)):
        d[i] = value


def stream_copy(dst: Any, src: Any) -> None:
    d, s = _view(dst, "d", "dst", writable=True), _view(src, "d", "src", writable=False)
    for i in range(_same_length(d, s)):
        d[i] = s[i]


def stream_scale(dst: Any, src: Any, scalar: float) -> None:
    d, s = _view(dst, "d", "dst", writable=True), _view(src, "d", "src", writable=False)
    for i in range(_same_length(d, s)):
        d[i] = scalar * s[i]


def stream_add(dst: Any, a: Any, b: Any) -> None:
    d = _view(dst, "d", "dst", writable=True)
    x, y = _view(a, "d", "a", writable=False), _view(b, "d", "b", writable=False)
    for i in range(_same_length(d, x, y)):
        d[i] = x[i] + y[i]


def stream_triad(dst: Any, b: Any, c: Any, scalar: float) -> None:
    d = _view(dst, "d", "dst", writable=True)
    x, y = _view(b, "d", "b", writable=False), _view(c, "d", "c", writable=False)
    for i in range(_same_length(d, x, y)):
        d[i] = x[i] + scalar * y[i]


def chase_build(buf: Any, seed: int) -> None:
    """Links the 64-byte lines of `buf` (uint64, length a non-zero multiple of LINE_WORDS) into one
    random cycle: word `LINE_WORDS * i` holds the word index of the line after line i. Sattolo's
    algorithm driven by splitmix64(seed): for i from lines-1 down to 1, swap the links of lines i
    and `r % i`."""
    _count(seed, "seed")
    view = _view(buf, "Q", "buf", writable=True)
    if len(view) == 0 or len(view) % LINE_WORDS:
        raise LocalProtocolError(f"buf length must be a non-zero multiple of {LINE_WORDS}")
    lines = len(view) // LINE_WORDS
    for i in range(lines):
        view[i * LINE_WORDS] = i * LINE_WORDS
    state = seed
    for i in range(lines - 1, 0, -1):
        state, r = _splitmix(state)
        j = r % i
        a, b = i * LINE_WORDS, j * LINE_WORDS
        view[a], view[b] = view[b], view[a]


def chase(buf: Any, steps: int, start: int = 0) -> int:
    """Follows the links `steps` times from word index `start`; returns the word index reached."""
    _count(steps, "steps")
    view = _view(buf, "Q", "buf", writable=False)
    if not 0 <= start < len(view):
        raise LocalProtocolError(f"start {start} is outside the buffer")
    p = start
    for _ in range(steps):
        p = view[p]
        if p >= len(view):
            raise LocalProtocolError(f"link {p} points outside the buffer (not built?)")
    return p


# --- disk -----------------------------------------------------------------------------------------


def disk_seq(fd: int, buf: Any, offset: int, nbytes: int, write: bool) -> int:
    """Reads (or writes) `nbytes` from `offset` in blocks of len(buf); stops early at end of file
    when reading. Returns the bytes done."""
    view = _view(buf, "B", "buf", writable=not write)
    _count(offset, "offset")
    _count(nbytes, "nbytes")
    if len(view) == 0:
        raise LocalProtocolError("buf must not be empty")
    done = 0
    while done < nbytes:
        part = view[: min(len(view), nbytes - done)]
        got = os.pwrite(fd, part, offset + done) if write else os.preadv(fd, [part], offset + done)
        if got <= 0:
            break
        done += got
    return done


def disk_random(
    fd: int, buf: Any, nblocks: int, duration_ns: int, max_ops: int, write: bool, seed: int,
    lat_ns: Any,
) -> int:
    """Reads (or writes) whole blocks of len(buf) bytes at block indexes splitmix64(seed) % nblocks,
    one at a time, until `max_ops` are done or `duration_ns` has passed (monotonic clock); the
    latency of op i in ns goes to `lat_ns[i]` (int64, at least max_ops long). Returns ops done."""
    view = _view(buf, "B", "buf", writable=not write)
    lat = _view(lat_ns, "q", "lat_ns", writable=True)
    for value, what in ((nblocks, "nblocks"), (duration_ns, "duration_ns"), (max_ops, "max_ops"),
                        (seed, "seed")):
        _count(value, what)
    if len(view) == 0 or nblocks == 0:
        raise LocalProtocolError("buf and nblocks must not be empty")
    if len(lat) < max_ops:
        raise LocalProtocolError(f"lat_ns holds {len(lat)} entries, fewer than max_ops={max_ops}")
    block = len(view)
    state = seed
    begin = time.monotonic_ns()
    ops = 0
    while ops < max_ops:
        state, r = _splitmix(state)
        offset = (r % nblocks) * block
        t0 = time.monotonic_ns()
        got = os.pwrite(fd, view, offset) if write else os.preadv(fd, [view], offset)
        t1 = time.monotonic_ns()
        if got != block:
            what = "write" if write else "read"
            raise OSError(errno.EIO, f"short {what} at offset {offset}: {got}")
        lat[ops] = t1 - t0
        ops += 1
        if t1 - begin >= duration_ns:
            break
    return ops
