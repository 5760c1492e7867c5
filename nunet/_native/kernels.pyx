# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Benchmark kernels, compiled: the measuring tools of `nunet bench`. Same interface, results and
invariants as the pure-Python twin `nunet/_native/_reference/kernels.py` (read it first).

Why the code is shaped so:
- Every loop runs without the GIL, so the all-core figures come from plain Python threads each
  calling a kernel: no OpenMP runtime, no extra build flags.
- The wheel is built for the baseline ISA (x86-64 = SSE2, no -march=native), yet a benchmark must
  see what the silicon can do. The floating-point kernels (the FMA peak loop and the matrix
  multiply's micro-kernel) therefore come twice, as small C functions below: a portable one
  written with GCC vector extensions (SSE2 on x86-64, NEON on arm64), and one compiled for
  AVX2+FMA with a `target` attribute, chosen at import by `__builtin_cpu_supports` (which also
  checks that the OS saves the YMM registers). `simd()` says which one runs.
- The matrix multiply is the classic blocked GEMM (Goto/BLIS): B packed in KC x NC panels (L3),
  A in MC x KC blocks (L2), and a 6 x 8 register-blocked micro-kernel that keeps 12 four-double
  accumulators in registers and issues two FMAs per broadcast. That is what OpenBLAS does; the
  bench (`bench/bench_machine.py`) holds it to numpy's OpenBLAS on the same machine. The packed
  panels live in a caller's `work` buffer when given: allocating and faulting in 4 MiB per call
  cost several percent at n = 512.
- The clock kernel is a chain of dependent adds behind an empty `asm volatile` so the compiler
  can neither fold nor reorder them: one add per cycle on any core, whatever the listed MHz.
- The integer, STREAM, pointer-chasing and disk loops are plain Cython over raw pointers; the
  compiler's own vectorisation is all they need (memory- or latency-bound). STREAM's copy is
  libc's memmove, as gcc -O3 compiles the original STREAM copy loop.
"""

from libc.errno cimport errno
from libc.math cimport sqrt
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memmove
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.types cimport off_t
from posix.unistd cimport pread, pwrite

from nunet.errors import LocalProtocolError

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    #define NK_X86 1
    #else
    #define NK_X86 0
    #endif

    #define NK_MR 6
    #define NK_NR 8
    #define NK_KC 256
    #define NK_MC 96
    #define NK_NC 2048
    #define NK_FMA_LANES 48

    typedef double nk_v2 __attribute__((vector_size(16)));
    typedef void (*nk_micro_fn)(int64_t kc, const double *ap, const double *bp, double *c,
                                int64_t ldc, int first);
    typedef double (*nk_fma_fn)(uint64_t iters, double mul, double add);

    /* Written out 100 times so that no loop branch shares the cycles being counted. */
    #if defined(__GNUC__)
    #define NK_ADD x += step; __asm__ volatile("" : "+r"(x));
    #else
    #define NK_ADD x += step;
    #endif
    #define NK_ADD10 NK_ADD NK_ADD NK_ADD NK_ADD NK_ADD NK_ADD NK_ADD NK_ADD NK_ADD NK_ADD
    static uint64_t nk_clock_chain(uint64_t iters, uint64_t step) {
        uint64_t x = 0;
        for (uint64_t i = 0; i < iters; i++) {
            NK_ADD10 NK_ADD10 NK_ADD10 NK_ADD10 NK_ADD10
            NK_ADD10 NK_ADD10 NK_ADD10 NK_ADD10 NK_ADD10
        }
        return x;
    }

    /* Portable micro-kernel: the 6 x 8 tile as two 6 x 4 halves, 12 two-double accumulators
       each, which fits the 16 registers of SSE2 without spilling. */
    static void nk_micro_vec(int64_t kc, const double *ap, const double *bp, double *c,
                             int64_t ldc, int first) {
        for (int half = 0; half < 2; half++) {
            nk_v2 acc[NK_MR][2];
            memset(acc, 0, sizeof acc);
            const double *pa = ap, *pb = bp + half * 4;
            for (int64_t k = 0; k < kc; k++) {
                nk_v2 b0, b1;
                memcpy(&b0, pb, 16);
                memcpy(&b1, pb + 2, 16);
                for (int i = 0; i < NK_MR; i++) {
                    nk_v2 a = {pa[i], pa[i]};
                    acc[i][0] += a * b0;
                    acc[i][1] += a * b1;
                }
                pa += NK_MR;
                pb += NK_NR;
            }
            for (int i = 0; i < NK_MR; i++) {
                double t[4], *row = c + i * ldc + half * 4;
                memcpy(t, &acc[i][0], 16);
                memcpy(t + 2, &acc[i][1], 16);
                for (int j = 0; j < 4; j++) row[j] = first ? t[j] : row[j] + t[j];
            }
        }
    }

    /* 24 lanes at a time as 12 two-double accumulators (a mul and an add in flight per cycle
       per chain); lane i starts at i, so the result does not depend on the blocking. */
    static double nk_fma_vec(uint64_t iters, double mul, double add) {
        double lanes[NK_FMA_LANES], total = 0.0;
        nk_v2 m = {mul, mul}, a = {add, add};
        for (int block = 0; block < NK_FMA_LANES; block += 24) {
            nk_v2 acc[12];
            for (int i = 0; i < 12; i++) {
                acc[i][0] = block + 2 * i;
                acc[i][1] = block + 2 * i + 1;
            }
            for (uint64_t it = 0; it < iters; it++)
                for (int i = 0; i < 12; i++) acc[i] = acc[i] * m + a;
            memcpy(lanes + block, acc, sizeof acc);
        }
        for (int i = 0; i < NK_FMA_LANES; i++) total += lanes[i];
        return total;
    }

    #if NK_X86
    __attribute__((target("avx2,fma")))
    static void nk_micro_avx2(int64_t kc, const double *ap, const double *bp, double *c,
                              int64_t ldc, int first) {
        __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
        __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
        __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
        __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
        __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
        __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
        for (int64_t k = 0; k < kc; k++) {
            __m256d b0 = _mm256_loadu_pd(bp), b1 = _mm256_loadu_pd(bp + 4), a;
            a = _mm256_broadcast_sd(ap + 0);
            c00 = _mm256_fmadd_pd(a, b0, c00);
            c01 = _mm256_fmadd_pd(a, b1, c01);
            a = _mm256_broadcast_sd(ap + 1);
            c10 = _mm256_fmadd_pd(a, b0, c10);
            c11 = _mm256_fmadd_pd(a, b1, c11);
            a = _mm256_broadcast_sd(ap + 2);
            c20 = _mm256_fmadd_pd(a, b0, c20);
            c21 = _mm256_fmadd_pd(a, b1, c21);
            a = _mm256_broadcast_sd(ap + 3);
            c30 = _mm256_fmadd_pd(a, b0, c30);
            c31 = _mm256_fmadd_pd(a, b1, c31);
            a = _mm256_broadcast_sd(ap + 4);
            c40 = _mm256_fmadd_pd(a, b0, c40);
            c41 = _mm256_fmadd_pd(a, b1, c41);
            a = _mm256_broadcast_sd(ap + 5);
            c50 = _mm256_fmadd_pd(a, b0, c50);
            c51 = _mm256_fmadd_pd(a, b1, c51);
            ap += NK_MR;
            bp += NK_NR;
        }
        __m256d rows[NK_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                                  {c30, c31}, {c40, c41}, {c50, c51}};
        for (int i = 0; i < NK_MR; i++) {
            double *row = c + i * ldc;
            __m256d lo = rows[i][0], hi = rows[i][1];
            if (!first) {
                lo = _mm256_add_pd(_mm256_loadu_pd(row), lo);
                hi = _mm256_add_pd(_mm256_loadu_pd(row + 4), hi);
            }
            _mm256_storeu_pd(row, lo);
            _mm256_storeu_pd(row + 4, hi);
        }
    }

    __attribute__((target("avx2,fma")))
    static double nk_fma_avx2(uint64_t iters, double mul, double add) {
        __m256d acc[12], m = _mm256_set1_pd(mul), a = _mm256_set1_pd(add);
        double lanes[NK_FMA_LANES], total = 0.0;
        for (int i = 0; i < 12; i++) acc[i] = _mm256_set_pd(4 * i + 3, 4 * i + 2, 4 * i + 1, 4 * i);
        for (uint64_t it = 0; it < iters; it++)
            for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_pd(acc[i], m, a);
        for (int i = 0; i < 12; i++) _mm256_storeu_pd(lanes + 4 * i, acc[i]);
        for (int i = 0; i < NK_FMA_LANES; i++) total += lanes[i];
        return total;
    }
    #endif

    static nk_micro_fn nk_micro = nk_micro_vec;
    static nk_fma_fn nk_fma = nk_fma_vec;
    static const char *nk_simd_name = "vector";

    static void nk_init(void) {
    #if NK_X86
        nk_simd_name = "sse2";
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            nk_micro = nk_micro_avx2;
            nk_fma = nk_fma_avx2;
            nk_simd_name = "avx2+fma";
        }
    #elif defined(__aarch64__)
        nk_simd_name = "neon";
    #endif
    }

    static double nk_fma_peak(uint64_t iters, double mul, double add) {
        return nk_fma(iters, mul, add);
    }

    /* Pack rows [0, mc) x cols [0, kc) of A (row stride lda) as MR-row micro-panels, k-major,
       zero-padded to a multiple of MR rows. */
    static void nk_pack_a(const double *a, int64_t lda, int64_t mc, int64_t kc, double *out) {
        for (int64_t i = 0; i < mc; i += NK_MR) {
            int64_t rows = mc - i < NK_MR ? mc - i : NK_MR;
            for (int64_t k = 0; k < kc; k++) {
                for (int64_t r = 0; r < rows; r++) out[r] = a[(i + r) * lda + k];
                for (int64_t r = rows; r < NK_MR; r++) out[r] = 0.0;
                out += NK_MR;
            }
        }
    }

    /* Pack rows [0, kc) x cols [0, nc) of B as NR-column micro-panels, zero-padded. */
    static void nk_pack_b(const double *b, int64_t ldb, int64_t kc, int64_t nc, double *out) {
        for (int64_t j = 0; j < nc; j += NK_NR) {
            int64_t cols = nc - j < NK_NR ? nc - j : NK_NR;
            for (int64_t k = 0; k < kc; k++) {
                const double *src = b + k * ldb + j;
                for (int64_t q = 0; q < cols; q++) out[q] = src[q];
                for (int64_t q = cols; q < NK_NR; q++) out[q] = 0.0;
                out += NK_NR;
            }
        }
    }

    /* + 8: room to align a caller's buffer to 64 bytes */
    #define NK_WORK (NK_MC * NK_KC + NK_KC * NK_NC + 8)

    /* C[m x n] = A[m x k] @ B[k x n] with row strides lda, ldb, ldc; `work` holds NK_WORK
       doubles for the packed panels (NULL: allocated here). 0, or -1 out of memory. */
    static int nk_gemm(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda,
                       const double *b, int64_t ldb, double *c, int64_t ldc, double *work) {
        if (m == 0 || n == 0) return 0;
        if (k == 0) {
            for (int64_t i = 0; i < m; i++) memset(c + i * ldc, 0, sizeof(double) * n);
            return 0;
        }
        double *owned = NULL;
        if (work == NULL) {
            owned = work = aligned_alloc(64, sizeof(double) * NK_WORK);
            if (work == NULL) return -1;
        }
        double *ap = (double *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
        double *bp = ap + NK_MC * NK_KC;
        double tile[NK_MR * NK_NR];
        for (int64_t jc = 0; jc < n; jc += NK_NC) {
            int64_t nc = n - jc < NK_NC ? n - jc : NK_NC;
            for (int64_t pc = 0; pc < k; pc += NK_KC) {
                int64_t kc = k - pc < NK_KC ? k - pc : NK_KC;
                nk_pack_b(b + pc * ldb + jc, ldb, kc, nc, bp);
                for (int64_t ic = 0; ic < m; ic += NK_MC) {
                    int64_t mc = m - ic < NK_MC ? m - ic : NK_MC;
                    nk_pack_a(a + ic * lda + pc, lda, mc, kc, ap);
                    for (int64_t jr = 0; jr < nc; jr += NK_NR) {
                        int64_t nr = nc - jr < NK_NR ? nc - jr : NK_NR;
                        for (int64_t ir = 0; ir < mc; ir += NK_MR) {
                            int64_t mr = mc - ir < NK_MR ? mc - ir : NK_MR;
                            double *cc = c + (ic + ir) * ldc + jc + jr;
                            const double *pa = ap + ir * kc, *pb = bp + jr * kc;
                            if (mr == NK_MR && nr == NK_NR) {
                                nk_micro(kc, pa, pb, cc, ldc, pc == 0);
                                continue;
                            }
                            nk_micro(kc, pa, pb, tile, NK_NR, 1);
                            for (int64_t i = 0; i < mr; i++)
                                for (int64_t j = 0; j < nr; j++)
                                    cc[i * ldc + j] = pc == 0 ? tile[i * NK_NR + j]
                                                              : cc[i * ldc + j] + tile[i * NK_NR + j];
                        }
                    }
                }
            }
        }
        free(owned);
        return 0;
    }
    """
    const char *nk_simd_name
    void nk_init()
    uint64_t nk_clock_chain(uint64_t iters, uint64_t step) nogil
    double nk_fma_peak(uint64_t iters, double mul, double add) nogil
    enum: NK_WORK
    int nk_gemm(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda,
                const double *b, int64_t ldb, double *c, int64_t ldc, double *work) nogil

nk_init()

CLOCK_CHAIN = 100
INT_OPS = 32
FMA_LANES = 48
LINE_WORDS = 8
MATMUL_WORK = NK_WORK

cdef uint64_t _GOLDEN = 0x9E3779B97F4A7C15ULL
cdef uint64_t _INT_MUL = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t _splitmix(uint64_t *state) noexcept nogil:
    state[0] += _GOLDEN
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef uint64_t _count(object value, str what) except? 0:
    if not isinstance(value, int) or value < 0:
        raise LocalProtocolError(f"{what} must be a non-negative integer, got {value!r}")
    return <uint64_t>value


cdef Py_ssize_t _same_length(list lengths) except -1:
    if any(n != lengths[0] for n in lengths):
        raise LocalProtocolError(f"arrays must have the same length, got {lengths}")
    return lengths[0]


# Buffers in, as the twin checks them: a wrong type, shape or a read-only buffer where one is
# written is the caller's bug, LocalProtocolError with the twin's message (not Cython's ValueError).
_BAD = (ValueError, TypeError, BufferError)


cdef str _need(str what, str fmt, int ndim, bint writable):
    return (f"{what} must be a {'writable, ' if writable else ''}contiguous {ndim}-D buffer "
            f"of {fmt!r}")


cdef double[::1] _doubles(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "d", 1, True)) from None


