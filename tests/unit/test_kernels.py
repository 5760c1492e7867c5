"""Benchmark kernels (`nunet._native.kernels` and its twin): same results on small inputs, same
refusals of bad input. The `kernels` fixture runs each test against both."""

from __future__ import annotations

import array
import errno
import math
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nunet._native._reference import kernels as reference
from nunet.errors import LocalProtocolError

MASK = (1 << 64) - 1


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The `native` fixture is a plain importer: nothing in it to reset between examples."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_simd_names_the_dispatch(kernels: ModuleType) -> None:
    name = kernels.simd()
    if kernels is reference:
        assert name == "python"
    else:
        assert name in {"avx2+fma", "sse2", "neon", "vector"}


def test_clock_chain_is_a_sum(kernels: ModuleType) -> None:
    assert kernels.clock_chain(0, 5) == 0
    assert kernels.clock_chain(10, 3) == 10 * kernels.CLOCK_CHAIN * 3
    assert kernels.clock_chain(1, 1 << 63) == (kernels.CLOCK_CHAIN << 63) & MASK


def test_int_mix_known_values(kernels: ModuleType) -> None:
    # Values of the specification (the twin), pinned so neither side can drift.
    assert kernels.int_mix(0, 0) == reference.int_mix(0, 0)
    assert kernels.int_mix(1000, 7) == 9119884820380454124
    assert kernels.int_mix(3, MASK) == reference.int_mix(3, MASK)


def test_primes_matches_sysbench_count(kernels: ModuleType) -> None:
    # sysbench counts primes in [3, limit): pi(limit - 1) - 1 (2 is not counted).
    assert kernels.primes(100, 1) == 24
    assert kernels.primes(10_000, 2) == 2 * 1228
    assert kernels.primes(3, 5) == 0
    assert kernels.primes(1000, 0) == 0


def test_fma_peak_converges_like_the_spec(kernels: ModuleType) -> None:
    lanes = kernels.FMA_LANES
    assert kernels.fma_peak(0, 0.5, 1.0) == sum(range(lanes))
    got = kernels.fma_peak(200, 0.999, 0.001)
    assert math.isclose(got, reference.fma_peak(200, 0.999, 0.001), rel_tol=1e-12)
    # acc -> 1 for every lane: the fixed point of acc * 0.5 + 0.5
    assert math.isclose(kernels.fma_peak(200, 0.5, 0.5), lanes, rel_tol=1e-12)


@pytest.mark.parametrize(("m", "k", "n"), [(1, 1, 1), (7, 5, 9), (13, 17, 11), (6, 8, 8), (0, 3, 4),
                                           (3, 0, 4)])
def test_matmul_agrees_with_numpy(kernels: ModuleType, m: int, k: int, n: int) -> None:
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    c = np.full((m, n), np.nan)
    kernels.matmul(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=1e-12)


def test_matmul_row_range_leaves_other_rows(kernels: ModuleType) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 4)), rng.standard_normal((4, 3))
    c = np.full((10, 3), -7.0)
    kernels.matmul(a, b, c, 2, 5)
    np.testing.assert_allclose(c[2:5], (a @ b)[2:5], rtol=1e-12)
    assert (c[:2] == -7.0).all()
    assert (c[5:] == -7.0).all()


def test_matmul_accepts_plain_memoryviews(kernels: ModuleType) -> None:
    a = memoryview(bytearray(8 * 4)).cast("B").cast("d", (2, 2))
    b = memoryview(bytearray(8 * 4)).cast("B").cast("d", (2, 2))
    c = memoryview(bytearray(8 * 4)).cast("B").cast("d", (2, 2))
    for view, values in ((a, (1.0, 2.0, 3.0, 4.0)), (b, (5.0, 6.0, 7.0, 8.0))):
        flat = view.cast("B").cast("d")
        for i, v in enumerate(values):
            flat[i] = v
    kernels.matmul(a, b, c)
    assert c.tolist() == [[19.0, 22.0], [43.0, 50.0]]


@pytest.mark.parametrize(
    ("shapes", "rows"),
    [(((2, 3), (4, 2), (2, 2)), (0, -1)), (((2, 3), (3, 2), (3, 2)), (0, -1)),
     (((4, 3), (3, 2), (4, 2)), (3, 2)), (((4, 3), (3, 2), (4, 2)), (0, 5))],
)
def test_matmul_refuses_bad_shapes_and_rows(
    kernels: ModuleType, shapes: tuple[tuple[int, int], ...], rows: tuple[int, int]
) -> None:
    a, b, c = (np.zeros(shape) for shape in shapes)
    with pytest.raises(LocalProtocolError):
        kernels.matmul(a, b, c, *rows)


