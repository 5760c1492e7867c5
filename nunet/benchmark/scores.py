"""Scores for matching: the measured figures a capability comparator and a bid use.

DMS prices CPU as cores x listed MHz; nunet measures. `cpu_capacity(cores, scores)` is
cores x the measured per-core matrix-multiply GFLOPS, and `measured_capacity` gives every
measured resource a bid request may ask for (`MEASURED_RESOURCES`), scaled to the onboarded
cores where the resource scales with cores and capped by what the whole machine measured.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from nunet.benchmark.model import Result, Scores

# Result name -> Scores field.
_FIELDS = {
    "cpu.clock": "clock_ghz",
    "cpu.matmul.1t": "cpu_gflops_per_core",
    "cpu.matmul.all": "cpu_gflops_all",
    "cpu.int.1t": "cpu_gops_per_core",
    "cpu.int.all": "cpu_gops_all",
    "memory.triad": "memory_gbs_per_core",
    "memory.triad.all": "memory_gbs_all",
    "memory.latency": "memory_latency_ns",
    "disk.seq.read": "disk_read_mbs",
    "disk.seq.write": "disk_write_mbs",
    "disk.rand.read": "disk_read_iops",
    "disk.rand.write": "disk_write_iops",
}

# What a bid request can ask for by name, and its unit.
MEASURED_RESOURCES = {
    "gflops": "GFLOPS",
    "gops": "Gops/s",
    "memory_bandwidth": "GB/s",
    "disk_read": "MB/s",
    "disk_write": "MB/s",
    "disk_read_iops": "IOPS",
    "disk_write_iops": "IOPS",
    "gpu_tflops": "TFLOPS",
}


def scores_from(results: Iterable[Result], *, measured_at: float, quick: bool) -> Scores:
    values: dict[str, float] = {}
    gpu = 0.0
    for result in results:
        if result.name in _FIELDS:
            values[_FIELDS[result.name]] = result.value
        elif result.name.startswith("gpu.") and result.name.endswith(".fp32"):
            gpu += result.value
    if gpu:
        values["gpu_tflops"] = round(gpu, 4)
    return msgspec.convert({"measured_at": measured_at, "quick": quick, **values}, Scores)


def cpu_capacity(cores: float, scores: Scores) -> float | None:
    """GFLOPS of `cores` cores: cores x measured per-core score; None when CPU was not measured."""
    if scores.cpu_gflops_per_core is None:
        return None
    return round(cores * scores.cpu_gflops_per_core, 3)


def _scaled(cores: float, per_core: float | None, whole: float | None) -> float | None:
    if per_core is None:
        return whole
    scaled = cores * per_core
    return round(scaled if whole is None else min(scaled, whole), 3)


def measured_capacity(cores: float, scores: Scores) -> dict[str, float]:
    """The `MEASURED_RESOURCES` a node onboarding `cores` cores offers; unmeasured ones are absent.
    Disk and GPU figures are the machine's (they do not scale with cores)."""
    offered = {
        "gflops": _scaled(cores, scores.cpu_gflops_per_core, scores.cpu_gflops_all),
        "gops": _scaled(cores, scores.cpu_gops_per_core, scores.cpu_gops_all),
        "memory_bandwidth": _scaled(cores, scores.memory_gbs_per_core, scores.memory_gbs_all),
        "disk_read": scores.disk_read_mbs,
        "disk_write": scores.disk_write_mbs,
        "disk_read_iops": scores.disk_read_iops,
        "disk_write_iops": scores.disk_write_iops,
        "gpu_tflops": scores.gpu_tflops,
    }
    return {name: value for name, value in offered.items() if value is not None}


def shortfalls(wanted: dict[str, float], offered: dict[str, float]) -> list[tuple[str, str]]:
    """(resource, message) for each measured resource asked for and not offered in full."""
    out = []
    for name, amount in sorted(wanted.items()):
        unit = MEASURED_RESOURCES.get(name)
        if unit is None:
            out.append((name, f"unknown measured resource; one of {', '.join(MEASURED_RESOURCES)}"))
        elif name not in offered:
            out.append((name, "not measured on this node"))
        elif offered[name] < amount:
            out.append((name, f"asked {amount:g} {unit}, offered {offered[name]:g} {unit}"))
    return out
