"""GPU detection: NVML first, then the kernel's DRM devices in sysfs.

Detection never raises: a missing driver, a missing library or an odd sysfs tree only means fewer
GPUs (and a note that `no_gpu_reason` turns into one plain sentence for the CLI). Nothing is cached
here; the caller caches.

Indices are positions in the returned tuple: NVIDIA GPUs in NVML order first (so index `i` is the
NVML/CUDA device `i` whenever NVML answered), then the other sysfs cards in card-number order.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import msgspec

from nunet.node.sysfs import read_int as _read_int
from nunet.node.sysfs import read_text as _read

_VENDORS = {
    "0x10de": "NVIDIA",
    "0x1002": "AMD",
    "0x8086": "Intel",
    "0x1a03": "ASPEED",
    "0x102b": "Matrox",
    "0x1af4": "Red Hat (virtio)",
    "0x1234": "QEMU",
    "0x15ad": "VMware",
}
_NVIDIA = "0x10de"
_DISPLAY_CLASS = "0x03"  # PCI base class "display controller"
# NVML return codes that mean "no usable NVIDIA driver here", as opposed to a failing GPU.
_NVML_LIBRARY_NOT_FOUND = 12
_NVML_DRIVER_NOT_LOADED = 9
_CARD = re.compile(r"card(\d+)")
_PCI_ADDRESS = re.compile(r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")


class GPUInfo(msgspec.Struct, frozen=True):
    index: int
    vendor: str  # "NVIDIA" | "AMD" | "Intel" | another vendor's name or its PCI id
    model: str
    vram_bytes: int  # 0 when unknown
    source: str  # "nvml" | "sysfs"
    pci_bus_id: str = ""  # "0000:01:00.0"; "" when unknown


def detect_gpus(*, sys_root: Path = Path("/sys"), use_nvml: bool = True) -> tuple[GPUInfo, ...]:
    """The GPUs of this machine; `()` when there are none."""
    return _probe(sys_root, use_nvml)[0]


def no_gpu_reason(*, sys_root: Path = Path("/sys"), use_nvml: bool = True) -> str | None:
    """Why no GPU was found, as one sentence for the CLI; None when there are GPUs.

    Example: "no GPU detected (no NVIDIA driver; no GPU in /sys/class/drm)".
    """
    gpus, notes = _probe(sys_root, use_nvml)
    if gpus:
        return None
    return f"no GPU detected ({'; '.join(notes)})"


def _probe(sys_root: Path, use_nvml: bool) -> tuple[tuple[GPUInfo, ...], list[str]]:
    notes: list[str] = []
    nvml: list[GPUInfo] = []
    if use_nvml:
        nvml, note = _from_nvml()
        if note:
            notes.append(note)
    else:
        notes.append("NVML not used")
    # NVML is the authority on NVIDIA cards when it answers; sysfs then adds the other vendors.
    skip = {_NVIDIA} if nvml else set()
    cards, note = _from_sysfs(sys_root, skip_vendors=skip)
    if note:
        notes.append(note)
    found = [*nvml, *cards]
    gpus = tuple(msgspec.structs.replace(g, index=i) for i, g in enumerate(found))
    return gpus, notes


def _from_nvml() -> tuple[list[GPUInfo], str]:
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # any driver failure only means "no NVML"
        return [], _nvml_failure(e)
    try:
        gpus = [_nvml_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception as e:  # one failing GPU sends every GPU to the sysfs fallback
        return [], _nvml_failure(e)
    finally:
        with contextlib.suppress(Exception):  # a failed shutdown leaves nothing for us to undo
            pynvml.nvmlShutdown()
    return gpus, "" if gpus else "the NVIDIA driver reports no GPU"


def _nvml_gpu(pynvml: Any, i: int) -> GPUInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
    return GPUInfo(
        index=i,
        vendor="NVIDIA",
        model=_text(pynvml.nvmlDeviceGetName(handle)),
        vram_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
        source="nvml",
        pci_bus_id=_normal_bus_id(_text(pynvml.nvmlDeviceGetPciInfo(handle).busId)),
    )


def _nvml_failure(e: Exception) -> str:
    code = getattr(e, "value", None)
    if code == _NVML_LIBRARY_NOT_FOUND:
        return "no NVIDIA driver"
    if code == _NVML_DRIVER_NOT_LOADED:
        return "NVIDIA driver not loaded"
    return f"NVML failed: {e or type(e).__name__}"


def _from_sysfs(sys_root: Path, *, skip_vendors: set[str]) -> tuple[list[GPUInfo], str]:
    drm = sys_root / "class" / "drm"
    try:
        names = [p.name for p in drm.iterdir()]
    except OSError:
        return [], f"no {drm}"
    numbered = sorted((int(m[1]), n) for n in names if (m := _CARD.fullmatch(n)))
    gpus: list[GPUInfo] = []
    for _, name in numbered:
        device = drm / name / "device"
        vendor_id = _read(device / "vendor").lower()
        if not vendor_id or vendor_id in skip_vendors:
            continue
        if not _read(device / "class").lower().startswith(_DISPLAY_CLASS):
            continue
        device_id = _read(device / "device").lower()
        vendor = _VENDORS.get(vendor_id, vendor_id)
        product = _read(device / "product_name")
        gpus.append(
            GPUInfo(
                index=len(gpus),
                vendor=vendor,
                model=product or f"{vendor} GPU [{vendor_id[2:]}:{device_id[2:]}]",
                vram_bytes=_read_int(device / "mem_info_vram_total"),
                source="sysfs",
                pci_bus_id=_sysfs_bus_id(device),
            )
        )
    return gpus, "" if gpus else f"no GPU in {drm}"


def _sysfs_bus_id(device: Path) -> str:
    for line in _read(device / "uevent").splitlines():
        key, _, value = line.partition("=")
        if key == "PCI_SLOT_NAME" and _PCI_ADDRESS.fullmatch(value):
            return _normal_bus_id(value)
    try:
        name = device.resolve().name
    except OSError:
        return ""
    return _normal_bus_id(name) if _PCI_ADDRESS.fullmatch(name) else ""


def _normal_bus_id(bus_id: str) -> str:
    """NVML says "00000000:01:00.0", sysfs "0000:01:00.0": keep the sysfs form."""
    domain, sep, rest = bus_id.strip().lower().partition(":")
    if not sep:
        return ""
    return f"{int(domain, 16):04x}:{rest}" if re.fullmatch(r"[0-9a-f]+", domain) else ""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