cdef const double[::1] _doubles_ro(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "d", 1, False)) from None


cdef double[:, ::1] _matrix(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "d", 2, True)) from None


cdef const double[:, ::1] _matrix_ro(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "d", 2, False)) from None


cdef uint64_t[::1] _words(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "Q", 1, True)) from None


cdef const uint64_t[::1] _words_ro(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "Q", 1, False)) from None


cdef int64_t[::1] _int64s(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "q", 1, True)) from None


cdef unsigned char[::1] _bytes(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "B", 1, True)) from None


cdef const unsigned char[::1] _bytes_ro(object obj, str what) except *:
    try:
        if obj is None:  # a typed memoryview would take None as an empty view
            raise TypeError
        return obj
    except _BAD:
        raise LocalProtocolError(_need(what, "B", 1, False)) from None


def simd():
    return nk_simd_name.decode()


# --- CPU ------------------------------------------------------------------------------------------


def clock_chain(iters, step):
    cdef uint64_t n = _count(iters, "iters"), s = _count(step, "step"), out
    with nogil:
        out = nk_clock_chain(n, s)
    return out


def int_mix(iters, seed):
    cdef uint64_t n = _count(iters, "iters"), s = _count(seed, "seed"), i
    cdef uint64_t x0 = s, x1 = s + _GOLDEN, x2 = s + 2 * _GOLDEN, x3 = s + 3 * _GOLDEN
    cdef uint64_t x4 = s + 4 * _GOLDEN, x5 = s + 5 * _GOLDEN, x6 = s + 6 * _GOLDEN
    cdef uint64_t x7 = s + 7 * _GOLDEN
    with nogil:
        for i in range(n):
            x0 = x0 * _INT_MUL + i
            x1 = x1 * _INT_MUL + i
            x2 = x2 * _INT_MUL + i
            x3 = x3 * _INT_MUL + i
            x4 = x4 * _INT_MUL + i
            x5 = x5 * _INT_MUL + i
            x6 = x6 * _INT_MUL + i
            x7 = x7 * _INT_MUL + i
            x0 ^= x0 >> 29
            x1 ^= x1 >> 29
            x2 ^= x2 >> 29
            x3 ^= x3 >> 29
            x4 ^= x4 >> 29
            x5 ^= x5 >> 29
            x6 ^= x6 >> 29
            x7 ^= x7 >> 29
    return x0 ^ x1 ^ x2 ^ x3 ^ x4 ^ x5 ^ x6 ^ x7


