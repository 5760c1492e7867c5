"""Ensemble V1: what a user asks the network to run, in NuNet DMS's field names.

An ensemble names *allocations* (one container each: executor, type, resources, execution,
volumes, health check, failure policy, dependencies) and *nodes* (which allocations share one
provider, its ports, where it may be, which peer it must be). The file is YAML or JSON; the
parser (`nunet/jobs/validate.py`) reports every problem of a file at once, each naming its field
path, and turns the file into these frozen Structs.

Units follow DMS: RAM, disk and VRAM sizes are GiB (a number, or text with a unit such as
"512MiB" or "2GB", converted to GiB on parsing); CPU is cores (fractions allowed: DMS rounds up,
nunet gives a container exactly the fraction). `Ensemble.to_json()` re-parses to an equal
ensemble, and `ensemble_id` hashes that canonical form, so "1GiB" and 1 give the same id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec

from nunet.node.resources import GPU, Resources, gib

EXECUTORS = ("docker", "null")
ALLOCATION_TYPES = ("task", "service")
# DMS's values. Allocation policies: restart / one_for_one restart the failed allocation in
# place; one_for_all restarts every allocation of its node; rest_for_one restarts it and the
# allocations that depend on it.
ALLOCATION_RECOVERY = ("stay_down", "restart", "one_for_one", "one_for_all", "rest_for_one")
NODE_RECOVERY = ("stay_down", "restart", "redeploy")
ESCALATION = ("redeploy", "teardown")
CONTINENTS = (
    "Africa", "Antarctica", "Asia", "Europe", "North America", "Oceania", "South America",
)

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64",
                 "armv8": "arm64"}

Executor = Literal["docker", "null"]
AllocationType = Literal["task", "service"]


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class CPU(_Spec, frozen=True, kw_only=True):
    cores: float
    architecture: str | None = None  # normalised: "x86_64", "arm64", ...


class Size(_Spec, frozen=True, kw_only=True):
    size: float  # GiB

    @property
    def bytes(self) -> int:
        return gib(self.size)


class GPUSpec(_Spec, frozen=True, kw_only=True):
    """One GPU wanted. vendor: "nvidia" | "amd" | "intel" (None = any); model: matched as a
    case-insensitive substring of the provider's model name; vram: GiB at least (None = any)."""

    vendor: str | None = None
    model: str | None = None
    vram: float | None = None


class ResourceSpec(_Spec, frozen=True, kw_only=True):
    cpu: CPU
    ram: Size
    disk: Size
    gpus: tuple[GPUSpec, ...] = ()

    def to_resources(self) -> Resources:
        """As a `Resources`: wanted GPUs get their position as index; an empty vendor/model and
        0 VRAM mean "any"."""
        return Resources(cpu_cores=self.cpu.cores, ram_bytes=self.ram.bytes,
                         disk_bytes=self.disk.bytes, gpus=_wanted_gpus(self.gpus))


def _wanted_gpus(gpus: Iterable[GPUSpec]) -> tuple[GPU, ...]:
    return tuple(
        GPU(index=i, vendor=g.vendor or "", model=g.model or "",
            vram_bytes=gib(g.vram) if g.vram else 0)
        for i, g in enumerate(gpus)
    )


class Execution(_Spec, frozen=True, kw_only=True):
    """What to run. `cmd`/`entrypoint` are exec form; () keeps the image's own."""

    type: Executor
    image: str | None = None
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    environment: tuple[str, ...] = ()  # "KEY=VALUE", keys unique
    working_directory: str | None = None

    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.environment)


class HealthCheckResponse(_Spec, frozen=True, kw_only=True):
    """`type: string`: the check passes when the command's output contains `value`."""

    type: Literal["string"] = "string"
    value: str


class HealthCheck(_Spec, frozen=True, kw_only=True):
    """`type: command`: `exec` runs inside the container; it passes on exit code 0 (and, with a
    `response`, when its output contains the expected text)."""

    type: Literal["command"] = "command"
    exec: tuple[str, ...]
    response: HealthCheckResponse | None = None
    interval: float | None = None  # seconds


class Volume(_Spec, frozen=True, kw_only=True):
    """A directory mounted at `mountpoint`. `local`: created by the provider for the deployment
    (allocations on one node naming the same volume share it; no host path is ever mounted).
    `s3`: `direction: input` downloads `bucket` (`key`: one object, `prefix`: a tree, neither:
    the whole bucket) before the allocation starts; `output` uploads the directory after it
    ends."""

    type: Literal["local", "s3"]
    name: str
    mountpoint: str
    read_only: bool = False
    bucket: str | None = None
    key: str | None = None
    prefix: str | None = None
    endpoint: str | None = None
    region: str | None = None
    direction: Literal["input", "output"] | None = None


