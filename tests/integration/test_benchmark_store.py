"""Benchmark reports in a real rocksdict store, the node-side service, its API routes over real
HTTP, and the disk stage on real read-only and full filesystems."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from nunet._native._reference import kernels as reference
from nunet.benchmark import disk, service
from nunet.benchmark.measure import StageContext
from nunet.benchmark.model import BenchReport
from nunet.benchmark.plan import tiny
from nunet.benchmark.runner import run_benchmark
from nunet.benchmark.service import BenchmarkService, RunRequest
from nunet.benchmark.store import BenchmarkStore
from nunet.db.store import Store
from nunet.errors import AlreadyExists, NotFound, StorageFull, ValidationError

MIB = 1 << 20


def make_report(at: float) -> BenchReport:
    """A small real report (network stage only, so it is instant) marked as natively measured."""
    report = run_benchmark(tiny(), disk_dir=Path("."), kernels=reference, stages=("network",),
                           clock=lambda: at)
    return msgspec.structs.replace(
        report, machine=msgspec.structs.replace(report.machine, native=True)
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "db")
    yield opened
    if not opened.closed:
        opened.close()


def test_reports_are_kept_in_time_order_and_pruned(store: Store, tmp_path: Path) -> None:
    reports = BenchmarkStore(store, keep=3)
    assert reports.latest() is None
    assert reports.history() == []
    made = [make_report(1_700_000_000.0 + i) for i in (3, 1, 4, 2, 5)]
    for report in made:
        summary = reports.save(report)
        assert summary.id == report.id
    by_time = sorted(made, key=lambda r: r.started_at)
    assert [s.id for s in reports.history()] == [r.id for r in reversed(by_time[-3:])]
    latest = reports.latest()
    assert latest == by_time[-1]
    assert reports.scores() == by_time[-1].scores
    with pytest.raises(NotFound):
        reports.get(by_time[0].id)  # pruned
    store.close()
    with Store.open(tmp_path / "db") as reopened:
        assert BenchmarkStore(reopened).get(by_time[-1].id) == by_time[-1]


def test_store_refuses_what_would_mislead_matching(store: Store) -> None:
    reports = BenchmarkStore(store)
    report = make_report(1_700_000_000.0)
    reports.save(report)
    with pytest.raises(AlreadyExists):
        reports.save(report)
    twin = msgspec.structs.replace(
        report, id="001700000000001-abcdef",
        machine=msgspec.structs.replace(report.machine, native=False))
    with pytest.raises(ValidationError) as info:
        reports.save(twin)
    assert info.value.path == "machine.native"
    for field, value, path in (("id", "../x", "id"), ("version", 99, "version"),
                               ("finished_at", 0.0, "finished_at")):
        bad = msgspec.structs.replace(report, **{field: value})
        with pytest.raises(ValidationError) as info:
            reports.save(bad)
        assert info.value.path == path
    with pytest.raises(NotFound):
        reports.get("nonsense")
    assert [s.id for s in reports.history()] == [report.id]


def test_service_latest_recent_and_scores(store: Store, tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    svc = BenchmarkService(store, tmp_path, clock=lambda: now[0])
    with pytest.raises(NotFound, match="nunet bench"):
        svc.latest()
    with pytest.raises(NotFound):
        svc.hardware_benchmark()
    assert svc.recent() is None
    report = make_report(now[0])
    svc.save(report)
    assert svc.latest() == report
    assert svc.hardware_benchmark() == report.scores
    assert svc.recent() == report
    now[0] += service.RECENT_S + 1
    assert svc.recent() is None


@pytest.fixture
def tiny_plans(monkeypatch: pytest.MonkeyPatch, native: Callable[[str], ModuleType]) -> None:
    """The node's runs use the compiled kernels and the quick/full plans: here tiny ones."""
    native("kernels")
    monkeypatch.delenv("NUNET_NO_NATIVE", raising=False)
    monkeypatch.setattr(service, "PLANS", {"quick": tiny(), "full": tiny()})


async def test_service_runs_in_a_thread_and_saves(store: Store, tmp_path: Path,
                                                  tiny_plans: None) -> None:
    svc = BenchmarkService(store, tmp_path)
    report = await svc.run(RunRequest(quick=True, only=("cpu", "disk")))
    assert report.stages == ("cpu", "disk")
    assert report.machine.native
    assert svc.latest() == report
    unsaved = await svc.run(RunRequest(only=("cpu",), save=False))
    assert svc.latest() == report != unsaved
    assert disk.temp_files(tmp_path) == []
    with pytest.raises(ValidationError):
        await svc.run(RunRequest(only=("quantum",)))


# --- the API routes, over real HTTP -------------------------------------------------------------