def primes(limit, events):
    cdef uint64_t lim = _count(limit, "limit"), ev = _count(events, "events")
    cdef uint64_t e, c, d, found = 0
    cdef double t
    with nogil:
        # sysbench 1.0 `cpu_execute_event`, verbatim but for the names.
        for e in range(ev):
            for c in range(3, lim):
                t = sqrt(<double>c)
                d = 2
                while d <= t:
                    if c % d == 0:
                        break
                    d += 1
                if d > t:
                    found += 1
    return found


def fma_peak(iters, double mul, double add):
    cdef uint64_t n = _count(iters, "iters")
    cdef double out
    with nogil:
        out = nk_fma_peak(n, mul, add)
    return out


def matmul(a_in, b_in, c_in, Py_ssize_t start=0, Py_ssize_t stop=-1, work=None):
    cdef const double[:, ::1] a = _matrix_ro(a_in, "a")
    cdef const double[:, ::1] b = _matrix_ro(b_in, "b")
    cdef double[:, ::1] c = _matrix(c_in, "c")
    cdef double[::1] scratch_view
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    cdef double *scratch = NULL
    cdef int rc
    if work is not None:
        scratch_view = _doubles(work, "work")
        if scratch_view.shape[0] < NK_WORK:
            raise LocalProtocolError(f"work holds fewer than {NK_WORK} doubles")
        scratch = &scratch_view[0]
    if b.shape[0] != k or c.shape[0] != m or c.shape[1] != n:
        raise LocalProtocolError(
            f"shapes do not multiply: {(m, k)} @ {(b.shape[0], n)} -> {(c.shape[0], c.shape[1])}"
        )
    if stop == -1:
        stop = m
    if not 0 <= start <= stop <= m:
        raise LocalProtocolError(f"row range {start}:{stop} is outside 0:{m}")
    if stop == start or n == 0:
        return
    with nogil:
        rc = nk_gemm(stop - start, n, k, &a[0, 0] + start * k if k else NULL, k,
                     &b[0, 0] if k else NULL, n, &c[start, 0], n, scratch)
    if rc != 0:
        raise MemoryError("matmul: no memory for the packing buffers")


