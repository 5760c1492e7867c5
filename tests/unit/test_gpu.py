from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from nunet.node.gpu import GPUInfo, detect_gpus, no_gpu_reason
from nunet.node.resources import gib


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_nvml(
    monkeypatch: pytest.MonkeyPatch,
    gpus: list[tuple[str | bytes, int, str | bytes]],
    *,
    init_error: int | None = None,
    fail_on: int | None = None,
) -> list[str]:
    """Install a fake `pynvml` reporting `gpus` as (name, vram, busId); returns the call log."""
    calls: list[str] = []
    mod = types.ModuleType("pynvml")

    def init() -> None:
        calls.append("init")
        if init_error is not None:
            raise NVMLError(init_error)

    def handle(i: int) -> int:
        if i == fail_on:
            raise NVMLError(15)  # NVML_ERROR_GPU_IS_LOST
        return i

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: gpus[h][0]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=gpus[h][1], free=0, used=gpus[h][1]
    )
    mod.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=gpus[h][2])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return calls


def card(
    sys_root: Path,
    name: str,
    vendor: str,
    device: str = "0x1234",
    *,
    cls: str = "0x030000",
    vram: int | None = None,
    slot: str = "",
    product: str = "",
) -> None:
    d = sys_root / "class" / "drm" / name / "device"
    d.mkdir(parents=True)
    (d / "vendor").write_text(f"{vendor}\n")
    (d / "device").write_text(f"{device}\n")
    (d / "class").write_text(f"{cls}\n")
    if vram is not None:
        (d / "mem_info_vram_total").write_text(f"{vram}\n")
    if slot:
        (d / "uevent").write_text(f"DRIVER=amdgpu\nPCI_CLASS=30000\nPCI_SLOT_NAME={slot}\n")
    if product:
        (d / "product_name").write_text(f"{product}\n")


@pytest.fixture
def two_cards(tmp_path: Path) -> Path:
    card(tmp_path, "card0", "0x10de", "0x2330", slot="0000:01:00.0")
    card(tmp_path, "card1", "0x1002", "0x66a1", vram=gib(16), slot="0000:02:00.0")
    # things that are not GPUs of their own: connectors, render nodes, a card without a vendor
    # (simpledrm), a non-display PCI function
    (tmp_path / "class" / "drm" / "card0-DP-1").mkdir()
    (tmp_path / "class" / "drm" / "renderD128").mkdir()
    (tmp_path / "class" / "drm" / "card2" / "device").mkdir(parents=True)
    card(tmp_path, "card3", "0x1002", cls="0x040300")
    return tmp_path


NVIDIA_SYSFS = GPUInfo(0, "NVIDIA", "NVIDIA GPU [10de:2330]", 0, "sysfs", "0000:01:00.0")
AMD_SYSFS = GPUInfo(1, "AMD", "AMD GPU [1002:66a1]", gib(16), "sysfs", "0000:02:00.0")


def test_sysfs_nvidia_and_amd(two_cards: Path) -> None:
    assert detect_gpus(sys_root=two_cards, use_nvml=False) == (NVIDIA_SYSFS, AMD_SYSFS)
    assert no_gpu_reason(sys_root=two_cards, use_nvml=False) is None


