"""`run_benchmark`: the stages in order, the machine facts, the scores, one `BenchReport`.

Synchronous and blocking (seconds to a minute): the CLI calls it directly, the node from a worker
thread. Nothing is written anywhere but the disk stage's test file; storing the report is the
caller's choice (`nunet.benchmark.store`), so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import os
import platform
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, cast

from nunet import __version__
from nunet.benchmark import cpu, disk, gpu, memory
from nunet.benchmark.measure import Kernels, StageContext
from nunet.benchmark.model import STAGES, BenchReport, MachineFacts, Outcome, Result, StageNote
from nunet.benchmark.plan import Plan
from nunet.benchmark.scores import scores_from
from nunet.errors import NunetError, ValidationError

NetworkProbe = Callable[[], Outcome]
STEPS = {"cpu": cpu.STEPS, "memory": memory.STEPS, "disk": disk.STEPS, "network": 1,
         "gpu": gpu.STEPS}
_VERSIONED = ("Cython", "msgspec", "numpy")


class Progress(Protocol):
    def begin(self, stage: str, steps: int) -> None: ...
    def advance(self, stage: str, label: str) -> None: ...
    def end(self, stage: str, note: StageNote) -> None: ...


class NoProgress:
    def begin(self, stage: str, steps: int) -> None:
        pass

    def advance(self, stage: str, label: str) -> None:
        pass

    def end(self, stage: str, note: StageNote) -> None:
        pass


def parse_stages(only: Iterable[str]) -> tuple[str, ...]:
    """The stages asked for, in run order; empty means all. Unknown names: ValidationError."""
    asked = [s.strip() for s in only if s.strip()]
    unknown = [s for s in asked if s not in STAGES]
    if unknown:
        raise ValidationError(
            f"unknown stage {', '.join(map(repr, unknown))}; expected some of {', '.join(STAGES)}",
            path="only",
        )
    return tuple(s for s in STAGES if s in asked) if asked else STAGES


def native_kernels() -> Kernels:
    """The compiled kernels; measuring with the pure-Python twins would rate the interpreter."""
    import warnings

    from nunet._native import NativeFallbackWarning, is_native, load, native_disabled

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NativeFallbackWarning)  # an error below says it better
        module = load("kernels")
    if not is_native(module):
        raise NunetError(
            "nunet bench measures with the compiled kernels, but "
            + ("NUNET_NO_NATIVE is set" if native_disabled() else
               "nunet._native.kernels is not built: run `make build` or `pip install -e .`")
        )
    return cast(Kernels, module)


def run_benchmark(
    plan: Plan,
    *,
    disk_dir: Path,
    stages: tuple[str, ...] = STAGES,
    kernels: Kernels | None = None,
    progress: Progress | None = None,
    network: NetworkProbe | None = None,
    network_note: str = "offline: the network is measured by a running node to its peers",
    clock: Callable[[], float] = time.time,
) -> BenchReport:
    from nunet.node.machine import detect_machine

    k = kernels if kernels is not None else native_kernels()
    shown = progress or NoProgress()
    started = clock()
    machine = detect_machine(disk_dir)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1
    )
    ctx = StageContext(
        plan=plan,
        kernels=k,
        threads=threads,
        cache_bytes=machine.cpu.cache_bytes,
        available_bytes=available_bytes(),
        disk_dir=disk_dir,
        listed_mhz=machine.cpu.clock_mhz,
    )
    runners: dict[str, Callable[[StageContext], Outcome]] = {
        "cpu": lambda c: (cpu.run(c), ""),
        "memory": lambda c: (memory.run(c), ""),
        "disk": lambda c: (disk.run(c), ""),
        "network": lambda _c: network() if network is not None else ([], network_note),
        "gpu": gpu.run,
    }
    results: list[Result] = []
    notes: list[StageNote] = []
    for stage in stages:
        shown.begin(stage, STEPS[stage])
        ctx.step = _stepper(shown, stage)
        t0 = time.perf_counter()
        found, note = runners[stage](ctx)
        results.extend(found)
        done = StageNote(stage=stage, status="ok" if found else "skipped", note=note,
                         seconds=round(time.perf_counter() - t0, 3))
        notes.append(done)
        shown.end(stage, done)
    finished = clock()
    return BenchReport(
        id=f"{int(started * 1000):015d}-{secrets.token_hex(3)}",
        started_at=started,
        finished_at=finished,
        quick=plan.quick,
        stages=stages,
        machine=MachineFacts(
            cpu_model=machine.cpu.model,
            cpu_vendor=machine.cpu.vendor,
            arch=machine.cpu.arch,
            cores=machine.cpu.cores,
            threads=machine.cpu.threads,
            usable_cpus=threads,
            listed_mhz=machine.cpu.clock_mhz,
            cache_bytes=machine.cpu.cache_bytes,
            ram_bytes=machine.ram_bytes,
            os=machine.os,
            kernel=machine.kernel,
            python=f"{platform.python_implementation()} {platform.python_version()}",
            versions=_versions(),
            native=k.simd() != "python",
            simd=k.simd(),
            gpus=tuple(
                f"{g.index}: {g.vendor} {g.model}, {g.vram_bytes / (1 << 30):.1f} GiB"
                for g in machine.gpus
            ),
        ),
        results=tuple(results),
        notes=tuple(notes),
        scores=scores_from(results, measured_at=finished, quick=plan.quick),
    )


def _stepper(shown: Progress, stage: str) -> Callable[[str], None]:
    return lambda label: shown.advance(stage, label)


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"nunet": __version__}
    for dist in _VERSIONED:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found
