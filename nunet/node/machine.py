"""What this machine has: CPU, RAM, the work dir's disk, GPUs, OS.

Read straight from /proc, /sys and /etc (cheap, and testable against a fake tree through the
`*_root` arguments); psutil is only a fallback for values those files do not give (another OS, a
locked-down container), because importing it costs more than the whole detection. Detection never
raises: an unknown value becomes "unknown" or 0 (threads and cores at least 1). Nothing is cached
here; the caller caches.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from nunet.node.gpu import GPUInfo, detect_gpus
from nunet.node.sysfs import read_int as _read_int
from nunet.node.sysfs import read_text as _read

_T = TypeVar("_T")

_CPU_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}
# /proc/cpuinfo on ARM names the implementer by its code instead of a vendor string.
_ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
}
_MODEL_KEYS = ("model name", "Processor", "cpu model", "uarch", "cpu", "Model")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)i?B?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class CPUInfo(msgspec.Struct, frozen=True):
    model: str
    vendor: str
    arch: str
    cores: int  # physical
    threads: int  # logical
    clock_mhz: float  # current
    max_clock_mhz: float
    cache_bytes: int  # the largest cache (normally the last level); 0 when unknown


class DiskInfo(msgspec.Struct, frozen=True):
    path: str  # the directory actually measured: the work dir or its nearest existing parent
    total_bytes: int
    free_bytes: int  # free for an unprivileged user


class MachineInfo(msgspec.Struct, frozen=True):
    cpu: CPUInfo
    ram_bytes: int
    disk: DiskInfo
    gpus: tuple[GPUInfo, ...]
    os: str
    kernel: str
    hostname: str


def detect_machine(
    work_dir: Path,
    *,
    proc_root: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
    etc_root: Path = Path("/etc"),
    use_nvml: bool = True,
) -> MachineInfo:
    """Describe this machine; `work_dir` need not exist yet."""
    return MachineInfo(
        cpu=detect_cpu(proc_root=proc_root, sys_root=sys_root),
        ram_bytes=_ram_bytes(proc_root),
        disk=detect_disk(work_dir),
        gpus=detect_gpus(sys_root=sys_root, use_nvml=use_nvml),
        os=_os_name(etc_root),
        kernel=_read(proc_root / "sys" / "kernel" / "osrelease") or _uname("release"),
        hostname=_read(proc_root / "sys" / "kernel" / "hostname") or socket.gethostname(),
    )


def detect_cpu(*, proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")) -> CPUInfo:
    processors = _cpuinfo(proc_root / "cpuinfo")
    first = processors[0] if processors else {}
    cpus = sys_root / "devices" / "system" / "cpu"
    # On Linux psutil reads these same files: ask it only where there is no /proc/cpuinfo at all.
    other_os = not processors
    threads = (
        len(processors)
        or _count_cpu_list(_read(cpus / "online"))
        or _psutil(lambda p: p.cpu_count(logical=True))
        or 1
    )
    cores = (
        _physical_cores(processors)
        or _sys_physical_cores(cpus)
        or _psutil(lambda p: p.cpu_count(logical=False), when=other_os)
        or threads
    )
    clock = (
        _float(first.get("cpu MHz"))
        or _read_int(cpus / "cpu0" / "cpufreq" / "scaling_cur_freq") / 1000
        or _psutil(lambda p: float(p.cpu_freq().current), when=other_os)
        or 0.0
    )
    max_clock = (
        _read_int(cpus / "cpu0" / "cpufreq" / "cpuinfo_max_freq") / 1000
        or _psutil(lambda p: float(p.cpu_freq().max), when=other_os)
        or clock
    )
    cache = _sys_cache_bytes(cpus / "cpu0" / "cache") or _size(first.get("cache size", ""))
    return CPUInfo(
        model=next((first[k] for k in _MODEL_KEYS if first.get(k)), "unknown"),
        vendor=_cpu_vendor(first),
        arch=_read(proc_root / "sys" / "kernel" / "arch") or _uname("machine") or "unknown",
        cores=min(cores, threads),
        threads=threads,
        clock_mhz=clock,
        max_clock_mhz=max(max_clock, clock),
        cache_bytes=cache,
    )


def detect_disk(work_dir: Path) -> DiskInfo:
    """Size and free space of the filesystem that holds (or will hold) `work_dir`."""
    path = work_dir.absolute()
    while not os.path.exists(path) and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return DiskInfo(path=str(path), total_bytes=0, free_bytes=0)
    return DiskInfo(path=str(path), total_bytes=usage.total, free_bytes=usage.free)


def _cpuinfo(path: Path) -> list[dict[str, str]]:
    """One dict per "processor" block; ARM puts model lines in a trailing block without one."""
    processors: list[dict[str, str]] = []
    extra: dict[str, str] = {}
    block: dict[str, str] = {}
    for line in [*_read(path).splitlines(), ""]:
        key, sep, value = line.partition(":")
        if sep:
            block.setdefault(key.strip(), value.strip())
        elif "processor" in block:
            processors.append(block)
            block = {}
        else:
            extra.update(block)
            block = {}
    if processors:
        processors[0] = {**extra, **processors[0]}
    return processors


def _physical_cores(processors: list[dict[str, str]]) -> int:
    pairs = {(p.get("physical id"), p.get("core id")) for p in processors}
    return 0 if (None, None) in pairs else len(pairs)


def _sys_physical_cores(cpus: Path) -> int:
    pairs = set()
    for topology in cpus.glob("cpu[0-9]*/topology"):
        package, core = _read(topology / "physical_package_id"), _read(topology / "core_id")
        if not core:
            return 0
        pairs.add((package, core))
    return len(pairs)


def _count_cpu_list(text: str) -> int:
    """Count the CPUs in a kernel list such as "0-3,8-11"."""
    count = 0
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        try:
            count += int(last or first) - int(first) + 1
        except ValueError:
            return 0
    return count


def _sys_cache_bytes(cache: Path) -> int:
    return max((_size(_read(index / "size")) for index in cache.glob("index[0-9]*")), default=0)


def _cpu_vendor(first: dict[str, str]) -> str:
    if vendor := first.get("vendor_id"):
        return _CPU_VENDORS.get(vendor, vendor)
    if implementer := first.get("CPU implementer"):
        return _ARM_IMPLEMENTERS.get(implementer.lower(), implementer)
    return "unknown"


def _ram_bytes(proc_root: Path) -> int:
    for line in _read(proc_root / "meminfo").splitlines():
        key, _, value = line.partition(":")
        if key == "MemTotal":
            return _size(value)
    return _psutil(lambda p: int(p.virtual_memory().total)) or 0


def _os_name(etc_root: Path) -> str:
    fields: dict[str, str] = {}
    for line in _read(etc_root / "os-release").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    return fields.get("PRETTY_NAME") or fields.get("NAME") or _uname("sysname") or "unknown"


def _size(text: str) -> int:
    """Bytes in "32K", "32768K", "512 KB", "24683656 kB", "1.5M" (binary units); 0 if unreadable."""
    m = _SIZE.fullmatch(text)
    if not m:
        return 0
    value = float(m[1]) * _UNITS[m[2].upper()]
    return int(value) if math.isfinite(value) else 0


def _psutil(get: Callable[[Any], _T], *, when: bool = True) -> _T | None:
    if not when:
        return None
    try:
        import psutil

        return get(psutil)
    except Exception:  # psutil missing, unsupported here, or denied: the caller has a default
        return None


def _uname(field: str) -> str:
    try:
        return str(getattr(os.uname(), field))
    except (AttributeError, OSError):
        return ""


def _float(text: str | None) -> float:
    try:
        value = float(text or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0