# --- memory ---------------------------------------------------------------------------------------


def fill(dst_in, double value):
    cdef double[::1] dst = _doubles(dst_in, "dst")
    cdef Py_ssize_t i, n = dst.shape[0]
    cdef double *d = &dst[0] if n else NULL
    with nogil:
        for i in range(n):
            d[i] = value


def stream_copy(dst_in, src_in):
    # What gcc -O3 makes of STREAM's copy loop: a libc memmove, whose non-temporal stores on
    # large sizes skip the write-allocate reads. A plain loop here would rate the machine lower
    # than the STREAM binary everyone compares with.
    cdef double[::1] dst = _doubles(dst_in, "dst")
    cdef const double[::1] src = _doubles_ro(src_in, "src")
    cdef Py_ssize_t n = _same_length([dst.shape[0], src.shape[0]])
    if n == 0:
        return
    cdef double *d = &dst[0]
    cdef const double *s = &src[0]
    with nogil:
        memmove(d, s, n * sizeof(double))


def stream_scale(dst_in, src_in, double scalar):
    cdef double[::1] dst = _doubles(dst_in, "dst")
    cdef const double[::1] src = _doubles_ro(src_in, "src")
    cdef Py_ssize_t i, n = _same_length([dst.shape[0], src.shape[0]])
    if n == 0:
        return
    cdef double *d = &dst[0]
    cdef const double *s = &src[0]
    with nogil:
        for i in range(n):
            d[i] = scalar * s[i]


