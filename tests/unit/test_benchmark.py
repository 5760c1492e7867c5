"""nunet.benchmark: timing helpers, stages on tiny plans with the pure-Python kernels (so these
tests check logic, not speed), scores, the report's schema, and the disk stage's failure paths."""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nunet._native._reference import kernels as reference
from nunet.benchmark import disk, gpu, memory
from nunet.benchmark.measure import StageContext, calibrate, parallel, split, summarize
from nunet.benchmark.model import STAGES, BenchReport, BenchSummary, Result, Scores, StageNote
from nunet.benchmark.plan import FULL, QUICK, Plan, tiny
from nunet.benchmark.runner import STEPS, native_kernels, parse_stages, run_benchmark
from nunet.benchmark.scores import (
    MEASURED_RESOURCES,
    cpu_capacity,
    measured_capacity,
    scores_from,
    shortfalls,
)
from nunet.errors import (
    BrokenResourceError,
    LocalProtocolError,
    NunetError,
    StorageFull,
    ValidationError,
)
from nunet.node.gpu import GPUInfo

MIB = 1 << 20


def context(tmp_path: Path, plan: Plan | None = None, **kwargs: Any) -> StageContext:
    fields: dict[str, Any] = {
        "plan": plan or tiny(), "kernels": reference, "threads": 2, "cache_bytes": 0,
        "available_bytes": 1 << 30, "disk_dir": tmp_path,
    }
    fields.update(kwargs)
    return StageContext(**fields)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_detect", lambda: ((), "no GPU detected (test)"))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def begin(self, stage: str, steps: int) -> None:
        self.events.append(("begin", stage, steps))

    def advance(self, stage: str, label: str) -> None:
        self.events.append(("advance", stage, label))

    def end(self, stage: str, note: StageNote) -> None:
        self.events.append(("end", stage, note))


# --- timing helpers -------------------------------------------------------------------------------


def test_calibrate_scales_to_the_target() -> None:
    per_unit = 1e-5

    def work(n: int) -> None:
        time.sleep(n * per_unit)

    n = calibrate(work, 0.02)
    assert 200 <= n <= 2000  # ~2000 at exactly 1e-5 s a unit; sleep only ever oversleeps


def test_parallel_runs_every_thread_and_reraises_errors() -> None:
    seen: set[int] = set()
    lock = threading.Lock()

    def work(t: int) -> None:
        with lock:
            seen.add(t)
        time.sleep(0.01)

    assert parallel(work, 3) >= 0.01
    assert seen == {0, 1, 2}

    def failing(t: int) -> None:
        if t == 1:
            raise StorageFull("disk full in thread 1")

    with pytest.raises(StorageFull, match="thread 1"):
        parallel(failing, 3)


@pytest.mark.parametrize(("n", "parts", "multiple"),
                         [(10, 3, 1), (100, 7, 6), (5, 8, 1), (0, 2, 1)])
def test_split_covers_the_range_in_order(n: int, parts: int, multiple: int) -> None:
    pieces = [split(n, parts, i, multiple=multiple) for i in range(parts)]
    assert pieces[0][0] == 0
    assert pieces[-1][1] == n
    for (_, hi), (lo, _) in itertools.pairwise(pieces):
        assert hi == lo
    assert all(lo % multiple == 0 for lo, _ in pieces)


def test_summarize_median_best_and_spread() -> None:
    r = summarize("x", "cpu", "GFLOPS", [10.0, 12.0, 11.0, 9.0])
    assert (r.value, r.min, r.median, r.max, r.repeats) == (10.5, 9.0, 10.5, 12.0, 4)
    assert r.spread_pct == pytest.approx(3 / 10.5 * 100, abs=0.01)
    assert summarize("x", "m", "GB/s", [1.0, 3.0, 2.0], best=True).value == 3.0
    assert summarize("x", "m", "ns", [1.0, 3.0, 2.0], best=True, better="lower").value == 1.0
    with pytest.raises(LocalProtocolError):
        summarize("x", "cpu", "GFLOPS", [])


# --- plans and stages --------------------------------------------------------------------------


def test_plans_keep_their_budgets_apart() -> None:
    assert QUICK.quick
    assert tiny().quick
    assert not FULL.quick
    assert QUICK.repeats < FULL.repeats
    assert QUICK.disk_file_bytes < FULL.disk_file_bytes
    assert FULL.mem_llc_factor >= 4  # STREAM's rule


