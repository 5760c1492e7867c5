"""Onboarding: offering part of this machine to the network (DMS Onboard, GetMetadata, Status,
ResourceConfig, Offboard), plus the allocation bookkeeping the jobs code uses.

Invariants:
- The state lives in one `StateStore` (in the node: the db `Singleton` at key "onboarding"); it is
  written after every change and re-read on every call, so nothing here can go stale.
- Durability: onboard, resource_config and offboard are fsynced before they return (the API
  answers from them). `allocate`/`release` are not (`sync=False`: in the WAL, so a killed process
  keeps them; fsynced by the store's group commit): they run for every allocation, and the jobs
  code's records are the truth that `ProviderService.reconcile` resets `allocated` to at start.
- Not onboarded means "no state stored" (or a stored state with `onboarded=False`).
- `allocated` always fits in `capacity`: `allocate` checks against the free amount,
  `resource_config` refuses a capacity that no longer holds what is allocated.

Capacity rules (each failure is a CapacityError naming the field and the allowed range, and all of
them are reported at once; `path` is the first bad field):
- cpu: 1 .. the machine's logical cores, fractions allowed;
- ram: 10% .. 90% of the machine's RAM;
- disk: more than 0 and at most the free space of the work dir's filesystem (on `resource_config`,
  plus the disk already allocated, which our own jobs may be using);
- gpus: each index must exist on the machine, at most once, with 10% .. 90% of that GPU's VRAM
  (a GPU whose VRAM size is unknown cannot be onboarded); `no_gpu=True` with GPUs selected is an
  error; no GPU selected means no GPU onboarded;
- NaN, infinities and negative numbers are rejected.
Percent bounds allow one byte of slack because GiB figures are rounded to whole bytes.

Calls are not thread-safe: the node drives one instance from one task.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec

from nunet.errors import AlreadyOnboarded, CapacityError, NotOnboarded, OnboardingError
from nunet.node.machine import MachineInfo
from nunet.node.resources import GIB, GPU, Resources, format_gib, gib

T = TypeVar("T")
_Problems = list[tuple[str, str]]


class StateStore(Protocol[T]):
    """Where one value lives; `nunet.db.repository.Singleton` is the real one."""

    def get(self) -> T | None: ...

    def set(self, obj: T, /, *, sync: bool = True) -> None: ...

    def clear(self) -> None: ...


class GPUCapacity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    index: int
    vram_gib: float


class Capacity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a provider offers; GiB for RAM, disk and VRAM. Unknown fields (typos) are refused."""

    cpu: float
    ram: float
    disk: float
    gpus: tuple[GPUCapacity, ...] = ()
    no_gpu: bool = False


class Location(msgspec.Struct, frozen=True):
    city: str = ""
    country: str = ""
    continent: str = ""


class OnboardingState(msgspec.Struct, frozen=True):
    onboarded: bool
    capacity: Resources
    allocated: Resources
    onboarded_at: float
    updated_at: float  # last change of the capacity (allocations do not touch it)


class Metadata(msgspec.Struct, frozen=True):
    onboarded: Resources
    machine: MachineInfo
    location: Location
    onboarded_at: float
    updated_at: float


class Status(msgspec.Struct, frozen=True):
    onboarded: bool
    onboarded_resources: Resources | None
    free: Resources | None
    allocated: Resources | None