def stream_add(dst_in, a_in, b_in):
    cdef double[::1] dst = _doubles(dst_in, "dst")
    cdef const double[::1] a = _doubles_ro(a_in, "a")
    cdef const double[::1] b = _doubles_ro(b_in, "b")
    cdef Py_ssize_t i, n = _same_length([dst.shape[0], a.shape[0], b.shape[0]])
    if n == 0:
        return
    cdef double *d = &dst[0]
    cdef const double *x = &a[0]
    cdef const double *y = &b[0]
    with nogil:
        for i in range(n):
            d[i] = x[i] + y[i]


def stream_triad(dst_in, b_in, c_in, double scalar):
    cdef double[::1] dst = _doubles(dst_in, "dst")
    cdef const double[::1] b = _doubles_ro(b_in, "b")
    cdef const double[::1] c = _doubles_ro(c_in, "c")
    cdef Py_ssize_t i, n = _same_length([dst.shape[0], b.shape[0], c.shape[0]])
    if n == 0:
        return
    cdef double *d = &dst[0]
    cdef const double *x = &b[0]
    cdef const double *y = &c[0]
    with nogil:
        for i in range(n):
            d[i] = x[i] + scalar * y[i]


def chase_build(buf_in, seed):
    cdef uint64_t state = _count(seed, "seed"), r
    cdef uint64_t[::1] buf = _words(buf_in, "buf")
    cdef Py_ssize_t words = buf.shape[0], lines, i, j
    if words == 0 or words % LINE_WORDS:
        raise LocalProtocolError(f"buf length must be a non-zero multiple of {LINE_WORDS}")
    lines = words // LINE_WORDS
    cdef uint64_t *p = &buf[0]
    cdef uint64_t tmp
    with nogil:
        for i in range(lines):
            p[i * 8] = i * 8
        for i in range(lines - 1, 0, -1):
            r = _splitmix(&state)
            j = <Py_ssize_t>(r % <uint64_t>i)
            tmp = p[i * 8]
            p[i * 8] = p[j * 8]
            p[j * 8] = tmp