def test_parse_stages_orders_and_refuses_unknown_names() -> None:
    assert parse_stages([]) == STAGES
    assert parse_stages(["", " "]) == STAGES
    assert parse_stages(["disk", "cpu"]) == ("cpu", "disk")
    with pytest.raises(ValidationError) as info:
        parse_stages(["cpu", "tpu"])
    assert info.value.path == "only"
    assert "'tpu'" in str(info.value)


def test_native_kernels_refuses_the_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUNET_NO_NATIVE", "1")
    with pytest.raises(NunetError, match="compiled kernels"):
        native_kernels()


def test_array_bytes_follows_the_cache_and_the_caps(tmp_path: Path) -> None:
    plan, ram = FULL, 64 << 30
    size, why = memory.array_bytes(context(tmp_path, plan, cache_bytes=32 * MIB,
                                           available_bytes=ram))
    assert (size, "4x the 32 MiB" in why) == (128 * MIB, True)
    size, why = memory.array_bytes(context(tmp_path, plan, cache_bytes=1 * MIB,
                                           available_bytes=ram))
    assert (size, why.endswith("(minimum size)")) == (plan.mem_min_bytes, True)
    size, why = memory.array_bytes(context(tmp_path, plan, cache_bytes=32 * MIB,
                                           available_bytes=240 * MIB))
    assert size == 10 * MIB
    assert "available RAM" in why
    size, _ = memory.array_bytes(context(tmp_path, plan, cache_bytes=4096 * MIB,
                                         available_bytes=ram))
    assert size == plan.mem_max_bytes


def test_run_benchmark_with_the_twins(tmp_path: Path, no_gpu: None) -> None:
    shown = Recorder()
    network = ([summarize("network.peer.rtt", "network", "ms", [1.0, 2.0], better="lower")], "")
    report = run_benchmark(tiny(), disk_dir=tmp_path, kernels=reference, progress=shown,
                           network=lambda: network, clock=lambda: 1_700_000_000.0)
    names = {r.name for r in report.results}
    assert {"cpu.clock", "cpu.int.1t", "cpu.int.all", "cpu.fma.1t", "cpu.matmul.all",
            "memory.triad", "memory.triad.all", "memory.latency", "disk.seq.read",
            "disk.rand.write.p999", "network.peer.rtt"} <= names
    assert all(r.stage in STAGES and r.repeats >= 1 and r.min <= r.median <= r.max
               for r in report.results)
    assert [n.stage for n in report.notes] == list(STAGES)
    assert {n.stage: n.status for n in report.notes}["gpu"] == "skipped"
    assert report.id.startswith("001700000000000-")
    assert not report.machine.native
    assert report.machine.simd == "python"
    assert report.scores.cpu_gflops_per_core == report.result("cpu.matmul.1t").value  # type: ignore[union-attr]
    # Every stage announced its steps and took exactly that many.
    for stage in STAGES:
        begun = [e[2] for e in shown.events if e[:2] == ("begin", stage)]
        steps = [e for e in shown.events if e[:2] == ("advance", stage)]
        assert begun == [STEPS[stage]]
        assert len(steps) == (0 if stage == "network" else STEPS[stage])
    assert disk.temp_files(tmp_path) == []
    # JSON round trip under the strict schema
    again = msgspec.json.decode(msgspec.json.encode(report), type=BenchReport)
    assert again == report


def test_run_benchmark_only_some_stages(tmp_path: Path) -> None:
    report = run_benchmark(tiny(), disk_dir=tmp_path, kernels=reference, stages=("network",),
                           network_note="offline: test")
    assert report.results == ()
    assert report.notes == (StageNote(stage="network", status="skipped", note="offline: test",
                                      seconds=report.notes[0].seconds),)
    assert report.scores.cpu_gflops_per_core is None


def test_report_schema_is_strict() -> None:
    schema = msgspec.json.schema(BenchReport)
    props = schema["$defs"]["BenchReport"]["properties"]
    assert {"id", "machine", "results", "notes", "scores", "version"} <= set(props)
    result = schema["$defs"]["Result"]
    assert result["additionalProperties"] is False
    assert {"value", "unit", "min", "median", "max", "spread_pct"} <= set(result["required"])
    bad = {"name": "x", "stage": "cpu", "value": 1.0, "unit": "u", "better": "sideways",
           "min": 1.0, "median": 1.0, "max": 1.0, "repeats": 1, "spread_pct": 0.0}
    with pytest.raises(msgspec.ValidationError, match="better"):
        msgspec.convert(bad, Result)
    with pytest.raises(msgspec.ValidationError, match="unknown"):
        msgspec.convert({**bad, "better": "higher", "surprise": 1}, Result)