@pytest.fixture
async def client(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TestClient[Any, Any]]:
    """The node's API with the benchmark rows in its table (added here until node.py and
    routes.py are wired; then they are already there)."""
    from nunet.api import openapi, server
    from nunet.api.routes import API_PREFIX, ROUTES, Route
    from nunet.config.loader import load_config
    from nunet.crypto.keys import KeyPair
    from nunet.node.node import Node

    if not any("/benchmark/" in r.path for r in ROUTES):
        rows = tuple(Route(*row) for row in service.routes(API_PREFIX))
        monkeypatch.setattr(server, "ROUTES", ROUTES + rows)
        monkeypatch.setattr(openapi, "ROUTES", ROUTES + rows)
    node = Node(config=load_config(None, env={}).config, keypair=KeyPair.generate(), store=store,
                context="dms", work_dir=tmp_path)
    if not hasattr(node, "benchmark"):
        node.benchmark = BenchmarkService(store, tmp_path)  # type: ignore[attr-defined]
    async with TestClient(TestServer(server.build_app(node), host="127.0.0.1")) as c:
        yield c


async def test_api_routes(client: TestClient[Any, Any], tiny_plans: None) -> None:
    base = "/api/v1/benchmark"
    missing = await client.get(f"{base}/latest")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    report = make_report(1_700_000_000.0)
    saved = await client.post(f"{base}/reports", data=msgspec.json.encode(report),
                              headers={"Content-Type": "application/json"})
    assert saved.status == 200, await saved.text()
    assert (await saved.json())["id"] == report.id
    got = await (await client.get(f"{base}/reports/{report.id}")).json()
    assert msgspec.convert(got, BenchReport) == report
    history = await (await client.get(f"{base}/history")).json()
    assert [h["id"] for h in history] == [report.id]
    scores = await (await client.get(f"{base}/scores")).json()
    assert scores["measured_at"] == report.scores.measured_at
    twin = msgspec.to_builtins(report)
    twin["id"], twin["machine"]["native"] = "001700000000009-abcdef", False
    refused = await client.post(f"{base}/reports", json=twin)
    assert refused.status == 400
    assert (await refused.json())["error"]["field"] == "machine.native"
    run = await client.post(f"{base}/run", json={"quick": True, "only": ["cpu"]})
    assert run.status == 200, await run.text()
    assert (await run.json())["stages"] == ["cpu"]
    bad = await client.post(f"{base}/run", json={"only": ["cpu"], "fast": True})
    assert bad.status == 400
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert {f"{base}/latest", f"{base}/reports/{{id}}", f"{base}/run"} <= set(doc["paths"])


# --- the disk stage on real filesystems ---------------------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `where` (root only; skips where mounting is not allowed)."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _ctx(directory: Path, kernels: Any, size: int) -> StageContext:
    plan = msgspec.structs.replace(tiny(), disk_file_bytes=size)
    return StageContext(plan=plan, kernels=kernels, threads=1, cache_bytes=0,
                        available_bytes=1 << 30, disk_dir=directory)


def test_real_disk_stage_leaves_nothing(tmp_path: Path,
                                        native: Callable[[str], ModuleType]) -> None:
    results = disk.run(_ctx(tmp_path, native("kernels"), 4 * MIB))
    by_name = {r.name: r for r in results}
    assert by_name["disk.rand.read"].value > 0
    assert by_name["disk.seq.write"].unit == "MB/s"
    assert by_name["disk.rand.read.p50"].value <= by_name["disk.rand.read.p999"].value
    assert list(tmp_path.iterdir()) == []


def test_read_only_directory(tmp_path: Path, native: Callable[[str], ModuleType]) -> None:
    kernels = native("kernels")
    if os.geteuid() != 0:
        target = tmp_path / "ro"
        target.mkdir(mode=0o555)
        cm: contextlib.AbstractContextManager[Path] = contextlib.nullcontext(target)
    else:
        cm = tmpfs(tmp_path / "ro", "ro,size=16m")
    with cm as target, pytest.raises(ValidationError) as info:
        disk.run(_ctx(target, kernels, 4 * MIB))
    assert info.value.path == "disk_dir"
    assert "--disk-dir" in str(info.value)


def test_full_filesystem(tmp_path: Path, native: Callable[[str], ModuleType],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    kernels = native("kernels")
    with tmpfs(tmp_path / "small", "size=24m") as small:
        # 24 MiB cannot hold 4 MiB plus the 16 MiB margin once 8 MiB are taken.
        (small / "filler").write_bytes(bytes(8 * MIB))
        with pytest.raises(StorageFull, match="needs"):
            disk.run(_ctx(small, kernels, 4 * MIB))
        # Filling up while writing (the margin check passed, a neighbour then took the space).
        (small / "filler").write_bytes(b"")
        monkeypatch.setattr(disk, "check_space", lambda *_a: None)
        with pytest.raises(StorageFull, match="no space left"):
            disk.run(_ctx(small, kernels, 32 * MIB))
        assert disk.temp_files(small) == []