def test_stream_kernels(kernels: ModuleType) -> None:
    a, b, c = (array.array("d", [float(i) for i in range(9)]) for _ in range(3))
    kernels.fill(c, 0.5)
    assert list(c) == [0.5] * 9
    kernels.stream_copy(c, a)
    assert list(c) == list(a)
    kernels.stream_scale(b, c, 3.0)
    assert list(b) == [3.0 * i for i in range(9)]
    kernels.stream_add(c, a, b)
    assert list(c) == [4.0 * i for i in range(9)]
    kernels.stream_triad(a, b, c, 2.0)
    assert list(a) == [11.0 * i for i in range(9)]
    empty = array.array("d")
    kernels.stream_triad(empty, empty, empty, 1.0)


@pytest.mark.parametrize("call", [
    lambda k: k.stream_copy(array.array("d", [1.0]), array.array("d", [1.0, 2.0])),
    lambda k: k.stream_add(array.array("d", [1.0]), array.array("d", [1.0]), array.array("d")),
    lambda k: k.stream_triad(*(array.array("d", [0.0] * n) for n in (3, 3, 2)), 1.0),
])
def test_stream_kernels_refuse_unequal_lengths(
    kernels: ModuleType, call: Callable[[ModuleType], None]
) -> None:
    with pytest.raises(LocalProtocolError, match="same length"):
        call(kernels)


@pytest.mark.parametrize("bad", [array.array("f", [1.0]), array.array("q", [1]), b"12345678",
                                 "text", None, np.zeros((1, 1))])
def test_kernels_refuse_wrong_buffers_alike(kernels: ModuleType, bad: object) -> None:
    good = array.array("d", [1.0])
    with pytest.raises(LocalProtocolError, match=r"^dst must be a writable, contiguous 1-D buffer "
                       r"of 'd'$"):
        kernels.stream_copy(bad, good)
    with pytest.raises(LocalProtocolError, match=r"^src must be a contiguous 1-D buffer of 'd'$"):
        kernels.stream_copy(good, bad)


def test_read_only_outputs_and_strided_inputs_are_refused(kernels: ModuleType) -> None:
    frozen = np.zeros(4)
    frozen.flags.writeable = False
    with pytest.raises(LocalProtocolError, match="writable"):
        kernels.fill(frozen, 1.0)
    with pytest.raises(LocalProtocolError, match="contiguous 2-D buffer of 'd'"):
        kernels.matmul(np.zeros((4, 4))[:, ::2], np.zeros((2, 2)), np.zeros((4, 2)))
    with pytest.raises(LocalProtocolError, match=r"^buf must be a contiguous 1-D buffer of 'Q'$"):
        kernels.chase(array.array("d", [0.0] * 8), 1)
    with pytest.raises(LocalProtocolError, match=r"^lat_ns must be a writable"):
        kernels.disk_random(0, bytearray(8), 1, 1, 1, False, 1, array.array("d", [0.0]))
    with pytest.raises(LocalProtocolError, match=r"^buf must be a writable"):
        kernels.disk_seq(0, b"read-only", 0, 1, False)  # reading into bytes


def test_negative_counts_are_refused(kernels: ModuleType) -> None:
    for call in (lambda: kernels.clock_chain(-1, 1), lambda: kernels.int_mix(5, -2),
                 lambda: kernels.primes(-3, 1), lambda: kernels.fma_peak(-1, 1.0, 1.0)):
        with pytest.raises(LocalProtocolError, match="non-negative"):
            call()


def test_chase_visits_every_line_once(kernels: ModuleType) -> None:
    lines = 50
    buf = array.array("Q", [0] * (kernels.LINE_WORDS * lines))
    kernels.chase_build(buf, 42)
    seen, at = set(), 0
    for _ in range(lines):
        assert at % kernels.LINE_WORDS == 0
        seen.add(at)
        at = buf[at]
    assert at == 0  # one cycle through all the lines
    assert len(seen) == lines
    assert kernels.chase(buf, lines) == 0
    assert kernels.chase(buf, 7) == reference.chase(buf, 7)


def test_chase_refuses_bad_buffers(kernels: ModuleType) -> None:
    with pytest.raises(LocalProtocolError, match="multiple"):
        kernels.chase_build(array.array("Q", [0] * 12), 1)
    with pytest.raises(LocalProtocolError, match="multiple"):
        kernels.chase_build(array.array("Q"), 1)
    unbuilt = array.array("Q", [1 << 40] * 8)
    with pytest.raises(LocalProtocolError, match="outside"):
        kernels.chase(unbuilt, 2)
    with pytest.raises(LocalProtocolError, match="outside"):
        kernels.chase(unbuilt, 1, 8)


def test_disk_seq_writes_and_reads_back(kernels: ModuleType, tmp_path: Path) -> None:
    block = bytearray(os.urandom(4096))
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert kernels.disk_seq(fd, block, 0, 3 * 4096 + 100, True) == 3 * 4096 + 100
        assert os.fstat(fd).st_size == 3 * 4096 + 100
        into = bytearray(4096)
        # Reading past the end stops at the end.
        assert kernels.disk_seq(fd, into, 4096, 10 * 4096, False) == 2 * 4096 + 100
        assert into[:100] == block[:100]
    finally:
        os.close(fd)