def chase(buf_in, steps, Py_ssize_t start=0):
    cdef uint64_t n = _count(steps, "steps"), s
    cdef const uint64_t[::1] buf = _words_ro(buf_in, "buf")
    cdef Py_ssize_t words = buf.shape[0]
    if not 0 <= start < words:
        raise LocalProtocolError(f"start {start} is outside the buffer")
    cdef const uint64_t *p = &buf[0]
    cdef uint64_t at = <uint64_t>start, bad = 0
    with nogil:
        for s in range(n):
            at = p[at]
            if at >= <uint64_t>words:
                bad = 1
                break
    if bad:
        raise LocalProtocolError(f"link {at} points outside the buffer (not built?)")
    return at


# --- disk -----------------------------------------------------------------------------------------


cdef object _os_error(int err, str what):
    import os

    return OSError(err, f"{what}: {os.strerror(err)}")


cdef const unsigned char *_io_buffer(object buf, bint write, Py_ssize_t *size,
                                     list keep) except? NULL:
    """The raw bytes of `buf` (read-only is enough to write from it); `keep` holds the view."""
    cdef const unsigned char[::1] ro
    cdef unsigned char[::1] rw
    if write:
        ro = _bytes_ro(buf, "buf")
        keep.append(ro)
        size[0] = ro.shape[0]
        return &ro[0] if ro.shape[0] else NULL
    rw = _bytes(buf, "buf")
    keep.append(rw)
    size[0] = rw.shape[0]
    return &rw[0] if rw.shape[0] else NULL


