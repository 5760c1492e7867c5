"""How long and how big each measurement is: `QUICK` (onboarding, <= 10 s on a 2-core VM),
`FULL` (`nunet bench`, <= 60 s) and `tiny()` for tests (sizes the pure-Python twins can run)."""

from __future__ import annotations

import msgspec

MIB = 1 << 20


class Plan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    repeats: int  # samples per CPU and disk figure
    sample_s: float  # seconds of work per CPU or latency sample
    warmup_s: float  # busy time before the first CPU sample, so the clock has ramped up
    matmul_n: int  # square fp64 matrices, one thread
    matmul_rows: int  # all threads: n = max(matmul_n, matmul_rows x threads), whole panels each
    mem_llc_factor: int  # STREAM rule: each array at least this many times the last-level cache
    mem_min_bytes: int  # per array, whatever the cache
    mem_max_bytes: int  # per array; also never more than 1/8 of the available RAM for all three
    mem_repeats: int  # STREAM passes; the best one is the figure
    disk_file_bytes: int
    disk_seq_s: float  # at most this long per sequential sample (one pass if the disk is fast)
    disk_rand_s: float  # per random 4 KiB sample
    disk_repeats: int
    disk_max_ops: int  # latency slots per random sample

    @property
    def quick(self) -> bool:
        return self.name != "full"


QUICK = Plan(
    name="quick",
    repeats=3,
    sample_s=0.05,
    warmup_s=0.1,
    matmul_n=384,
    matmul_rows=128,
    mem_llc_factor=4,
    mem_min_bytes=32 * MIB,
    mem_max_bytes=256 * MIB,
    mem_repeats=3,
    disk_file_bytes=64 * MIB,
    disk_seq_s=0.25,
    disk_rand_s=0.25,
    disk_repeats=2,
    disk_max_ops=1 << 19,
)

FULL = Plan(
    name="full",
    repeats=5,
    sample_s=0.2,
    warmup_s=0.3,
    matmul_n=512,
    matmul_rows=128,
    mem_llc_factor=4,
    mem_min_bytes=64 * MIB,
    mem_max_bytes=1024 * MIB,
    mem_repeats=10,
    disk_file_bytes=256 * MIB,
    disk_seq_s=1.0,
    disk_rand_s=1.5,
    disk_repeats=3,
    disk_max_ops=1 << 21,
)


def tiny() -> Plan:
    """Small enough for the pure-Python twins: a test plan, not a measurement."""
    return Plan(
        name="tiny",
        repeats=2,
        sample_s=0.001,
        warmup_s=0.0,
        matmul_n=8,
        matmul_rows=6,
        mem_llc_factor=0,
        mem_min_bytes=4096,
        mem_max_bytes=4096,
        mem_repeats=2,
        disk_file_bytes=64 * 1024,
        disk_seq_s=0.01,
        disk_rand_s=0.01,
        disk_repeats=2,
        disk_max_ops=64,
    )


PLANS = {"quick": QUICK, "full": FULL}