# --- scores ---------------------------------------------------------------------------------------


def _result(name: str, value: float) -> Result:
    return summarize(name, name.split(".")[0], "u", [value])


def test_scores_and_capacity() -> None:
    results = [_result("cpu.matmul.1t", 40.0), _result("cpu.matmul.all", 70.0),
               _result("memory.triad", 15.0), _result("memory.triad.all", 20.0),
               _result("disk.rand.read", 30000.0), _result("gpu.0.fp32", 50.0),
               _result("gpu.1.fp32", 25.0), _result("cpu.fma.1t", 50.0)]
    scores = scores_from(results, measured_at=5.0, quick=True)
    assert scores.cpu_gflops_per_core == 40.0
    assert scores.gpu_tflops == 75.0
    assert scores.disk_write_iops is None
    assert cpu_capacity(1.5, scores) == 60.0  # cores x per-core score, as the issue asks
    assert cpu_capacity(2, Scores(measured_at=0, quick=True)) is None
    offered = measured_capacity(1.5, scores)
    assert offered["gflops"] == 60.0
    assert measured_capacity(2.0, scores)["gflops"] == 70.0  # capped by the whole machine
    assert offered["memory_bandwidth"] == 20.0
    assert offered["disk_read_iops"] == 30000.0
    assert "disk_write_iops" not in offered
    assert set(offered) <= set(MEASURED_RESOURCES)
    assert shortfalls({"gflops": 50.0, "memory_bandwidth": 25.0, "disk_write": 1.0,
                       "tpu": 1.0}, offered) == [
        ("disk_write", "not measured on this node"),
        ("memory_bandwidth", "asked 25 GB/s, offered 20 GB/s"),
        ("tpu", "unknown measured resource; one of " + ", ".join(MEASURED_RESOURCES)),
    ]


def test_summary_of_a_report(tmp_path: Path) -> None:
    report = run_benchmark(tiny(), disk_dir=tmp_path, kernels=reference, stages=("cpu",))
    summary = BenchSummary.of(report)
    assert (summary.id, summary.scores, summary.stages) == (report.id, report.scores, ("cpu",))
    assert summary.seconds >= 0


# --- GPU and network stages ---------------------------------------------------------------------


def _gpus(*vendors: str) -> tuple[GPUInfo, ...]:
    return tuple(GPUInfo(index=i, vendor=v, model=f"card{i}", vram_bytes=8 << 30, source="nvml")
                 for i, v in enumerate(vendors))


def test_gpu_stage_measures_nvidia_cards_with_a_library(tmp_path: Path) -> None:
    calls: list[tuple[int, int, int]] = []

    def timer(index: int, n: int, count: int) -> float:
        calls.append((index, n, count))
        return 2.0 * n**3 * count / 10e12  # a 10 TFLOPS card

    results, note = gpu.run(context(tmp_path), detect=lambda: (_gpus("NVIDIA", "AMD"), None),
                            timer=("fake", timer))
    by_name = {r.name: r for r in results}
    assert by_name["gpu.0.vram"].value == 8.0
    assert by_name["gpu.0.fp32"].value == pytest.approx(10.0)
    assert "gpu.1.fp32" not in by_name  # no library of ours drives an AMD card
    assert {c[0] for c in calls} == {0}
    assert note == ""


def test_gpu_stage_notes(tmp_path: Path) -> None:
    results, note = gpu.run(context(tmp_path), detect=lambda: ((), "no GPU detected (x)"))
    assert (results, note) == ([], "no GPU detected (x)")
    results, note = gpu.run(context(tmp_path), detect=lambda: (_gpus("NVIDIA"), None),
                            timer=None)
    if note:  # a machine with torch/cupy and a GPU would measure instead
        assert [r.name for r in results] == ["gpu.0.vram"]
        assert "no GPU library" in note


async def test_network_measures_a_peer_over_the_network_api() -> None:
    from nunet.benchmark.network import measure_peer, measure_peers, serve_echo
    from nunet.testing.memnet import MemoryHub

    hub = MemoryHub()
    a, b = hub.node("did:key:alice"), hub.node("did:key:bob")
    hub.node("did:key:carol")
    serve_echo(b, 0x60)
    assert (await measure_peers(a, 0x60)) == ([], "no connected peers")
    await a.connect("/mem/did:key:bob")
    results = await measure_peer(a, "did:key:bob", 0x60, pings=3, bulk_bytes=1 << 20)
    assert [r.name for r in results] == ["network.bob.rtt", "network.bob.upload"]
    assert (results[0].unit, results[0].repeats) == ("ms", 3)
    await a.connect("/mem/did:key:carol")  # carol does not serve the benchmark kind
    found, note = await measure_peers(a, 0x60, pings=2, bulk_bytes=1 << 18)
    assert {r.name.split(".")[1] for r in found} == {"bob"}
    assert "did:key:carol" in note