def test_no_driver_falls_back_to_sysfs(two_cards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_nvml(monkeypatch, [], init_error=12)  # NVML_ERROR_LIBRARY_NOT_FOUND
    assert detect_gpus(sys_root=two_cards) == (NVIDIA_SYSFS, AMD_SYSFS)
    assert calls == ["init"]


def test_pynvml_not_installed(two_cards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert detect_gpus(sys_root=two_cards) == (NVIDIA_SYSFS, AMD_SYSFS)
    assert no_gpu_reason(sys_root=two_cards / "nothing") == (
        f"no GPU detected (nvidia-ml-py is not installed; no {two_cards}/nothing/class/drm)"
    )


def test_nvml_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_nvml(
        monkeypatch,
        [(b"NVIDIA H100 80GB HBM3", gib(80), b"00000000:1A:00.0"), ("NVIDIA L4", gib(24), "")],
    )
    assert detect_gpus(sys_root=tmp_path) == (
        GPUInfo(0, "NVIDIA", "NVIDIA H100 80GB HBM3", gib(80), "nvml", "0000:1a:00.0"),
        GPUInfo(1, "NVIDIA", "NVIDIA L4", gib(24), "nvml", ""),
    )
    assert calls == ["init", "shutdown"]


def test_nvml_answers_for_nvidia_and_sysfs_adds_the_rest(
    two_cards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(monkeypatch, [("NVIDIA H100", gib(80), "00000000:01:00.0")])
    assert detect_gpus(sys_root=two_cards) == (
        GPUInfo(0, "NVIDIA", "NVIDIA H100", gib(80), "nvml", "0000:01:00.0"),
        AMD_SYSFS,
    )


def test_a_failing_gpu_sends_all_to_sysfs(two_cards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_nvml(monkeypatch, [("A", 1, ""), ("B", 1, "")], fail_on=1)
    assert detect_gpus(sys_root=two_cards) == (NVIDIA_SYSFS, AMD_SYSFS)
    assert calls == ["init", "shutdown"]


@pytest.mark.parametrize(
    ("init_error", "note"),
    [
        (12, "no NVIDIA driver"),
        (9, "NVIDIA driver not loaded"),
        (999, "NVML failed: NVML error 999"),
    ],
)
def test_reason_names_the_nvml_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, init_error: int, note: str
) -> None:
    fake_nvml(monkeypatch, [], init_error=init_error)
    (tmp_path / "class" / "drm").mkdir(parents=True)
    assert detect_gpus(sys_root=tmp_path) == ()
    assert no_gpu_reason(sys_root=tmp_path) == (
        f"no GPU detected ({note}; no GPU in {tmp_path}/class/drm)"
    )


def test_nvml_with_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml(monkeypatch, [])
    assert no_gpu_reason(sys_root=tmp_path) == (
        f"no GPU detected (the NVIDIA driver reports no GPU; no {tmp_path}/class/drm)"
    )


def test_empty_sysfs_without_nvml(tmp_path: Path) -> None:
    assert detect_gpus(sys_root=tmp_path, use_nvml=False) == ()
    assert no_gpu_reason(sys_root=tmp_path, use_nvml=False) == (
        f"no GPU detected (NVML not used; no {tmp_path}/class/drm)"
    )


def test_cards_sorted_by_number_and_other_vendors_named(tmp_path: Path) -> None:
    card(tmp_path, "card10", "0x8086", "0x56a0", product="Arc A770")
    card(tmp_path, "card2", "0x1a03", "0x2000")
    card(tmp_path, "card3", "0xabcd", "0x0001")
    got = detect_gpus(sys_root=tmp_path, use_nvml=False)
    assert [(g.index, g.vendor, g.model) for g in got] == [
        (0, "ASPEED", "ASPEED GPU [1a03:2000]"),
        (1, "0xabcd", "0xabcd GPU [abcd:0001]"),
        (2, "Intel", "Arc A770"),
    ]


def test_bus_id_from_the_device_link(tmp_path: Path) -> None:
    pci = tmp_path / "devices" / "pci0000:00" / "0000:03:00.0"
    pci.mkdir(parents=True)
    (pci / "vendor").write_text("0x1002\n")
    (pci / "class").write_text("0x030000\n")
    (pci / "device").write_text("0x744c\n")
    (pci / "mem_info_vram_total").write_text("garbage\n")
    drm = tmp_path / "class" / "drm" / "card0"
    drm.mkdir(parents=True)
    (drm / "device").symlink_to(pci)
    assert detect_gpus(sys_root=tmp_path, use_nvml=False) == (
        GPUInfo(0, "AMD", "AMD GPU [1002:744c]", 0, "sysfs", "0000:03:00.0"),
    )


def test_real_machine_does_not_raise() -> None:
    gpus = detect_gpus()
    assert all(g.index == i for i, g in enumerate(gpus))
    reason = no_gpu_reason()
    assert (reason is None) == bool(gpus)
    if reason is not None:
        assert reason.startswith("no GPU detected (")