class Allocation(_Spec, frozen=True, kw_only=True):
    executor: Executor
    type: AllocationType
    resources: ResourceSpec
    execution: Execution
    dns_name: str | None = None
    healthcheck: HealthCheck | None = None
    volume: tuple[Volume, ...] = ()
    failure_recovery: str = "stay_down"
    depends_on: tuple[str, ...] = ()


class Port(_Spec, frozen=True, kw_only=True):
    public: int  # 0 = any free port the provider picks
    private: int
    allocation: str


class Location(_Spec, frozen=True, kw_only=True):
    """A place: `continent` (one of CONTINENTS), optionally `country` (ISO code) and `city`.
    A provider's location matches when every given part is equal (case-insensitive)."""

    continent: str
    country: str | None = None
    city: str | None = None


class LocationConstraints(_Spec, frozen=True, kw_only=True):
    accept: tuple[Location, ...] = ()  # empty = anywhere
    reject: tuple[Location, ...] = ()


class Node(_Spec, frozen=True, kw_only=True):
    """A group of allocations that must run on one provider. Different nodes run on different
    providers. `redundancy`: that many more providers keep a standby copy."""

    allocations: tuple[str, ...]
    ports: tuple[Port, ...] = ()
    location: LocationConstraints = LocationConstraints()
    peer: str | None = None  # pin: the provider's did:key
    redundancy: int = 0
    failure_recovery: str = "stay_down"


class Edge(_Spec, frozen=True, kw_only=True):
    s: str
    t: str
    rtt: float | None = None  # ms, at most


class Ensemble(_Spec, frozen=True, kw_only=True):
    version: Literal["V1"] = "V1"
    allocations: dict[str, Allocation]
    nodes: dict[str, Node]
    edges: tuple[Edge, ...] = ()
    escalation_strategy: str | None = None
    exclude_peers: tuple[str, ...] = ()
    metadata: dict[str, str | int | float | bool] = {}

    def to_json(self) -> bytes:
        """The canonical form: every field, keys sorted; parses back to an equal value."""
        return msgspec.json.encode(self, order="sorted")

    def node_of(self, allocation: str) -> str:
        """The node an allocation is placed on (validation guarantees exactly one)."""
        return next(name for name, node in self.nodes.items() if allocation in node.allocations)

    def node_resources(self, node: str) -> Resources:
        """What the node's allocations ask for together; their GPUs are listed one after
        another (each allocation gets GPUs of its own)."""
        specs = [self.allocations[a].resources for a in self.nodes[node].allocations]
        gpus = [g for spec in specs for g in spec.gpus]
        return Resources(
            cpu_cores=round(sum(spec.cpu.cores for spec in specs), 3),
            ram_bytes=sum(spec.ram.bytes for spec in specs),
            disk_bytes=sum(spec.disk.bytes for spec in specs),
            gpus=_wanted_gpus(gpus),
        )

    def summary(self) -> str:
        n, m = len(self.allocations), len(self.nodes)
        return f"{n} allocation{'s' * (n != 1)} on {m} node{'s' * (m != 1)}"


def normalize_arch(arch: str) -> str:
    """One name per CPU architecture: "amd64" and "x86_64" are both "x86_64"."""
    arch = arch.strip().lower()
    return _ARCH_ALIASES.get(arch, arch)


def ensemble_id(ensemble: Ensemble) -> str:
    """A deterministic id: 128 bits of BLAKE3 over the canonical JSON, as 32 hex digits."""
    import blake3

    return blake3.blake3(b"nunet:ensemble:v1:" + ensemble.to_json()).hexdigest()[:32]


def parse_ensemble(text: str | bytes) -> Ensemble:
    """An ensemble from YAML or JSON text; `EnsembleInvalid` lists every problem."""
    from nunet.jobs.validate import parse_text

    return parse_text(text)


def ensemble_from_data(data: object) -> Ensemble:
    """An ensemble from already decoded data (a dict from a message or the API)."""
    from nunet.jobs.validate import build

    return build(data)


def load_ensemble(path: str | Path) -> Ensemble:
    """An ensemble file; a file that cannot be read is a `ValidationError` on `file`."""
    from nunet.jobs.validate import read_file

    return parse_ensemble(read_file(Path(path)))