class Onboarding:
    def __init__(
        self,
        state: StateStore[OnboardingState],
        machine: Callable[[], MachineInfo],
        location: Location,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._machine = machine
        self.location = location
        self._clock = clock

    # --- the DMS onboarding API -----------------------------------------------------------------

    def onboard(self, capacity: Capacity) -> Metadata:
        if self._load() is not None:
            raise AlreadyOnboarded(
                "already onboarded; change the capacity with ResourceConfig "
                "(`nunet onboard --update`)"
            )
        machine = self._machine()
        resources = validate_capacity(capacity, machine)
        now = self._clock()
        state = OnboardingState(True, resources, Resources(), onboarded_at=now, updated_at=now)
        self._state.set(state)
        return self._metadata(state, machine)

    def resource_config(self, capacity: Capacity) -> Metadata:
        """Change the onboarded capacity; it must still hold what is allocated."""
        state = self._require()
        machine = self._machine()
        ceiling = machine.disk.free_bytes + state.allocated.disk_bytes
        resources = validate_capacity(capacity, machine, disk_ceiling=ceiling)
        _raise_any(_allocated_problems(capacity, resources, state.allocated))
        state = msgspec.structs.replace(state, capacity=resources, updated_at=self._clock())
        self._state.set(state)
        return self._metadata(state, machine)

    def metadata(self) -> Metadata:
        return self._metadata(self._require(), self._machine())

    def status(self) -> Status:
        state = self._load()
        if state is None:
            return Status(False, None, None, None)
        return Status(True, state.capacity, state.capacity - state.allocated, state.allocated)

    def offboard(self, force: bool = False) -> None:
        """Stop offering resources.

        Without `force`: NotOnboarded when not onboarded, OnboardingError while anything is
        allocated. With `force`: always succeeds and clears whatever state is stored, even state
        that cannot be read; allocations it drops are the jobs code's to clean up.
        """
        if force:
            self._state.clear()  # without reading: unreadable leftovers are cleared too
            return
        state = self._require()
        if not state.allocated.is_zero():
            raise OnboardingError(
                f"resources are allocated ({_describe(state.allocated)}); "
                "release them first or offboard with force"
            )
        self._state.clear()

    # --- resources --------------------------------------------------------------------------------

    def onboarded_resources(self) -> Resources:
        """The onboarded capacity; zero Resources when not onboarded (as for the two below)."""
        state = self._load()
        return state.capacity if state else Resources()

    def free_resources(self) -> Resources:
        state = self._load()
        return state.capacity - state.allocated if state else Resources()

    def allocated_resources(self) -> Resources:
        state = self._load()
        return state.allocated if state else Resources()

    def allocate(self, r: Resources) -> None:
        """Reserve `r`; CapacityError (path of the first short field) when free does not hold it."""
        state = self._require()
        free = state.capacity - state.allocated
        if short := free.shortfalls(r):
            path, message = short[0]
            raise CapacityError(f"not enough free: {message}", path=path)
        self._state.set(msgspec.structs.replace(state, allocated=state.allocated + r), sync=False)

    def release(self, r: Resources) -> None:
        """Give back `r`; ValidationError when more than is allocated (nothing changes then)."""
        state = self._require()
        self._state.set(msgspec.structs.replace(state, allocated=state.allocated - r), sync=False)

    # --- internals --------------------------------------------------------------------------------

    def _load(self) -> OnboardingState | None:
        state = self._state.get()
        return state if state is not None and state.onboarded else None

    def _require(self) -> OnboardingState:
        state = self._load()
        if state is None:
            raise NotOnboarded("this node is not onboarded")
        return state

    def _metadata(self, state: OnboardingState, machine: MachineInfo) -> Metadata:
        return Metadata(
            onboarded=state.capacity,
            machine=machine,
            location=self.location,
            onboarded_at=state.onboarded_at,
            updated_at=state.updated_at,
        )


def validate_capacity(
    capacity: Capacity, machine: MachineInfo, *, disk_ceiling: int | None = None
) -> Resources:
    """The Resources `capacity` stands for on `machine`, or a CapacityError listing every problem.

    `disk_ceiling` (bytes) defaults to the free space of the machine's work dir filesystem.
    """
    problems: _Problems = []
    _check_cpu(capacity.cpu, machine, problems)
    _check_share("ram", capacity.ram, machine.ram_bytes, "this machine's", "RAM", problems)
    ceiling = machine.disk.free_bytes if disk_ceiling is None else disk_ceiling
    _check_disk(capacity.disk, ceiling, machine.disk.path, problems)
    gpus = _check_gpus(capacity, machine, problems)
    _raise_any(problems)
    return Resources(
        cpu_cores=round(capacity.cpu, 3),
        ram_bytes=gib(capacity.ram),
        disk_bytes=gib(capacity.disk),
        gpus=gpus,
    )


def _check_cpu(cpu: float, machine: MachineInfo, problems: _Problems) -> None:
    if not _finite("cpu", cpu, problems):
        return
    threads = machine.cpu.threads
    allowed = f"(allowed 1..{threads} cores)"
    if cpu < 1:
        problems.append(("cpu", f"{cpu:g} cores is less than 1 {allowed}"))
    elif cpu > threads:
        problems.append(
            ("cpu", f"{cpu:g} cores is more than this machine's {threads} logical cores {allowed}")
        )


def _check_share(
    path: str, value: float, total: int, owner: str, kind: str, problems: _Problems
) -> None:
    """`value` GiB must be 10% .. 90% of `total` bytes of `owner`'s RAM or VRAM (`kind`)."""
    if not _finite(path, value, problems):
        return
    if total <= 0:
        problems.append((path, f"{owner} {kind} size is unknown, so it cannot be onboarded"))
        return
    requested = gib(value)
    whole = f"{owner} {format_gib(total)}" + (" VRAM" if kind == "VRAM" else "")
    allowed = f"(allowed {_up(0.1 * total)}..{_down(0.9 * total)} GiB)"
    # requested >= total/10 and requested <= 9*total/10, each with one byte of slack, in integers
    if 10 * requested + 10 < total:
        problems.append((path, f"{value:g} GiB is less than 10% of {whole} {allowed}"))
    elif 10 * requested - 10 > 9 * total:
        problems.append((path, f"{value:g} GiB is more than 90% of {whole} {allowed}"))


def _check_disk(disk: float, ceiling: int, where: str, problems: _Problems) -> None:
    if not _finite("disk", disk, problems):
        return
    requested = gib(disk)
    allowed = f"(allowed more than 0, up to {_down(ceiling)} GiB)"
    if requested <= 0:
        problems.append(("disk", f"{disk:g} GiB is not more than 0 {allowed}"))
    elif requested > ceiling:
        free = f"{format_gib(ceiling)} free on {where}"
        problems.append(("disk", f"{disk:g} GiB is more than the {free} {allowed}"))


def _check_gpus(capacity: Capacity, machine: MachineInfo, problems: _Problems) -> tuple[GPU, ...]:
    if capacity.no_gpu and capacity.gpus:
        problems.append(("no_gpu", f"no_gpu is set but {len(capacity.gpus)} GPU(s) are selected"))
    by_index = {g.index: g for g in machine.gpus}
    present = ", ".join(str(i) for i in by_index) or "none"
    seen: set[int] = set()
    gpus: list[GPU] = []
    for pos, want in enumerate(capacity.gpus):
        path = f"gpus[{pos}]"
        info = by_index.get(want.index)
        if want.index in seen:
            problems.append((f"{path}.index", f"GPU {want.index} is selected twice"))
            continue
        seen.add(want.index)
        if info is None:
            problems.append(
                (f"{path}.index", f"no GPU {want.index} on this machine (GPUs: {present})")
            )
            continue
        before = len(problems)
        owner = f"GPU {want.index} ({info.model})'s"
        _check_share(f"{path}.vram_gib", want.vram_gib, info.vram_bytes, owner, "VRAM", problems)
        if len(problems) == before:
            gpus.append(GPU(want.index, info.vendor, info.model, gib(want.vram_gib)))
    return tuple(sorted(gpus, key=lambda g: g.index))


def _allocated_problems(capacity: Capacity, new: Resources, allocated: Resources) -> _Problems:
    problems: _Problems = []
    if round(new.cpu_cores - allocated.cpu_cores, 3) < 0:
        have = f"{allocated.cpu_cores:g}"
        problems.append(("cpu", f"{capacity.cpu:g} cores is less than the {have} allocated"))
    if new.ram_bytes < allocated.ram_bytes:
        have = format_gib(allocated.ram_bytes)
        problems.append(("ram", f"{capacity.ram:g} GiB is less than the {have} allocated"))
    if new.disk_bytes < allocated.disk_bytes:
        have = format_gib(allocated.disk_bytes)
        problems.append(("disk", f"{capacity.disk:g} GiB is less than the {have} allocated"))
    positions = {g.index: pos for pos, g in enumerate(capacity.gpus)}
    new_vram = {g.index: g.vram_bytes for g in new.gpus}
    for g in allocated.gpus:
        if g.index not in positions:
            problems.append(
                ("gpus", f"GPU {g.index} has {format_gib(g.vram_bytes)} VRAM allocated; keep it")
            )
        elif new_vram[g.index] < g.vram_bytes:
            pos = positions[g.index]
            problems.append(
                (
                    f"gpus[{pos}].vram_gib",
                    f"{capacity.gpus[pos].vram_gib:g} GiB is less than the "
                    f"{format_gib(g.vram_bytes)} of GPU {g.index}'s VRAM allocated",
                )
            )
    return problems


def _finite(path: str, value: float, problems: _Problems) -> bool:
    if isinstance(value, int | float) and math.isfinite(value):
        return True
    problems.append((path, f"must be a finite number, got {value!r}"))
    return False


def _raise_any(problems: _Problems) -> None:
    """One CapacityError for all problems: the first names `path`, the others follow in the text."""
    if problems:
        (path, message), rest = problems[0], problems[1:]
        raise CapacityError(message + "".join(f"; {p}: {m}" for p, m in rest), path=path)


def _describe(r: Resources) -> str:
    parts = [f"{r.cpu_cores:g} cores", format_gib(r.ram_bytes) + " RAM"]
    parts.append(format_gib(r.disk_bytes) + " disk")
    parts += [f"GPU {g.index}: {format_gib(g.vram_bytes)} VRAM" for g in r.gpus]
    return ", ".join(parts)


# Half a byte, in hundredths of a GiB: absorbs float noise, stays inside the one byte of slack.
_HALF_BYTE = 50 / GIB


def _up(n: float) -> str:
    """Bytes as GiB rounded up to 2 decimals, so that the figure shown is itself allowed."""
    return _two(math.ceil(n / GIB * 100 - _HALF_BYTE) / 100)


def _down(n: float) -> str:
    return _two(math.floor(n / GIB * 100 + _HALF_BYTE) / 100)


def _two(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")