def test_disk_seq_raises_the_os_error(kernels: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "ro"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            kernels.disk_seq(fd, bytes(4096), 0, 4096, True)
        assert info.value.errno == errno.EBADF
    finally:
        os.close(fd)


def test_disk_random_writes_the_same_blocks_on_both_twins(
    kernels: ModuleType, tmp_path: Path
) -> None:
    blocks, ops = 64, 20
    files = []
    for name, impl in (("ours", kernels), ("spec", reference)):
        path = tmp_path / name
        path.write_bytes(bytes(blocks * 512))
        fd = os.open(path, os.O_RDWR)
        lat = array.array("q", [-1] * ops)
        try:
            done = impl.disk_random(fd, b"\xab" * 512, blocks, 10**12, ops, True, 9, lat)
        finally:
            os.close(fd)
        assert done == ops
        assert all(v >= 0 for v in lat)
        files.append(path.read_bytes())
    assert files[0] == files[1]
    assert files[0].count(b"\xab" * 512) > 1


def test_disk_random_stops_at_its_deadline_and_checks_its_inputs(
    kernels: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(8 * 512))
    fd = os.open(path, os.O_RDONLY)
    try:
        lat = array.array("q", [0] * 1000)
        assert kernels.disk_random(fd, bytearray(512), 8, 0, 1000, False, 1, lat) == 1
        with pytest.raises(LocalProtocolError, match="fewer than max_ops"):
            kernels.disk_random(fd, bytearray(512), 8, 10**9, 1001, False, 1, lat)
        with pytest.raises(LocalProtocolError, match="empty"):
            kernels.disk_random(fd, bytearray(512), 0, 10**9, 10, False, 1, lat)
        # A file shorter than the blocks asked for is a short read: EIO, not garbage.
        with pytest.raises(OSError, match="short read") as info:
            kernels.disk_random(fd, bytearray(512), 10**6, 10**9, 1000, False, 1, lat)
        assert info.value.errno == errno.EIO
    finally:
        os.close(fd)


# --- differential: the compiled module against the twin on random input -------------------------


@fuzz(60)
@given(iters=st.integers(0, 300), seed=st.integers(0, MASK))
def test_int_mix_differential(native: Callable[[str], ModuleType], iters: int, seed: int) -> None:
    assert native("kernels").int_mix(iters, seed) == reference.int_mix(iters, seed)


@fuzz(30)
@given(lines=st.integers(1, 300), seed=st.integers(0, MASK), steps=st.integers(0, 1000))
def test_chase_differential(
    native: Callable[[str], ModuleType], lines: int, seed: int, steps: int
) -> None:
    compiled = native("kernels")
    ours, spec = (array.array("Q", [0] * (8 * lines)) for _ in range(2))
    compiled.chase_build(ours, seed)
    reference.chase_build(spec, seed)
    assert ours == spec
    assert compiled.chase(ours, steps) == reference.chase(spec, steps)


@fuzz(30)
@given(m=st.integers(0, 20), k=st.integers(0, 20), n=st.integers(0, 20), seed=st.integers(0, 99))
def test_matmul_differential(
    native: Callable[[str], ModuleType], m: int, k: int, n: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-1, 1, (m, k)), rng.uniform(-1, 1, (k, n))
    ours, spec = np.zeros((m, n)), np.zeros((m, n))
    native("kernels").matmul(a, b, ours)
    reference.matmul(a, b, spec)
    np.testing.assert_allclose(ours, spec, rtol=1e-12, atol=1e-12)


@fuzz(40)
@given(iters=st.integers(0, 200), mul=st.floats(0.0, 1.0), add=st.floats(-1.0, 1.0))
def test_fma_peak_differential(
    native: Callable[[str], ModuleType], iters: int, mul: float, add: float
) -> None:
    ours, spec = native("kernels").fma_peak(iters, mul, add), reference.fma_peak(iters, mul, add)
    assert math.isclose(ours, spec, rel_tol=1e-9, abs_tol=1e-9)


def test_matmul_reuses_a_callers_work_buffer(kernels: ModuleType) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((9, 7)), rng.standard_normal((7, 10))
    # Deliberately misaligned: the kernel aligns the packed panels itself.
    raw = np.zeros(kernels.MATMUL_WORK + 1)
    work = raw[1:]
    for _ in range(2):
        c = np.zeros((9, 10))
        kernels.matmul(a, b, c, 0, -1, work)
        np.testing.assert_allclose(c, a @ b, rtol=1e-12)
    with pytest.raises(LocalProtocolError, match="work"):
        kernels.matmul(a, b, np.zeros((9, 10)), 0, -1, np.zeros(kernels.MATMUL_WORK - 1))
