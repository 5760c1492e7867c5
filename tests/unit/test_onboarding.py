from __future__ import annotations

import math
import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nunet.errors import (
    AlreadyOnboarded,
    CapacityError,
    NotOnboarded,
    OnboardingError,
    StoreError,
    ValidationError,
)
from nunet.node.gpu import GPUInfo
from nunet.node.machine import CPUInfo, DiskInfo, MachineInfo
from nunet.node.onboarding import (
    Capacity,
    GPUCapacity,
    Location,
    Metadata,
    Onboarding,
    OnboardingState,
    Status,
    validate_capacity,
)
from nunet.node.resources import GPU, Resources, gib


class FakeState:
    """In-memory StateStore that, like the real one, hands back decoded copies."""

    def __init__(self) -> None:
        self.raw: bytes | None = None
        self.writes = 0
        self.broken = False

    def get(self) -> OnboardingState | None:
        if self.broken:
            raise StoreError("record 'onboarding' does not decode")
        if self.raw is None:
            return None
        return msgspec.msgpack.decode(self.raw, type=OnboardingState)

    def set(self, obj: OnboardingState, *, sync: bool = True) -> None:
        self.raw = msgspec.msgpack.encode(obj)
        self.writes += 1

    def clear(self) -> None:
        self.raw = None
        self.broken = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


H100 = GPUInfo(0, "NVIDIA", "H100", gib(24), "nvml", "0000:01:00.0")
MI = GPUInfo(1, "AMD", "MI50", gib(16), "sysfs", "0000:02:00.0")
IGPU = GPUInfo(2, "Intel", "UHD", 0, "sysfs", "0000:00:02.0")


