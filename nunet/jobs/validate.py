"""Ensemble data to `Ensemble`, reporting every problem of the file at once.

Rules:
- Each problem names its dotted field path (`allocations.alloc1.resources.ram.size: must be >
  0`) and, for YAML, its line. Parsing goes on after a problem, so one run lists them all.
- A field nunet does not know is an error (with a "did you mean" where one is close). A field
  DMS knows and nunet does not implement yet is accepted only when empty ("", 0, [], {}, null)
  and otherwise reported "not supported yet": nothing in a file is silently ignored.
- Optional fields given as null count as absent (DMS's docs show `cmd:` with no value); the one
  exception is `executor: null`, which YAML reads as null and DMS means as the null executor.
- DMS's old spellings `dnsname`, `volumes`, `health_check` and `edge_constraints` are read as
  `dns_name`, `volume`, `healthcheck` and `edges`; giving both spellings is an error.
- Cross-checks: every node's allocations exist and each allocation is on exactly one node; ports
  are unique per node and belong to its allocations; `depends_on` names allocations of the same
  node (DMS's rule) without cycles; a node's allocations want one CPU architecture; peer pins
  and `exclude_peers` are did:keys, pins are distinct and not excluded; `dns_name`s are unique;
  edges join two different nodes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, cast

from nunet.jobs.checker import MAX_LIST, Checker, join, kind, one_of, show, suggest
from nunet.jobs.document import MAX_TEXT_BYTES, Marks, invalid, read_document
from nunet.jobs.spec import (
    ALLOCATION_RECOVERY,
    ALLOCATION_TYPES,
    CONTINENTS,
    CPU,
    ESCALATION,
    EXECUTORS,
    NODE_RECOVERY,
    Allocation,
    AllocationType,
    Edge,
    Ensemble,
    Execution,
    Executor,
    GPUSpec,
    HealthCheck,
    HealthCheckResponse,
    Location,
    LocationConstraints,
    Node,
    Port,
    ResourceSpec,
    Size,
    Volume,
    normalize_arch,
)

MAX_ALLOCATIONS = 256
MAX_NODES = 256
MAX_CORES = 4096
MAX_GPUS = 16
MAX_REDUNDANCY = 16

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARCH = re.compile(r"[a-z0-9_-]{1,32}")
# Docker's reference grammar: [domain[:port]/]path[:tag][@digest]; the first part is a domain
# only when it has a dot or a port or is localhost, else it is a (lower-case) path component.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_IMAGE = re.compile(
    rf"(?:(?:localhost|{_LABEL}(?:\.{_LABEL})+)(?::[0-9]+)?/|{_LABEL}:[0-9]+/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_URL = re.compile(r"https?://[^\s/?#]+(?:/[^\s]*)?")
_GPU_VENDORS = ("nvidia", "amd", "intel")

_TOP = ("version", "allocations", "nodes", "edges", "edge_constraints", "escalation_strategy",
        "exclude_peers", "metadata", "subnet")
_ALLOCATION = ("executor", "type", "resources", "execution", "dns_name", "healthcheck", "volume",
               "failure_recovery", "depends_on")
_EXECUTION = ("type", "image", "cmd", "entrypoint", "environment", "working_directory")
_VOLUME = ("type", "name", "mountpoint", "read_only", "bucket", "key", "prefix", "endpoint",
           "region", "direction")
_S3_ONLY = ("bucket", "key", "prefix", "endpoint", "region", "direction")
_NODE = ("allocations", "ports", "location", "peer", "redundancy", "failure_recovery")


def parse_text(text: str | bytes) -> Ensemble:
    doc = read_document(text)
    return build(doc.data, doc.marks)


def read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise invalid(f"cannot read {path}: {exc.strerror or exc}", path="file") from None
    return data


def build(data: object, marks: Marks | None = None) -> Ensemble:
    check = _Check(marks or {})
    ensemble = check.ensemble(data)
    if check.problems or ensemble is None:
        raise check.error()
    return ensemble


class _Check(Checker):
    """One validation run over one ensemble."""

    def __init__(self, marks: Marks) -> None:
        super().__init__(marks)
        # For the cross-checks, kept even when the rest of an allocation or node is bad.
        self.depends: dict[str, tuple[str, ...]] = {}
        self.dns_names: dict[str, str] = {}
        self.placement: dict[str, tuple[str, ...]] = {}
        self.pins: dict[str, str] = {}
        self.archs: dict[str, str] = {}

    # --- the ensemble ---------------------------------------------------------------------------

    def ensemble(self, data: object) -> Ensemble | None:
        if data is None:
            self.err("", "empty: an ensemble needs `allocations` and `nodes`")
            return None
        top = self.fields(data, "", _TOP, required=("allocations", "nodes"),
                          unsupported=("keys", "scripts", "supervisor", "contracts"))
        if top is None:
            return None
        start = len(self.problems)
        if top.get("version", "V1") != "V1":
            self.err("version", f"must be V1, got {show(top['version'])}")
        allocations = self._map(top.get("allocations"), "allocations", MAX_ALLOCATIONS,
                                "allocations", self.allocation, _HOSTNAME,
                                "must be a host name (letters, digits, `-`, `.`)")
        nodes = self._map(top.get("nodes"), "nodes", MAX_NODES, "nodes", self.node, _NODE_NAME,
                          "must be letters, digits, `_`, `-`, `.` (at most 63)")
        edges = self.edges(top)
        escalation = top.get("escalation_strategy")
        if escalation is not None:
            escalation = self.choice(escalation, "escalation_strategy", ESCALATION)
        exclude = tuple(filter(None, (self.did(v, p) for p, v in
                                      self.items(top.get("exclude_peers"), "exclude_peers"))))
        metadata = self.metadata(top.get("metadata"))
        self.subnet(top.get("subnet"))
        every_node_read = isinstance(top.get("nodes"), dict) and len(self.placement) == len(nodes)
        self.links(_names(top.get("allocations")), set(nodes), every_node_read, edges, exclude)
        if len(self.problems) > start:
            return None
        return Ensemble(
            allocations={k: v for k, v in allocations.items() if v is not None},
            nodes={k: v for k, v in nodes.items() if v is not None},
            edges=edges, escalation_strategy=escalation, exclude_peers=exclude,
            metadata=metadata,
        )

    def _map(self, value: object, path: str, limit: int, what: str, parse: Any,
             pattern: re.Pattern[str], hint: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        folded: dict[str, str] = {}
        for name, child, item in self.named(value, path, limit, what):
            if not pattern.fullmatch(name):
                self.err(child, f"bad name: {hint}")
            elif name.lower() in folded:
                self.err(child, f"same name as {folded[name.lower()]!r} (names ignore case)")
            folded.setdefault(name.lower(), name)
            out[name] = parse(name, child, item)
        return out

    def allocation(self, name: str, path: str, raw: object) -> Allocation | None:
        start = len(self.problems)
        f = self.fields(raw, path, _ALLOCATION, required=("type", "resources", "execution"),
                        unsupported=("keys", "provision"),
                        aliases={"dnsname": "dns_name", "volumes": "volume",
                                 "health_check": "healthcheck"})
        if f is None:
            return None
        executor = self.executor(f, path)
        kind = self.choice(f["type"], join(path, "type"), ALLOCATION_TYPES) if "type" in f else None
        resources = self.resources(f["resources"], join(path, "resources")) \
            if "resources" in f else None
        execution = self.execution(f["execution"], join(path, "execution"), executor) \
            if "execution" in f and executor is not None else None
        dns_name = self.optional(f, "dns_name", path, lambda v, p: self.text(
            v, p, pattern=_HOSTNAME, hint="must be a host name"))
        healthcheck = self.optional(f, "healthcheck", path, self.healthcheck)
        if healthcheck is not None and kind == "task":
            self.err(join(path, "healthcheck"),
                     "only a service has a health check: a task's health is its exit code")
        volumes = self.volumes(f.get("volume"), join(path, "volume"))
        recovery = self.optional(f, "failure_recovery", path, lambda v, p: self.choice(
            v, p, ALLOCATION_RECOVERY)) or "stay_down"
        depends_on = self.texts(f.get("depends_on"), join(path, "depends_on"))
        self.depends[name] = depends_on or ()
        if resources is not None and resources.cpu.architecture is not None:
            self.archs[name] = resources.cpu.architecture
        if dns_name is not None:
            self.dns_names[name] = dns_name
        if (len(self.problems) > start or resources is None or execution is None
                or volumes is None or depends_on is None):
            return None
        return Allocation(
            executor=cast(Executor, executor), type=cast(AllocationType, kind),
            resources=resources, execution=execution, dns_name=dns_name,
            healthcheck=healthcheck, volume=volumes, failure_recovery=recovery,
            depends_on=depends_on,
        )

    def optional(self, f: dict[str, Any], key: str, path: str, parse: Any) -> Any:
        value = f.get(key)
        return None if value is None else parse(value, join(path, key))

    def executor(self, f: dict[str, Any], path: str) -> str | None:
        child = join(path, "executor")
        if "executor" in f:
            value = "null" if f["executor"] is None else f["executor"]
        elif isinstance(f.get("execution"), dict) and "type" in f["execution"]:
            return self.choice(f["execution"]["type"], join(path, "execution.type"), EXECUTORS,
                               unsupported=("firecracker", "microvm"))
        else:
            self.err(child, f"required: one of {one_of(EXECUTORS)}")
            return None
        return self.choice(value, child, EXECUTORS, unsupported=("firecracker", "microvm"))

    def resources(self, raw: object, path: str) -> ResourceSpec | None:
        start = len(self.problems)
        f = self.fields(raw, path, ("cpu", "ram", "disk", "gpus"), required=("cpu", "ram", "disk"))
        if f is None:
            return None
        cpu = self.cpu(f["cpu"], join(path, "cpu")) if "cpu" in f else None
        ram = self.sized(f.get("ram"), join(path, "ram"), ("clock_speed", "clockspeed", "type")) \
            if "ram" in f else None
        disk = self.sized(f.get("disk"), join(path, "disk"), (
            "model", "vendor", "type", "interface", "read_speed", "write_speed", "readspeed",
            "writespeed")) if "disk" in f else None
        gpus = tuple(filter(None, (self.gpu(item, p) for p, item in
                                   self.items(f.get("gpus"), join(path, "gpus"), limit=MAX_GPUS))))
        if len(self.problems) > start or cpu is None or ram is None or disk is None:
            return None
        return ResourceSpec(cpu=cpu, ram=ram, disk=disk, gpus=gpus)

    def cpu(self, raw: object, path: str) -> CPU | None:
        f = self.fields(raw, path, ("cores", "architecture"), required=("cores",), unsupported=(
            "clock_speed", "clockspeed", "model", "vendor", "threads", "cache_size", "cachesize"))
        if f is None or "cores" not in f:
            return None
        cores = self.number(f["cores"], join(path, "cores"), low=0, low_open=True, high=MAX_CORES)
        if cores is not None and round(cores, 3) == 0:
            self.err(join(path, "cores"), f"must be at least 0.001, got {cores:g}")
            return None
        arch = self.optional(f, "architecture", path, lambda v, p: self.text(v, p))
        if arch is not None:
            arch = normalize_arch(arch)
            if not _ARCH.fullmatch(arch):
                self.err(join(path, "architecture"), f"not an architecture: {show(arch)}")
                return None
        return None if cores is None else CPU(cores=round(cores, 3), architecture=arch)

    def sized(self, raw: object, path: str, unsupported: Collection[str]) -> Size | None:
        f = self.fields(raw, path, ("size",), required=("size",), unsupported=unsupported)
        if f is None or "size" not in f:
            return None
        size = self.size(f["size"], join(path, "size"))
        return None if size is None else Size(size=size)

    def gpu(self, raw: object, path: str) -> GPUSpec | None:
        f = self.fields(raw, path, ("vendor", "model", "vram"))
        if f is None:
            return None
        start = len(self.problems)
        vendor = self.optional(f, "vendor", path, lambda v, p: self.choice(
            v.lower() if isinstance(v, str) else v, p, _GPU_VENDORS))
        model = self.optional(f, "model", path, lambda v, p: self.text(v, p))
        vram = self.optional(f, "vram", path, self.size)
        if len(self.problems) > start:
            return None
        return GPUSpec(vendor=vendor, model=model, vram=vram)

    def execution(self, raw: object, path: str, executor: str) -> Execution | None:
        start = len(self.problems)
        f = self.fields(raw, path, _EXECUTION)
        if f is None:
            return None
        if f.get("type") is not None and f["type"] != executor:
            self.err(join(path, "type"), f"must match the allocation's executor ({executor}), "
                     f"got {show(f['type'])}")
        image = self.optional(f, "image", path, lambda v, p: self.text(
            v, p, pattern=_IMAGE, hint="not an image reference such as busybox:1.36"))
        if executor == "docker" and f.get("image") is None:
            self.err(join(path, "image"), "required for the docker executor")
        cmd = self.texts(f.get("cmd"), join(path, "cmd"))
        entrypoint = self.texts(f.get("entrypoint"), join(path, "entrypoint"))
        environment = self.environment(f.get("environment"), join(path, "environment"))
        workdir = self.optional(f, "working_directory", path, self.absolute_path)
        if len(self.problems) > start or cmd is None or entrypoint is None or environment is None:
            return None
        return Execution(type=cast(Executor, executor), image=image, cmd=cmd,
                         entrypoint=entrypoint, environment=environment,
                         working_directory=workdir)

    def environment(self, raw: object, path: str) -> tuple[str, ...] | None:
        if isinstance(raw, dict):
            self.err(path, 'must be a list of "KEY=VALUE" texts')
            return None
        seen: dict[str, str] = {}
        for child, item in self.items(raw, path):
            if not isinstance(item, str) or "=" not in item:
                self.err(child, f'must be "KEY=VALUE", got {show(item)}')
                continue
            key = item.split("=", 1)[0]
            if not _ENV_KEY.fullmatch(key):
                self.err(child, f"bad variable name {show(key)}")
            elif key in seen:
                self.err(child, f"{key} is already set by {seen[key]}")
            seen.setdefault(key, child)
        return tuple(raw) if isinstance(raw, list) else ()

    def healthcheck(self, raw: object, path: str) -> HealthCheck | None:
        start = len(self.problems)
        f = self.fields(raw, path, ("type", "exec", "response", "interval"),
                        required=("type", "exec"), unsupported=("endpoint",))
        if f is None:
            return None
        if "type" in f:
            self.choice(f["type"], join(path, "type"), ("command",), unsupported=("http",))
        command = self.texts(f.get("exec"), join(path, "exec"), non_empty=True) \
            if "exec" in f else None
        response = self.optional(f, "response", path, self.response)
        interval = self.optional(f, "interval", path, self.duration)
        if len(self.problems) > start or command is None:
            return None
        return HealthCheck(exec=command, response=response, interval=interval)

    def response(self, raw: object, path: str) -> HealthCheckResponse | None:
        f = self.fields(raw, path, ("type", "value"), required=("value",))
        if f is None:
            return None
        if f.get("type") is not None and self.choice(f["type"], join(path, "type"),
                                                     ("string",)) is None:
            return None
        value = self.text(f["value"], join(path, "value"), max_len=4096) if "value" in f else None
        return None if value is None else HealthCheckResponse(value=value)

    def volumes(self, raw: object, path: str) -> tuple[Volume, ...] | None:
        # DMS writes one volume as a mapping; a list holds several.
        entries = [(path, raw)] if isinstance(raw, dict) else self.items(raw, path)
        out: list[Volume] = []
        names: dict[str, str] = {}
        mounts: dict[str, str] = {}
        ok = True
        for child, item in entries:
            volume = self.volume(item, child)
            if volume is None:
                ok = False
                continue
            for seen, key, what in ((names, volume.name, "name"),
                                    (mounts, volume.mountpoint.rstrip("/"), "mountpoint")):
                if key in seen:
                    self.err(join(child, what), f"same {what} as {seen[key]}")
                    ok = False
                seen.setdefault(key, child)
            out.append(volume)
        return tuple(out) if ok else None

    def volume(self, raw: object, path: str) -> Volume | None:
        start = len(self.problems)
        f = self.fields(raw, path, _VOLUME, required=("type", "name", "mountpoint"))
        if f is None or "type" not in f:
            return None
        kind = self.choice(f["type"], join(path, "type"), ("local", "s3"),
                           unsupported=("glusterfs",))
        if kind is None:
            return None
        name = self.text(f["name"], join(path, "name"), pattern=_VOLUME_NAME,
                         hint="must be letters, digits, `_`, `-`, `.`") if "name" in f else None
        mountpoint = self.absolute_path(f["mountpoint"], join(path, "mountpoint")) \
            if "mountpoint" in f else None
        if mountpoint is not None and mountpoint.rstrip("/") == "":
            self.err(join(path, "mountpoint"), "cannot mount over /")
        read_only = self.optional(f, "read_only", path, self.flag) or False
        s3: dict[str, Any] = {}
        if kind == "local":
            for key in _S3_ONLY:
                if f.get(key) is not None:
                    self.err(join(path, key), "only for s3 volumes")
        else:
            s3 = self.s3(f, path, read_only)
        if len(self.problems) > start or name is None or mountpoint is None:
            return None
        return Volume(type=cast(Literal["local", "s3"], kind), name=name, mountpoint=mountpoint,
                      read_only=read_only, **s3)

    def s3(self, f: dict[str, Any], path: str, read_only: bool) -> dict[str, Any]:
        out = {
            "bucket": self.text(f.get("bucket"), join(path, "bucket"), pattern=_BUCKET,
                                hint="must be an S3 bucket name"),
            "key": self.optional(f, "key", path, lambda v, p: self.text(v, p, max_len=1024)),
            "prefix": self.optional(f, "prefix", path, lambda v, p: self.text(v, p, max_len=1024)),
            "endpoint": self.optional(f, "endpoint", path, lambda v, p: self.text(
                v, p, pattern=_URL, hint="must be an http(s) URL")),
            "region": self.optional(f, "region", path, lambda v, p: self.text(v, p, max_len=64)),
            "direction": self.choice(f.get("direction"), join(path, "direction"),
                                     ("input", "output")),
        }
        if out["key"] is not None and out["prefix"] is not None:
            self.err(join(path, "prefix"), "give `key` (one object) or `prefix`, not both")
        if out["direction"] == "output" and read_only:
            self.err(join(path, "read_only"), "an output volume must be writable")
        return out

    def node(self, name: str, path: str, raw: object) -> Node | None:
        start = len(self.problems)
        f = self.fields(raw, path, _NODE, required=("allocations",))
        if f is None:
            return None
        allocations = self.texts(f.get("allocations"), join(path, "allocations"), non_empty=True) \
            if "allocations" in f else None
        if allocations is not None:
            for i, a in enumerate(allocations):
                if a in allocations[:i]:
                    self.err(join(join(path, "allocations"), i), f"{a!r} is listed twice")
        ports = self.ports(f.get("ports"), join(path, "ports"), allocations or ())
        location = self.optional(f, "location", path, self.location) or LocationConstraints()
        peer = self.optional(f, "peer", path, self.did)
        if allocations is not None:
            self.placement[name] = allocations
        if peer is not None:
            self.pins[name] = peer
        redundancy = self.optional(f, "redundancy", path, lambda v, p: self.integer(
            v, p, 0, MAX_REDUNDANCY)) or 0
        recovery = self.optional(f, "failure_recovery", path, lambda v, p: self.choice(
            v, p, NODE_RECOVERY)) or "stay_down"
        if len(self.problems) > start or allocations is None:
            return None
        return Node(allocations=allocations, ports=ports, location=location, peer=peer,
                    redundancy=redundancy, failure_recovery=recovery)

    def ports(self, raw: object, path: str, allocations: tuple[str, ...]) -> tuple[Port, ...]:
        out: list[Port] = []
        public: dict[int, str] = {}
        private: dict[tuple[str, int], str] = {}
        for child, item in self.items(raw, path):
            f = self.fields(item, child, ("public", "private", "allocation"),
                            required=("public", "private"))
            if f is None:
                continue
            pub = self.integer(f["public"], join(child, "public"), 0, 65535) \
                if "public" in f else None
            if pub is not None and 0 < pub < 1025:
                self.err(join(child, "public"), f"must be 0 (any) or 1025..65535, got {pub}")
                pub = None
            priv = self.integer(f["private"], join(child, "private"), 1, 65535) \
                if "private" in f else None
            alloc = f.get("allocation")
            if alloc is None and len(allocations) == 1:
                alloc = allocations[0]
            elif alloc is None:
                self.err(join(child, "allocation"), "required when the node has several "
                         "allocations")
            else:
                alloc = self.text(alloc, join(child, "allocation"))
                if alloc is not None and allocations and alloc not in allocations:
                    self.err(join(child, "allocation"),
                             f"{alloc!r} is not an allocation of this node")
            if pub is None or priv is None or alloc is None:
                continue
            if pub and pub in public:
                self.err(join(child, "public"), f"port {pub} is already used by {public[pub]}")
            elif (alloc, priv) in private:
                self.err(join(child, "private"),
                         f"{alloc}:{priv} is already published by {private[alloc, priv]}")
            public.setdefault(pub, child)
            private.setdefault((alloc, priv), child)
            out.append(Port(public=pub, private=priv, allocation=alloc))
        return tuple(out)

    def location(self, raw: object, path: str) -> LocationConstraints | None:
        f = self.fields(raw, path, ("accept", "reject"))
        if f is None:
            return None
        lists = {}
        for key in ("accept", "reject"):
            places = [self.place(item, p) for p, item in self.items(f.get(key), join(path, key))]
            lists[key] = tuple(p for p in places if p is not None)
        return LocationConstraints(**lists)

    def place(self, raw: object, path: str) -> Location | None:
        f = self.fields(raw, path, ("continent", "country", "city"), required=("continent",),
                        unsupported=("asn", "isp"))
        if f is None or "continent" not in f:
            return None
        continent = self.text(f["continent"], join(path, "continent"))
        if continent is not None:
            canonical = {c.lower(): c for c in CONTINENTS}.get(continent.lower())
            if canonical is None:
                self.err(join(path, "continent"),
                         f"must be one of {one_of(CONTINENTS)}, got {show(continent)}")
            continent = canonical
        country = self.optional(f, "country", path, lambda v, p: self.text(v, p, max_len=64))
        city = self.optional(f, "city", path, lambda v, p: self.text(v, p, max_len=128))
        if city is not None and f.get("country") is None:
            self.err(join(path, "city"), "a city needs its country")
            return None
        return None if continent is None else Location(continent=continent, country=country,
                                                        city=city)

    def edges(self, top: dict[str, Any]) -> tuple[Edge, ...]:
        if "edges" in top and "edge_constraints" in top:
            self.err("edge_constraints", "give `edges` or DMS's older `edge_constraints`, not both")
            return ()
        out: list[Edge] = []
        if "edge_constraints" in top:  # DMS: {edges: [a, b], rtt, bw}
            for path, item in self.items(top["edge_constraints"], "edge_constraints"):
                f = self.fields(item, path, ("edges", "rtt"), required=("edges",),
                                unsupported=("bw",))
                pair = self.texts(f.get("edges"), join(path, "edges")) if f else None
                if f is not None and pair is not None and len(pair) != 2:
                    self.err(join(path, "edges"), "must name exactly two nodes")
                elif f is not None and pair is not None:
                    out.extend(self.edge(pair[0], pair[1], f, path))
        for path, item in self.items(top.get("edges"), "edges"):
            f = self.fields(item, path, ("s", "t", "rtt"), required=("s", "t"), unsupported=("bw",))
            if f is not None and "s" in f and "t" in f:
                s, t = self.text(f["s"], join(path, "s")), self.text(f["t"], join(path, "t"))
                if s is not None and t is not None:
                    out.extend(self.edge(s, t, f, path))
        return tuple(out)

    def edge(self, s: str, t: str, f: dict[str, Any], path: str) -> list[Edge]:
        rtt = self.optional(f, "rtt", path, lambda v, p: self.number(
            v, p, low=0, low_open=True, high=60_000))
        if f.get("rtt") is not None and rtt is None:
            return []
        return [Edge(s=s, t=t, rtt=rtt)]

    def metadata(self, raw: object) -> dict[str, str | int | float | bool]:
        if raw is None:
            return {}
        out: dict[str, str | int | float | bool] = {}
        for name, path, value in self.named(raw, "metadata", MAX_LIST, "metadata",
                                              required=False):
            if isinstance(value, float) and not math.isfinite(value):
                self.err(path, "must be a finite number")
            elif isinstance(value, str | int | float | bool):
                out[name] = value
            else:
                self.err(path, f"must be text, a number or a boolean, got {kind(value)}")
        return out

    def subnet(self, raw: object) -> None:
        if raw is None:
            return
        f = self.fields(raw, "subnet", ("join",))
        if f is not None and f.get("join") is not None and self.flag(f["join"], "subnet.join"):
            self.err("subnet.join", "not supported yet (no IP network between allocations)")

    # --- across the file ------------------------------------------------------------------------

    def links(self, names: set[str], nodes: set[str], every_node_read: bool,
              edges: tuple[Edge, ...], exclude: tuple[str, ...]) -> None:
        placed: dict[str, str] = {}
        for node, allocations in self.placement.items():
            for i, a in enumerate(allocations):
                child = f"nodes.{node}.allocations[{i}]"
                if a not in names:
                    self.err(child, f"no allocation named {a!r}" + suggest(a, names))
                elif a in placed and placed[a] != node:
                    self.err(child, f"{a!r} is already on node {placed[a]!r}: an allocation runs "
                             "on exactly one node")
                placed.setdefault(a, node)
            archs = sorted({self.archs[a] for a in allocations if a in self.archs})
            if len(archs) > 1:
                self.err(f"nodes.{node}.allocations", f"its allocations want different CPU "
                         f"architectures ({', '.join(archs)}) but share one provider")
        if every_node_read:
            for a in sorted(names - placed.keys()):
                self.err(f"allocations.{a}",
                         "not placed on any node: list it under a node's `allocations`")
        pinned: dict[str, str] = {}
        for node, peer in self.pins.items():
            if peer in pinned:
                self.err(f"nodes.{node}.peer", f"node {pinned[peer]!r} is pinned to the same peer: "
                         "different nodes run on different providers")
            if peer in exclude:
                self.err(f"nodes.{node}.peer", "this peer is in exclude_peers")
            pinned.setdefault(peer, node)
        self.dependencies(names, placed)
        seen: dict[str, str] = {}
        for name, dns_name in self.dns_names.items():
            if dns_name.lower() in seen:
                self.err(f"allocations.{name}.dns_name",
                         f"{dns_name!r} is already the dns_name of {seen[dns_name.lower()]!r}")
            seen.setdefault(dns_name.lower(), name)
        for i, edge in enumerate(edges):
            for end in (edge.s, edge.t):
                if end not in nodes:
                    self.err(f"edges[{i}]", f"no node named {end!r}")
            if edge.s == edge.t:
                self.err(f"edges[{i}]", "an edge joins two different nodes")

    def dependencies(self, names: set[str], placed: dict[str, str]) -> None:
        for name, depends_on in self.depends.items():
            for i, dep in enumerate(depends_on):
                child = f"allocations.{name}.depends_on[{i}]"
                if dep == name:
                    self.err(child, "an allocation cannot depend on itself")
                elif dep not in names:
                    self.err(child, f"no allocation named {dep!r}" + suggest(dep, names))
                elif dep in placed and name in placed and placed[dep] != placed[name]:
                    self.err(child, f"{dep!r} runs on node {placed[dep]!r} and {name!r} on "
                             f"{placed[name]!r}: dependent allocations must share a node")
        for cycle in _cycles(self.depends):
            self.err(f"allocations.{cycle[0]}.depends_on",
                     "dependency cycle: " + " -> ".join((*cycle, cycle[0])))


def _names(allocations: object) -> set[str]:
    if not isinstance(allocations, dict):
        return set()
    return {k for k in allocations if isinstance(k, str)}


def _cycles(graph: dict[str, tuple[str, ...]]) -> list[tuple[str, ...]]:
    """A cycle for each dependency that closes one (self-loops are reported elsewhere).
    Iterative: the input is untrusted and may be deep."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    found: list[tuple[str, ...]] = []
    for root in graph:
        if root in state:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            deps = [d for d in graph.get(node, ()) if d != node and d in graph]
            if i < len(deps):
                stack.append((node, i + 1))
                nxt = deps[i]
                if state.get(nxt) == 1:
                    found.append(tuple(path[path.index(nxt):]))
                elif nxt not in state:
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return found
