"""What a benchmark run produces and stores: figures with their spread, the machine they were
measured on, stage notes, and the scores that matching reads.

`BenchReport` is the stored record and the `--json` output; its JSON schema is
`msgspec.json.schema(BenchReport)` and `SCHEMA_VERSION` changes when a field changes meaning.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA_VERSION = 1
STAGES: tuple[str, ...] = ("cpu", "memory", "disk", "network", "gpu")

Better = Literal["higher", "lower"]
StageStatus = Literal["ok", "skipped"]


class Result(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One measured figure. `value` is the headline: the median of the repeats, except STREAM
    bandwidths, which are the best repeat as STREAM itself reports them; `spread_pct` is
    (max - min) / median in percent, the run's own repeatability."""

    name: str  # "cpu.matmul.1t"
    stage: str
    value: float
    unit: str
    better: Better
    min: float
    median: float
    max: float
    repeats: int
    spread_pct: float
    threads: int = 1
    note: str = ""


class StageNote(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    stage: str
    status: StageStatus
    note: str = ""
    seconds: float = 0.0


class MachineFacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cpu_model: str
    cpu_vendor: str
    arch: str
    cores: int  # physical
    threads: int  # logical
    usable_cpus: int  # in this process's affinity mask: what the all-thread runs used
    listed_mhz: float  # what the OS lists; the measured clock is the result `cpu.clock`
    cache_bytes: int  # last-level cache
    ram_bytes: int
    os: str
    kernel: str
    python: str
    versions: dict[str, str]  # nunet, Cython (of the build), msgspec, numpy if installed
    native: bool  # measured with the compiled kernels (always true for stored reports)
    simd: str  # what the floating-point kernels dispatched to: "avx2+fma", "sse2", "neon"...
    gpus: tuple[str, ...] = ()  # "0: NVIDIA H100 80GB HBM3, 79.6 GiB"


class Scores(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The figures matching uses, in fixed units; None when the stage was not run. Per-core
    figures scale with onboarded cores (see `nunet.benchmark.scores`)."""

    measured_at: float
    quick: bool
    clock_ghz: float | None = None
    cpu_gflops_per_core: float | None = None  # fp64 matrix multiply, one thread
    cpu_gflops_all: float | None = None  # same, every usable core
    cpu_gops_per_core: float | None = None  # integer ops, one thread
    cpu_gops_all: float | None = None
    memory_gbs_per_core: float | None = None  # STREAM triad, one thread
    memory_gbs_all: float | None = None
    memory_latency_ns: float | None = None
    disk_read_mbs: float | None = None
    disk_write_mbs: float | None = None
    disk_read_iops: float | None = None  # 4 KiB random, queue depth 1
    disk_write_iops: float | None = None
    gpu_tflops: float | None = None  # fp32, summed over GPUs


Outcome = tuple[list[Result], str]  # a stage's results and its note


class BenchReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str  # sorts by time: "<ms since epoch, 15 digits>-<6 hex>"
    started_at: float
    finished_at: float
    quick: bool
    stages: tuple[str, ...]
    machine: MachineFacts
    results: tuple[Result, ...]
    notes: tuple[StageNote, ...]
    scores: Scores
    version: int = SCHEMA_VERSION

    def result(self, name: str) -> Result | None:
        return next((r for r in self.results if r.name == name), None)


class BenchSummary(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of `nunet bench history`."""

    id: str
    started_at: float
    seconds: float
    quick: bool
    stages: tuple[str, ...]
    scores: Scores

    @classmethod
    def of(cls, report: BenchReport) -> BenchSummary:
        return cls(
            id=report.id,
            started_at=report.started_at,
            seconds=round(report.finished_at - report.started_at, 3),
            quick=report.quick,
            stages=report.stages,
            scores=report.scores,
        )
