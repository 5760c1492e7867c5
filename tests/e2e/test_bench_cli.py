"""`nunet bench` as a user runs it: real processes, the compiled kernels, real files; the quick
run's wall time is recorded (`quick_seconds` in the junit properties), never asserted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from nunet.benchmark.disk import temp_files
from nunet.benchmark.model import STAGES, BenchReport, BenchSummary
from nunet.testing.cluster import NodeProcess, free_port

# `nunet` with the bench group registered whether or not main.py has it yet.
RUNNER = (
    "import sys\n"
    "from nunet.cli.main import cli, main\n"
    "from nunet.cli.bench_cmd import bench\n"
    "cli.commands.setdefault('bench', bench)\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture(autouse=True)
def compiled(native: Callable[[str], ModuleType]) -> None:
    native("kernels")  # skips (or fails under NUNET_REQUIRE_NATIVE=1) when not built


class Home:
    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()  # nothing listens there: no node unless we start one
        self.disk = root / "work"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DMS_") and k != "NUNET_NO_NATIVE"}
        env.update(HOME=str(self.root), XDG_CONFIG_HOME=str(self.root / "xdg"))
        return env

    def argv(self, *args: str) -> list[str]:
        flags = ["--user-dir", str(self.root / "user"), "--work-dir", str(self.disk),
                 "--data-dir", str(self.root / "work" / "data"), "--rest-port", str(self.port)]
        return [sys.executable, "-c", RUNNER, *args, *flags]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env(),
                              cwd=self.root, timeout=timeout, check=False)


def test_quick_run_json(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    home = Home(tmp_path)
    t0 = time.perf_counter()
    done = home.run("bench", "--quick", "--json", "--no-save")
    took = time.perf_counter() - t0
    record_property("quick_seconds", round(took, 2))
    assert done.returncode == 0, done.stderr
    report = msgspec.json.decode(done.stdout, type=BenchReport)  # the schema, strictly
    record_property("quick_stage_seconds", {n.stage: n.seconds for n in report.notes})
    assert report.quick
    assert report.machine.native
    assert report.stages == STAGES
    assert [n.stage for n in report.notes] == list(STAGES)
    assert {n.stage for n in report.notes if n.status == "ok"} >= {"cpu", "memory", "disk"}
    scores = report.scores
    assert all(figure is not None and figure > 0 for figure in (
        scores.cpu_gflops_per_core, scores.memory_gbs_all, scores.disk_read_iops))
    assert not (tmp_path / "work" / "data" / "db").exists()  # --no-save
    assert temp_files(home.disk) == []


def test_saved_reports_history_and_show(tmp_path: Path) -> None:
    home = Home(tmp_path)
    done = home.run("bench", "--quick", "--only", "cpu")
    assert done.returncode == 0, done.stderr
    assert "cpu.matmul.1t" in done.stdout
    assert "saved as" in done.stderr
    history = home.run("bench", "history", "--json")
    assert history.returncode == 0, history.stderr
    (summary,) = msgspec.json.decode(history.stdout, type=list[BenchSummary])
    assert summary.stages == ("cpu",)
    shown = home.run("bench", "show", "--json")
    assert msgspec.json.decode(shown.stdout, type=BenchReport).id == summary.id
    by_id = home.run("bench", "show", summary.id)
    assert by_id.returncode == 0
    assert "GFLOPS" in by_id.stdout
    text = home.run("bench", "history")
    assert summary.id in text.stdout
    missing = home.run("bench", "show", "000000000000001-abcdef")
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    home = Home(tmp_path)
    unknown = home.run("bench", "--only", "cpu,tpu", "--no-save")
    assert unknown.returncode == 1
    assert "unknown stage 'tpu'" in unknown.stderr
    read_only = home.run("bench", "--quick", "--only", "disk", "--no-save",
                         "--disk-dir", "/sys/nunet-bench")
    assert read_only.returncode == 1
    assert "/sys/nunet-bench" in read_only.stderr
    assert "Traceback" not in read_only.stderr
    empty = home.run("bench", "show")
    assert empty.returncode == 1
    assert "no benchmark stored yet" in empty.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_nothing_and_leaves_no_files(tmp_path: Path, sig: int) -> None:
    home = Home(tmp_path)
    home.disk.mkdir(parents=True)
    # The full plan's disk stage runs for seconds: long enough to be interrupted in it.
    proc = subprocess.Popen(home.argv("bench", "--only", "disk"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=home.env(), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not temp_files(home.disk):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the disk stage never started"
            time.sleep(0.01)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert temp_files(home.disk) == []
    history = home.run("bench", "history", "--json")
    assert msgspec.json.decode(history.stdout) == []


def test_saving_through_a_running_node(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path, "alice")
    node.start()
    try:
        node.wait_ready()
        home = Home(node.home, node.rest_port)
        served = home.run("bench", "history", "--json")
        if "does not serve benchmark reports" in served.stderr:
            pytest.skip("this node's API has no benchmark routes yet (node.py/routes.py)")
        assert served.returncode == 0, served.stderr
        done = home.run("bench", "--quick", "--only", "cpu")
        assert done.returncode == 0, done.stderr
        assert "by the node at" in done.stderr
        (summary,) = msgspec.json.decode(home.run("bench", "history", "--json").stdout,
                                         type=list[BenchSummary])
        assert summary.scores.cpu_gflops_per_core
    finally:
        node.kill()