def machine(
    *, threads: int = 8, ram: int = gib(20), free: int = gib(100), gpus: tuple[GPUInfo, ...] = ()
) -> MachineInfo:
    return MachineInfo(
        cpu=CPUInfo("Test CPU", "AMD", "x86_64", threads // 2, threads, 3000.0, 3500.0, 1 << 25),
        ram_bytes=ram,
        disk=DiskInfo("/data", gib(500), free),
        gpus=gpus,
        os="Test OS",
        kernel="6.1",
        hostname="box",
    )


HERE = Location(city="Lisbon", country="PT", continent="Europe")


def make(m: MachineInfo | None = None) -> tuple[Onboarding, FakeState, Clock]:
    state, clock = FakeState(), Clock()
    mi = m or machine(gpus=(H100, MI, IGPU))
    return Onboarding(state, lambda: mi, HERE, clock=clock), state, clock


def cap(cpu: float = 2, ram: float = 4, disk: float = 50, **kw: object) -> Capacity:
    return Capacity(cpu=cpu, ram=ram, disk=disk, **kw)  # type: ignore[arg-type]


def reject(capacity: Capacity, m: MachineInfo | None = None) -> CapacityError:
    ob, state, _ = make(m)
    with pytest.raises(CapacityError) as err:
        ob.onboard(capacity)
    assert state.raw is None, "a rejected capacity must not onboard"
    return err.value


def accept(capacity: Capacity, m: MachineInfo | None = None) -> Resources:
    ob, _, _ = make(m)
    return ob.onboard(capacity).onboarded


# --- onboard ------------------------------------------------------------------------------------


def test_onboard_happy_path() -> None:
    ob, state, clock = make()
    meta = ob.onboard(cap(cpu=2, ram=4, disk=50, gpus=(GPUCapacity(0, 8),)))
    expected = Resources(
        cpu_cores=2, ram_bytes=gib(4), disk_bytes=gib(50), gpus=(GPU(0, "NVIDIA", "H100", gib(8)),)
    )
    assert meta == Metadata(
        onboarded=expected,
        machine=machine(gpus=(H100, MI, IGPU)),
        location=HERE,
        onboarded_at=1000.0,
        updated_at=1000.0,
    )
    assert state.get() == OnboardingState(True, expected, Resources(), 1000.0, 1000.0)
    clock.now = 2000.0
    assert ob.metadata() == meta
    assert ob.onboarded_resources() == expected
    assert ob.free_resources() == expected
    assert ob.allocated_resources() == Resources()


def test_status_before_and_after() -> None:
    ob, _, _ = make()
    assert ob.status() == Status(False, None, None, None)
    ob.onboard(cap())
    onboarded = Resources(cpu_cores=2, ram_bytes=gib(4), disk_bytes=gib(50))
    assert ob.status() == Status(True, onboarded, onboarded, Resources())
    ob.allocate(Resources(cpu_cores=0.5, ram_bytes=gib(1)))
    st_ = ob.status()
    assert st_.free == Resources(cpu_cores=1.5, ram_bytes=gib(3), disk_bytes=gib(50))
    assert st_.allocated == Resources(cpu_cores=0.5, ram_bytes=gib(1))
    ob.offboard(force=True)
    assert ob.status() == Status(False, None, None, None)


def test_already_onboarded() -> None:
    ob, state, _ = make()
    ob.onboard(cap())
    before = state.raw
    with pytest.raises(AlreadyOnboarded) as err:
        ob.onboard(cap(cpu=3))
    assert "nunet onboard --update" in err.value.message
    assert state.raw == before


def test_not_onboarded_calls() -> None:
    ob, _, _ = make()
    for call in (ob.metadata, ob.offboard, lambda: ob.resource_config(cap())):
        with pytest.raises(NotOnboarded):
            call()
    with pytest.raises(NotOnboarded):
        ob.allocate(Resources(cpu_cores=1))
    with pytest.raises(NotOnboarded):
        ob.release(Resources(cpu_cores=1))
    assert ob.onboarded_resources() == Resources()
    assert ob.free_resources() == Resources()
    assert ob.allocated_resources() == Resources()


def test_stored_state_with_onboarded_false_counts_as_not_onboarded() -> None:
    ob, state, _ = make()
    state.set(OnboardingState(False, Resources(cpu_cores=1), Resources(), 1.0, 1.0))
    assert not ob.status().onboarded
    ob.onboard(cap())
    assert ob.status().onboarded


# --- cpu ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cpu", [1, 1.5, 2.25, 7.999, 8])
def test_cpu_within_range(cpu: float) -> None:
    assert accept(cap(cpu=cpu)).cpu_cores == cpu


@pytest.mark.parametrize("cpu", [0.999, 0, -1, 8.001, 9])
def test_cpu_out_of_range(cpu: float) -> None:
    err = reject(cap(cpu=cpu))
    assert err.path == "cpu"
    assert "(allowed 1..8 cores)" in err.message


def test_cpu_message_names_the_machine() -> None:
    assert str(reject(cap(cpu=9))) == (
        "cpu: 9 cores is more than this machine's 8 logical cores (allowed 1..8 cores)"
    )


# --- ram ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ram", [2, 2.0001, 10, 17.9999, 18])
def test_ram_within_10_to_90_percent(ram: float) -> None:
    assert accept(cap(ram=ram)).ram_bytes == gib(ram)


@pytest.mark.parametrize(("ram", "word"), [(1.999, "less than 10%"), (18.001, "more than 90%")])
def test_ram_out_of_range(ram: float, word: str) -> None:
    err = reject(cap(ram=ram))
    assert err.path == "ram"
    assert word in err.message
    assert "(allowed 2..18 GiB)" in err.message


def test_ram_message_example() -> None:
    err = reject(cap(ram=30), machine(ram=gib(23.4)))
    assert str(err) == (
        "ram: 30 GiB is more than 90% of this machine's 23.4 GiB (allowed 2.34..21.06 GiB)"
    )
    # the bounds shown are themselves allowed
    assert accept(cap(ram=2.34), machine(ram=gib(23.4))).ram_bytes == gib(2.34)
    assert accept(cap(ram=21.06), machine(ram=gib(23.4))).ram_bytes == gib(21.06)


@given(st.integers(gib(1.2), 1 << 42))
def test_displayed_ram_bounds_are_accepted(ram_bytes: int) -> None:
    m = machine(ram=ram_bytes)
    err = reject(cap(ram=0.5), m) if ram_bytes > gib(5) else reject(cap(ram=1e6), m)
    match = re.search(r"allowed ([\d.]+)\.\.([\d.]+) GiB", err.message)
    assert match is not None
    low, high = float(match[1]), float(match[2])
    assert low <= high
    accept(cap(ram=low), m)
    accept(cap(ram=high), m)


def test_unknown_machine_ram_cannot_be_onboarded() -> None:
    err = reject(cap(), machine(ram=0))
    assert err.path == "ram"
    assert "unknown" in err.message


# --- disk ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("disk", [0.001, 1, 100])
def test_disk_up_to_free_space(disk: float) -> None:
    assert accept(cap(disk=disk)).disk_bytes == gib(disk)


@pytest.mark.parametrize(("disk", "word"), [(0, "not more than 0"), (100.001, "more than the")])
def test_disk_out_of_range(disk: float, word: str) -> None:
    err = reject(cap(disk=disk))
    assert err.path == "disk"
    assert word in err.message
    assert "up to 100 GiB" in err.message


def test_disk_message_names_the_filesystem() -> None:
    assert "100 GiB free on /data" in reject(cap(disk=101)).message


# --- non-numbers and several errors -------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["cpu", "ram", "disk"])
def test_nan_and_inf_rejected(field: str, bad: float) -> None:
    err = reject(cap(**{field: bad}))
    assert err.path == field
    assert "finite" in err.message


@pytest.mark.parametrize("field", ["cpu", "ram", "disk"])
def test_negative_rejected(field: str) -> None:
    assert reject(cap(**{field: -1})).path == field


def test_all_problems_reported_at_once() -> None:
    err = reject(cap(cpu=0, ram=100, disk=0, gpus=(GPUCapacity(5, 1),)))
    assert isinstance(err, ValidationError)
    assert err.code == "capacity_error"
    assert err.path == "cpu"
    text = str(err)
    assert text.startswith("cpu: 0 cores is less than 1")
    for part in ("; ram: 100 GiB is more than 90%", "; disk: 0 GiB", "; gpus[0].index: no GPU 5"):
        assert part in text
    assert err.to_dict()["field"] == "cpu"


# --- gpus ---------------------------------------------------------------------------------------


def test_no_gpu_selected_onboards_none() -> None:
    assert accept(cap()).gpus == ()
    assert accept(cap(no_gpu=True)).gpus == ()


def test_gpus_selected_are_onboarded_sorted_with_machine_names() -> None:
    got = accept(cap(gpus=(GPUCapacity(1, 4), GPUCapacity(0, 2.4))))
    assert got.gpus == (GPU(0, "NVIDIA", "H100", gib(2.4)), GPU(1, "AMD", "MI50", gib(4)))


@pytest.mark.parametrize("vram", [2.4, 21.6])
def test_gpu_vram_boundaries_pass(vram: float) -> None:
    assert accept(cap(gpus=(GPUCapacity(0, vram),))).gpus[0].vram_bytes == gib(vram)


@pytest.mark.parametrize("vram", [2.39, 21.61, 0, -1, math.nan])
def test_gpu_vram_out_of_range(vram: float) -> None:
    err = reject(cap(gpus=(GPUCapacity(1, 4), GPUCapacity(0, vram))))
    assert err.path == "gpus[1].vram_gib"


def test_gpu_vram_message() -> None:
    err = reject(cap(gpus=(GPUCapacity(0, 22),)))
    assert str(err) == (
        "gpus[0].vram_gib: 22 GiB is more than 90% of GPU 0 (H100)'s 24 GiB VRAM "
        "(allowed 2.4..21.6 GiB)"
    )


def test_gpu_index_must_exist() -> None:
    err = reject(cap(gpus=(GPUCapacity(7, 4),)))
    assert err.path == "gpus[0].index"
    assert err.message == "no GPU 7 on this machine (GPUs: 0, 1, 2)"
    err = reject(cap(gpus=(GPUCapacity(0, 4),)), machine())
    assert err.message == "no GPU 0 on this machine (GPUs: none)"


def test_gpu_selected_twice() -> None:
    err = reject(cap(gpus=(GPUCapacity(0, 4), GPUCapacity(0, 3))))
    assert err.path == "gpus[1].index"
    assert "twice" in err.message


def test_gpu_with_unknown_vram_cannot_be_onboarded() -> None:
    err = reject(cap(gpus=(GPUCapacity(2, 1),)))
    assert err.path == "gpus[0].vram_gib"
    assert "VRAM size is unknown" in err.message


def test_no_gpu_with_gpus_is_a_validation_error() -> None:
    err = reject(cap(no_gpu=True, gpus=(GPUCapacity(0, 4),)))
    assert isinstance(err, ValidationError)
    assert err.path == "no_gpu"


def test_validate_capacity_alone() -> None:
    m = machine(gpus=(H100,))
    got = validate_capacity(cap(cpu=1.2345, gpus=(GPUCapacity(0, 3),)), m)
    assert got.cpu_cores == round(1.2345, 3)
    assert validate_capacity(cap(disk=150), m, disk_ceiling=gib(150)).disk_bytes == gib(150)
    with pytest.raises(CapacityError):
        validate_capacity(cap(disk=150), m)


# --- resource_config ----------------------------------------------------------------------------


def test_resource_config_changes_capacity() -> None:
    ob, state, clock = make()
    ob.onboard(cap())
    clock.now = 1500.0
    meta = ob.resource_config(cap(cpu=4, ram=8, disk=20, gpus=(GPUCapacity(1, 8),)))
    assert meta.onboarded == Resources(
        cpu_cores=4, ram_bytes=gib(8), disk_bytes=gib(20), gpus=(GPU(1, "AMD", "MI50", gib(8)),)
    )
    assert (meta.onboarded_at, meta.updated_at) == (1000.0, 1500.0)
    assert ob.onboarded_resources() == meta.onboarded
    got = state.get()
    assert got is not None
    assert got.capacity == meta.onboarded


def test_resource_config_validates_the_rules() -> None:
    ob, _, _ = make()
    ob.onboard(cap())
    with pytest.raises(CapacityError) as err:
        ob.resource_config(cap(ram=19))
    assert err.value.path == "ram"
    assert ob.onboarded_resources().ram_bytes == gib(4)


def test_resource_config_must_hold_what_is_allocated() -> None:
    ob, _, _ = make()
    ob.onboard(cap(cpu=4, ram=8, disk=50, gpus=(GPUCapacity(0, 8), GPUCapacity(1, 4))))
    ob.allocate(
        Resources(
            cpu_cores=3,
            ram_bytes=gib(6),
            disk_bytes=gib(30),
            gpus=(GPU(0, "NVIDIA", "H100", gib(5)), GPU(1, "AMD", "MI50", gib(2))),
        )
    )
    ob.resource_config(cap(cpu=3, ram=6, disk=30, gpus=(GPUCapacity(1, 2), GPUCapacity(0, 5))))
    with pytest.raises(CapacityError) as err:
        ob.resource_config(cap(cpu=2.5, ram=5, disk=20, gpus=(GPUCapacity(0, 4),)))
    assert err.value.path == "cpu"
    text = str(err.value)
    assert "cpu: 2.5 cores is less than the 3 allocated" in text
    assert "ram: 5 GiB is less than the 6 GiB allocated" in text
    assert "disk: 20 GiB is less than the 30 GiB allocated" in text
    assert "gpus[0].vram_gib: 4 GiB is less than the 5 GiB of GPU 0's VRAM allocated" in text
    assert "gpus: GPU 1 has 2 GiB VRAM allocated" in text
    assert ob.onboarded_resources().cpu_cores == 3


def test_resource_config_disk_may_include_allocated_disk() -> None:
    ob, _, _ = make()  # 100 GiB free
    ob.onboard(cap(disk=100))
    ob.allocate(Resources(disk_bytes=gib(30)))
    assert ob.resource_config(cap(disk=130)).onboarded.disk_bytes == gib(130)
    with pytest.raises(CapacityError) as err:
        ob.resource_config(cap(disk=130.01))
    assert err.value.path == "disk"


# --- offboard -----------------------------------------------------------------------------------


def test_offboard() -> None:
    ob, state, _ = make()
    ob.onboard(cap())
    ob.offboard()
    assert state.raw is None
    assert not ob.status().onboarded
    with pytest.raises(NotOnboarded):
        ob.offboard()
    ob.onboard(cap())  # can onboard again
    assert ob.status().onboarded


def test_force_offboard_when_not_onboarded_clears_leftovers() -> None:
    ob, state, _ = make()
    ob.offboard(force=True)  # nothing at all: still fine
    state.set(OnboardingState(False, Resources(cpu_cores=1), Resources(), 1.0, 1.0))
    ob.offboard(force=True)
    assert state.raw is None


def test_force_offboard_clears_unreadable_state() -> None:
    ob, state, _ = make()
    ob.onboard(cap())
    state.broken = True
    with pytest.raises(StoreError):
        ob.offboard()
    ob.offboard(force=True)
    assert state.raw is None
    assert ob.status() == Status(False, None, None, None)


def test_offboard_refused_while_allocated_unless_forced() -> None:
    ob, state, _ = make()
    ob.onboard(cap())
    ob.allocate(Resources(cpu_cores=1, ram_bytes=gib(1)))
    with pytest.raises(OnboardingError) as err:
        ob.offboard()
    assert not isinstance(err.value, NotOnboarded)
    assert "1 cores, 1 GiB RAM" in err.value.message
    assert "force" in err.value.message
    assert ob.status().onboarded
    ob.release(Resources(cpu_cores=1, ram_bytes=gib(1)))
    ob.allocate(Resources(cpu_cores=1))
    ob.offboard(force=True)
    assert state.raw is None


# --- allocate / release -------------------------------------------------------------------------


def test_allocate_release_arithmetic_and_persistence() -> None:
    ob, state, _ = make()
    ob.onboard(cap(cpu=2, ram=4, disk=50, gpus=(GPUCapacity(0, 8),)))
    writes = state.writes
    gpu = GPU(0, "NVIDIA", "H100", gib(3))
    ob.allocate(Resources(cpu_cores=0.1, ram_bytes=gib(1), gpus=(gpu,)))
    ob.allocate(Resources(cpu_cores=0.2, disk_bytes=gib(10)))
    assert state.writes == writes + 2
    assert ob.allocated_resources() == Resources(
        cpu_cores=0.3, ram_bytes=gib(1), disk_bytes=gib(10), gpus=(gpu,)
    )
    assert ob.free_resources() == Resources(
        cpu_cores=1.7,
        ram_bytes=gib(3),
        disk_bytes=gib(40),
        gpus=(GPU(0, "NVIDIA", "H100", gib(5)),),
    )
    got = state.get()
    assert got is not None
    assert got.allocated == ob.allocated_resources()
    ob.release(Resources(cpu_cores=0.1, ram_bytes=gib(1), gpus=(gpu,)))
    ob.release(Resources(cpu_cores=0.2, disk_bytes=gib(10)))
    assert ob.allocated_resources().is_zero()
    assert ob.free_resources() == ob.onboarded_resources()
    assert state.writes == writes + 4


def test_allocate_exactly_everything_then_nothing_more() -> None:
    ob, _, _ = make()
    ob.onboard(cap(gpus=(GPUCapacity(0, 8),)))
    ob.allocate(ob.onboarded_resources())
    assert ob.free_resources() == Resources()
    with pytest.raises(CapacityError) as err:
        ob.allocate(Resources(cpu_cores=0.001))
    assert err.value.path == "cpu_cores"
    with pytest.raises(CapacityError) as err:
        ob.allocate(Resources(gpus=(GPU(0, "NVIDIA", "H100", 1),)))
    assert err.value.path == "gpus[0].index"


@pytest.mark.parametrize(
    ("request_", "path"),
    [
        (Resources(cpu_cores=2.001), "cpu_cores"),
        (Resources(ram_bytes=gib(4) + 1), "ram_bytes"),
        (Resources(disk_bytes=gib(51)), "disk_bytes"),
        (Resources(gpus=(GPU(1, "AMD", "MI50", 1),)), "gpus[0].index"),
        (Resources(gpus=(GPU(0, "NVIDIA", "H100", gib(8) + 1),)), "gpus[0].vram_bytes"),
    ],
)
def test_allocate_beyond_free_fails_and_changes_nothing(request_: Resources, path: str) -> None:
    ob, state, _ = make()
    ob.onboard(cap(gpus=(GPUCapacity(0, 8),)))
    before = state.raw
    with pytest.raises(CapacityError) as err:
        ob.allocate(request_)
    assert err.value.path == path
    assert err.value.message.startswith("not enough free: ")
    assert state.raw == before


def test_release_more_than_allocated_fails_and_changes_nothing() -> None:
    ob, state, _ = make()
    ob.onboard(cap())
    ob.allocate(Resources(ram_bytes=gib(1)))
    before = state.raw
    with pytest.raises(ValidationError) as err:
        ob.release(Resources(ram_bytes=gib(2)))
    assert err.value.path == "ram_bytes"
    assert state.raw == before


# --- wire ---------------------------------------------------------------------------------------


def test_capacity_decodes_from_json() -> None:
    body = b'{"cpu": 2, "ram": 4.5, "disk": 10, "gpus": [{"index": 0, "vram_gib": 8}]}'
    got = msgspec.json.decode(body, type=Capacity)
    assert got == Capacity(cpu=2, ram=4.5, disk=10, gpus=(GPUCapacity(0, 8),))
    assert accept(got).gpus[0].vram_bytes == gib(8)


@pytest.mark.parametrize(
    "body",
    [
        b'{"cpu": 2, "ram": 4, "disk": 10, "no-gpu": true}',
        b'{"cpu": 2, "ram": 4, "disk": 10, "gpus": [{"index": 0, "vram": 8}]}',
    ],
)
def test_capacity_refuses_unknown_fields(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(body, type=Capacity)


def test_metadata_and_status_encode() -> None:
    ob, _, _ = make()
    meta = ob.onboard(cap())
    assert msgspec.json.decode(msgspec.json.encode(meta), type=Metadata) == meta
    status = ob.status()
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(status), type=Status) == status