# --- disk: failures and clean-up ----------------------------------------------------------------


class Failing:
    """The twin kernels, with one disk call that fails the way the OS would."""

    def __init__(self, exc: BaseException, *, on: str, after: int = 0) -> None:
        self.exc, self.on, self.after = exc, on, after

    def __getattr__(self, name: str) -> Any:
        real = getattr(reference, name)
        if name != self.on:
            return real

        def call(*args: Any) -> Any:
            if self.after == 0:
                raise self.exc
            self.after -= 1
            return real(*args)

        return call


def _disk_ctx(tmp_path: Path, kernels: Any = reference) -> StageContext:
    return context(tmp_path, kernels=kernels)


def test_disk_stage_cleans_up(tmp_path: Path) -> None:
    results = disk.run(_disk_ctx(tmp_path))
    assert {r.name for r in results} >= {"disk.seq.write", "disk.seq.read", "disk.rand.read",
                                         "disk.rand.write", "disk.rand.read.p99"}
    assert disk.temp_files(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_directory_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(disk.os, "open", refuse)
    with pytest.raises(ValidationError) as info:
        disk.run(_disk_ctx(tmp_path))
    assert info.value.path == "disk_dir"
    assert str(tmp_path) in str(info.value)
    assert "--disk-dir" in str(info.value)


def test_full_disk_midway_is_storage_full_and_leaves_nothing(tmp_path: Path) -> None:
    kernels = Failing(OSError(errno.ENOSPC, "No space left on device"), on="disk_seq", after=1)
    with pytest.raises(StorageFull) as info:
        disk.run(_disk_ctx(tmp_path, kernels))
    assert info.value.path == "disk_dir"
    assert disk.temp_files(tmp_path) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path: Path) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    plan = msgspec.structs.replace(tiny(), disk_file_bytes=free + (1 << 30))
    with pytest.raises(StorageFull, match="needs"):
        disk.run(context(tmp_path, plan))
    assert list(tmp_path.iterdir()) == []


def test_other_io_errors_are_broken_resources(tmp_path: Path) -> None:
    kernels = Failing(OSError(errno.EIO, "Input/output error"), on="disk_random")
    with pytest.raises(BrokenResourceError, match="Input/output error"):
        disk.run(_disk_ctx(tmp_path, kernels))
    assert disk.temp_files(tmp_path) == []


def test_interrupt_removes_the_test_file(tmp_path: Path) -> None:
    kernels = Failing(KeyboardInterrupt(), on="disk_random", after=1)
    with pytest.raises(KeyboardInterrupt):
        disk.run(_disk_ctx(tmp_path, kernels))
    assert disk.temp_files(tmp_path) == []


def test_no_o_direct_falls_back_to_buffered_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(disk.os, "open", no_direct)
    results = disk.run(_disk_ctx(tmp_path))
    assert all("buffered (O_DIRECT not supported" in r.note for r in results)
    assert disk.temp_files(tmp_path) == []


def test_stale_files_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / f"{disk.PREFIX}999999999-0badf00d.tmp"
    mine = tmp_path / f"{disk.PREFIX}{os.getpid()}-cafe0001.tmp"
    other = tmp_path / "keep.tmp"
    for path in (dead, mine, other):
        path.write_bytes(b"x")
    assert disk.sweep_stale(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


@pytest.fixture
def slow_clock() -> Callable[[], float]:
    t = [0.0]

    def clock() -> float:
        t[0] += 1.0
        return t[0]

    return clock


def test_report_times_come_from_the_clock(tmp_path: Path, slow_clock: Callable[[], float]) -> None:
    report = run_benchmark(tiny(), disk_dir=tmp_path, kernels=reference, stages=("network",),
                           clock=slow_clock)
    assert (report.started_at, report.finished_at) == (1.0, 2.0)
    assert report.scores.measured_at == 2.0


def test_native_kernels_refuses_a_missing_build(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delenv("NUNET_NO_NATIVE", raising=False)
    monkeypatch.setitem(sys.modules, "nunet._native.kernels", None)  # as an unbuilt extension
    with pytest.raises(NunetError, match="make build"):
        native_kernels()