def disk_seq(int fd, buf, offset, nbytes, bint write):
    cdef Py_ssize_t block = 0
    cdef list keep = []
    cdef const unsigned char *data = _io_buffer(buf, write, &block, keep)
    cdef uint64_t off = _count(offset, "offset"), total = _count(nbytes, "nbytes"), done = 0
    cdef Py_ssize_t part
    cdef ssize_t got = 0
    cdef int err = 0
    if block == 0:
        raise LocalProtocolError("buf must not be empty")
    with nogil:
        while done < total:
            part = block if total - done > <uint64_t>block else <Py_ssize_t>(total - done)
            if write:
                got = pwrite(fd, data, part, <off_t>(off + done))
            else:
                got = pread(fd, <void *>data, part, <off_t>(off + done))
            if got < 0:
                err = errno
                break
            if got == 0:
                break
            done += <uint64_t>got
    if err:
        raise _os_error(err, "write" if write else "read")
    return done


def disk_random(int fd, buf, nblocks, duration_ns, max_ops, bint write, seed, lat_in):
    cdef Py_ssize_t block = 0
    cdef list keep = []
    cdef const unsigned char *data = _io_buffer(buf, write, &block, keep)
    cdef int64_t[::1] lat_ns = _int64s(lat_in, "lat_ns")
    cdef uint64_t blocks = _count(nblocks, "nblocks"), limit = _count(duration_ns, "duration_ns")
    cdef uint64_t most = _count(max_ops, "max_ops"), state = _count(seed, "seed"), ops = 0
    cdef uint64_t offset = 0
    if block == 0 or blocks == 0:
        raise LocalProtocolError("buf and nblocks must not be empty")
    if <uint64_t>lat_ns.shape[0] < most:
        raise LocalProtocolError(
            f"lat_ns holds {lat_ns.shape[0]} entries, fewer than max_ops={max_ops}"
        )
    cdef int64_t begin, t0, t1
    cdef ssize_t got = 0
    cdef int err = 0
    cdef bint failed = False
    with nogil:
        begin = _now_ns()
        while ops < most:
            offset = (_splitmix(&state) % blocks) * <uint64_t>block
            t0 = _now_ns()
            if write:
                got = pwrite(fd, data, block, <off_t>offset)
            else:
                got = pread(fd, <void *>data, block, <off_t>offset)
            t1 = _now_ns()
            if got != block:
                failed = True
                err = errno if got < 0 else 0
                break
            lat_ns[ops] = t1 - t0
            ops += 1
            if <uint64_t>(t1 - begin) >= limit:
                break
    if err:
        raise _os_error(err, "write" if write else "read")
    if failed:
        import errno as errno_module

        raise OSError(
            errno_module.EIO, f"short {'write' if write else 'read'} at offset {offset}: {got}"
        )
    return ops
