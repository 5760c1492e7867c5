from __future__ import annotations

import os
import shutil
import socket
import sys
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nunet.node.machine import CPUInfo, DiskInfo, detect_cpu, detect_disk, detect_machine

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz
cpu MHz\t\t: 2000.125
cache size\t: 512 KB
physical id\t: 0
core id\t\t: 0

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz
cpu MHz\t\t: 2100.000
physical id\t: 0
core id\t\t: 0

processor\t: 2
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 1

processor\t: 3
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 1
"""

ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
CPU implementer\t: 0x41
CPU part\t: 0xd08

processor\t: 1
BogoMIPS\t: 108.00
CPU implementer\t: 0x41

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def no_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import psutil` fail, so that missing files show the built-in defaults."""
    monkeypatch.setitem(sys.modules, "psutil", None)


def fake_tree(root: Path) -> tuple[Path, Path, Path]:
    proc, sys_, etc = root / "proc", root / "sys", root / "etc"
    write(proc, "cpuinfo", X86_CPUINFO)
    write(proc, "meminfo", "MemTotal:       24683656 kB\nMemFree:         1000 kB\n")
    write(proc, "sys/kernel/osrelease", "6.1.0-test\n")
    write(proc, "sys/kernel/hostname", "testbox\n")
    write(proc, "sys/kernel/arch", "riscv64\n")
    cache = "devices/system/cpu/cpu0/cache"
    for i, (level, size) in enumerate([(1, "32K"), (1, "48K"), (2, "1280K"), (3, "30M")]):
        write(sys_, f"{cache}/index{i}/level", f"{level}\n")
        write(sys_, f"{cache}/index{i}/size", f"{size}\n")
    write(sys_, "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "3900000\n")
    write(etc, "os-release", 'NAME="Test Linux"\nPRETTY_NAME="Test Linux 1.0 (fake)"\n')
    return proc, sys_, etc


def test_real_machine_is_sane(tmp_path: Path) -> None:
    m = detect_machine(tmp_path / "not" / "yet")
    assert m.cpu.threads >= m.cpu.cores >= 1
    assert m.cpu.model
    assert m.cpu.vendor
    assert m.cpu.arch
    assert m.cpu.clock_mhz >= 0
    assert m.cpu.max_clock_mhz >= m.cpu.clock_mhz
    assert m.ram_bytes > 0
    assert m.disk.path == str(tmp_path)
    assert m.disk.total_bytes > 0
    assert 0 <= m.disk.free_bytes <= m.disk.total_bytes
    assert m.kernel == os.uname().release
    assert m.hostname
    assert isinstance(m.gpus, tuple)
    assert all(g.index == i for i, g in enumerate(m.gpus))


def test_fake_tree_gives_exactly_what_was_written(tmp_path: Path, no_psutil: None) -> None:
    proc, sys_, etc = fake_tree(tmp_path)
    m = detect_machine(tmp_path, proc_root=proc, sys_root=sys_, etc_root=etc, use_nvml=False)
    assert m.cpu == CPUInfo(
        model="Intel(R) Xeon(R) Test CPU @ 2.00GHz",
        vendor="Intel",
        arch="riscv64",
        cores=2,
        threads=4,
        clock_mhz=2000.125,
        max_clock_mhz=3900.0,
        cache_bytes=30 << 20,
    )
    assert m.ram_bytes == 24683656 * 1024
    assert m.os == "Test Linux 1.0 (fake)"
    assert m.kernel == "6.1.0-test"
    assert m.hostname == "testbox"
    assert m.gpus == ()
    usage = shutil.disk_usage(tmp_path)
    assert m.disk.path == str(tmp_path)
    assert m.disk.total_bytes == usage.total


def test_cache_falls_back_to_cpuinfo(tmp_path: Path, no_psutil: None) -> None:
    write(tmp_path, "proc/cpuinfo", X86_CPUINFO)
    cpu = detect_cpu(proc_root=tmp_path / "proc", sys_root=tmp_path / "sys")
    assert cpu.cache_bytes == 512 * 1024
    assert cpu.max_clock_mhz == 2000.125  # no cpufreq: the current clock


def test_arm_cpuinfo_and_sys_topology(tmp_path: Path, no_psutil: None) -> None:
    write(tmp_path, "proc/cpuinfo", ARM_CPUINFO)
    cpus = "sys/devices/system/cpu"
    for n in range(2):
        write(tmp_path, f"{cpus}/cpu{n}/topology/physical_package_id", "0\n")
        write(tmp_path, f"{cpus}/cpu{n}/topology/core_id", f"{n}\n")
    write(tmp_path, f"{cpus}/cpu0/cpufreq/scaling_cur_freq", "1500000\n")
    cpu = detect_cpu(proc_root=tmp_path / "proc", sys_root=tmp_path / "sys")
    assert cpu.model == "Raspberry Pi 4 Model B Rev 1.4"
    assert cpu.vendor == "ARM"
    assert (cpu.cores, cpu.threads) == (2, 2)
    assert cpu.clock_mhz == 1500.0
    assert cpu.max_clock_mhz == 1500.0


def test_online_list_counts_threads_when_cpuinfo_is_missing(
    tmp_path: Path, no_psutil: None
) -> None:
    write(tmp_path, "sys/devices/system/cpu/online", "0-3,8-11,16\n")
    cpu = detect_cpu(proc_root=tmp_path / "proc", sys_root=tmp_path / "sys")
    assert cpu.threads == 9
    assert cpu.cores == 9  # nothing says otherwise


def test_missing_files_give_defaults(tmp_path: Path, no_psutil: None) -> None:
    m = detect_machine(
        tmp_path / "work",
        proc_root=tmp_path / "proc",
        sys_root=tmp_path / "sys",
        etc_root=tmp_path / "etc",
        use_nvml=False,
    )
    assert m.cpu == CPUInfo(
        model="unknown",
        vendor="unknown",
        arch=os.uname().machine,
        cores=1,
        threads=1,
        clock_mhz=0.0,
        max_clock_mhz=0.0,
        cache_bytes=0,
    )
    assert m.ram_bytes == 0
    assert m.os == os.uname().sysname
    assert m.kernel == os.uname().release
    assert m.hostname == socket.gethostname()
    assert m.gpus == ()
    assert m.disk.path == str(tmp_path)


def test_missing_files_fall_back_to_psutil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("psutil")
    fake.cpu_count = lambda logical=True: 16 if logical else 8  # type: ignore[attr-defined]
    fake.cpu_freq = lambda: types.SimpleNamespace(current=1800.0, max=4200.0)  # type: ignore[attr-defined]
    fake.virtual_memory = lambda: types.SimpleNamespace(total=64 << 30)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "psutil", fake)
    m = detect_machine(
        tmp_path,
        proc_root=tmp_path / "p",
        sys_root=tmp_path / "s",
        etc_root=tmp_path / "e",
        use_nvml=False,
    )
    assert (m.cpu.cores, m.cpu.threads) == (8, 16)
    assert (m.cpu.clock_mhz, m.cpu.max_clock_mhz) == (1800.0, 4200.0)
    assert m.ram_bytes == 64 << 30


