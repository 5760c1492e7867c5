"""Onboarding over the real rocksdict Store and Singleton: the state survives a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from nunet.db.repository import Singleton
from nunet.db.store import Store
from nunet.errors import AlreadyOnboarded, NotOnboarded, StoreError
from nunet.node.gpu import GPUInfo
from nunet.node.machine import CPUInfo, DiskInfo, MachineInfo
from nunet.node.onboarding import (
    Capacity,
    GPUCapacity,
    Location,
    Onboarding,
    OnboardingState,
    Status,
)
from nunet.node.resources import GPU, Resources, gib

MACHINE = MachineInfo(
    cpu=CPUInfo("Test CPU", "AMD", "x86_64", 4, 8, 3000.0, 3500.0, 1 << 25),
    ram_bytes=gib(32),
    disk=DiskInfo("/data", gib(500), gib(200)),
    gpus=(GPUInfo(0, "NVIDIA", "L4", gib(24), "nvml", "0000:01:00.0"),),
    os="Test OS",
    kernel="6.1",
    hostname="box",
)
HERE = Location(city="Porto", country="PT", continent="Europe")


def onboarding(store: Store, now: float = 100.0) -> Onboarding:
    state = Singleton(store, "onboarding", OnboardingState)
    return Onboarding(state, lambda: MACHINE, HERE, clock=lambda: now)


def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Store.open(path) as store:
        ob = onboarding(store)
        meta = ob.onboard(Capacity(cpu=2.5, ram=8, disk=100, gpus=(GPUCapacity(0, 12),)))
        ob.allocate(Resources(cpu_cores=1, ram_bytes=gib(2)))
    onboarded = Resources(
        cpu_cores=2.5,
        ram_bytes=gib(8),
        disk_bytes=gib(100),
        gpus=(GPU(0, "NVIDIA", "L4", gib(12)),),
    )
    assert meta.onboarded == onboarded

    store = Store.open(path)
    try:
        ob = onboarding(store, now=200.0)
        assert ob.status() == Status(
            True,
            onboarded,
            onboarded - Resources(cpu_cores=1, ram_bytes=gib(2)),
            Resources(cpu_cores=1, ram_bytes=gib(2)),
        )
        assert ob.metadata() == meta
        with pytest.raises(AlreadyOnboarded):
            ob.onboard(Capacity(cpu=1, ram=4, disk=10))
        ob.release(Resources(cpu_cores=1, ram_bytes=gib(2)))
        ob.resource_config(Capacity(cpu=4, ram=16, disk=150, no_gpu=True))
    finally:
        store.close()

    with Store.open(path) as store:
        ob = onboarding(store, now=300.0)
        meta = ob.metadata()
        assert meta.onboarded == Resources(cpu_cores=4, ram_bytes=gib(16), disk_bytes=gib(150))
        assert (meta.onboarded_at, meta.updated_at) == (100.0, 200.0)
        ob.offboard()

    with Store.open(path) as store:
        ob = onboarding(store)
        assert ob.status() == Status(False, None, None, None)
        with pytest.raises(NotOnboarded):
            ob.metadata()


def test_force_offboard_clears_a_record_that_does_not_decode(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        store.put(b"onboarding", b"\xc1 not msgpack")
        ob = onboarding(store)
        with pytest.raises(StoreError):
            ob.status()
        ob.offboard(force=True)
        assert ob.status() == Status(False, None, None, None)
        assert store.get(b"onboarding") is None