def test_psutil_that_fails_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("psutil")

    def boom(*_a: object, **_k: object) -> object:
        raise RuntimeError("not supported here")

    fake.cpu_count = boom  # type: ignore[attr-defined]
    fake.cpu_freq = lambda: None  # type: ignore[attr-defined]
    fake.virtual_memory = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "psutil", fake)
    cpu = detect_cpu(proc_root=tmp_path, sys_root=tmp_path)
    assert (cpu.cores, cpu.threads, cpu.clock_mhz) == (1, 1, 0.0)


def test_garbage_files_give_defaults(tmp_path: Path, no_psutil: None) -> None:
    write(tmp_path, "proc/cpuinfo", "processor: 0\ncpu MHz: fast\ncache size: big\n")
    write(tmp_path, "proc/meminfo", "MemTotal: lots\n")
    write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "-5\n")
    write(tmp_path, "sys/devices/system/cpu/cpu0/cache/index0/size", "huge\n")
    write(tmp_path, "sys/devices/system/cpu/online", "a-b\n")
    m = detect_machine(
        tmp_path,
        proc_root=tmp_path / "proc",
        sys_root=tmp_path / "sys",
        etc_root=tmp_path,
        use_nvml=False,
    )
    assert (m.cpu.threads, m.cpu.clock_mhz, m.cpu.max_clock_mhz, m.cpu.cache_bytes) == (1, 0, 0, 0)
    assert m.ram_bytes == 0


text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=400)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text, text, text | st.from_regex(r"\A[0-9]{1,400}[KMG]?\Z"))
def test_detection_never_raises_on_any_text(
    tmp_path: Path, no_psutil: None, cpuinfo: str, meminfo: str, size: str
) -> None:
    write(tmp_path, "proc/cpuinfo", cpuinfo)
    write(tmp_path, "proc/meminfo", meminfo)
    write(tmp_path, "sys/devices/system/cpu/cpu0/cache/index0/size", size)
    write(tmp_path, "sys/devices/system/cpu/online", size)
    write(tmp_path, "etc/os-release", cpuinfo)
    m = detect_machine(
        tmp_path,
        proc_root=tmp_path / "proc",
        sys_root=tmp_path / "sys",
        etc_root=tmp_path / "etc",
        use_nvml=False,
    )
    assert m.cpu.threads >= m.cpu.cores >= 1
    assert m.ram_bytes >= 0
    assert m.cpu.cache_bytes >= 0
    assert m.cpu.clock_mhz >= 0


def test_disk_of_a_missing_work_dir_is_its_nearest_parent(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    disk = detect_disk(tmp_path / "a" / "b" / "c")
    assert disk.path == str(tmp_path / "a")
    assert disk.total_bytes == shutil.disk_usage(tmp_path).total


def test_relative_work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert detect_disk(Path("later/.nunet")).path == str(tmp_path)


def test_unreadable_disk_gives_zeros(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(_path: object) -> object:
        raise PermissionError("denied")

    monkeypatch.setattr(shutil, "disk_usage", denied)
    assert detect_disk(tmp_path) == DiskInfo(path=str(tmp_path), total_bytes=0, free_bytes=0)
