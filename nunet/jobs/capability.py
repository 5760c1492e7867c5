"""The hardware capability model: compare machines, match what a node of an ensemble needs to
what providers offer, rank the offers that fit, and assign nodes to providers.

- `Capability` = `Resources` (the one resource type, with its exact add/subtract) + CPU
  architecture + the provider's benchmark `Scores`. `compare(offered, wanted)` looks at each
  part: CPU (cores x measured GFLOPS per core when both sides were benchmarked, via
  `nunet.benchmark.scores.cpu_capacity`; nominal cores otherwise), RAM, disk and GPUs (each
  wanted GPU matched to a different offered GPU of the wanted vendor and model with at least the
  wanted VRAM, the smallest that suffices first). The result is `None` when `wanted` names a CPU
  architecture `offered` does not have; else `Worse` when any part falls short (the offer cannot
  hold the want, even if other parts are larger), `Better` when any part is larger, `Equal`.
- `Requirement` is what one ensemble node needs (its allocations summed, their executors, the
  node's location rules and pin, the ensemble's `exclude_peers`); `Offer` is what one provider
  has free and on what terms (price from its bid, QoS score, benchmark, load).
- `fits` applies the hard constraints and says why not; `rank` is the one place where soft
  preferences (price, QoS, speed, load) order the offers that fit; `claim` is exactly what a
  provider reserves (GPUs bound to its GPU indices); `assign` places every node of an ensemble
  on a different provider. All are pure functions: no clock, no I/O.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum

import msgspec

from nunet.benchmark.model import Scores
from nunet.benchmark.scores import cpu_capacity
from nunet.errors import CapacityError
from nunet.jobs.spec import Edge, Ensemble, Location, normalize_arch
from nunet.node.onboarding import Location as Place
from nunet.node.resources import GPU, Resources, format_gib

# rank(): weights of the soft preferences (they sum to 1).
PRICE_WEIGHT, QOS_WEIGHT, SPEED_WEIGHT, IDLE_WEIGHT = 0.40, 0.25, 0.20, 0.15
UNKNOWN = 0.5  # the part score of an offer never probed or never benchmarked
SEARCH_BUDGET = 10_000  # assign(): placements tried before giving up
MAX_OFFERED_GPUS = 64


class Comparison(StrEnum):
    WORSE = "Worse"
    EQUAL = "Equal"
    BETTER = "Better"
    NONE = "None"  # incomparable


class Capability(msgspec.Struct, frozen=True, kw_only=True):
    resources: Resources = Resources()
    architecture: str = ""  # "" = unknown (offered) or any (wanted)
    scores: Scores | None = None  # from `nunet bench`; None = not measured


class Offer(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's answer to a bid request."""

    peer: str  # its did:key
    free: Resources
    architecture: str = ""
    executors: tuple[str, ...] = ("docker",)
    location: Place = Place()
    price: float = 0.0  # asked for this request; lower is better
    qos_score: float | None = None  # 0..100 from the QoS probes; None = never probed
    benchmark: Scores | None = None
    load: float = 0.0  # 0..1: the share of its onboarded capacity in use
    busy_ports: frozenset[int] = frozenset()
    port_range: tuple[int, int] = (1025, 65535)  # where it may open public ports

    @property
    def capability(self) -> Capability:
        return Capability(resources=self.free, architecture=normalize_arch(self.architecture),
                          scores=self.benchmark)


class Requirement(msgspec.Struct, frozen=True, kw_only=True):
    """What one ensemble node needs. `resources.gpus` are wanted GPUs: empty vendor/model and 0
    VRAM mean "any"."""

    resources: Resources
    executors: tuple[str, ...] = ("docker",)  # every one must be offered
    architecture: str = ""  # "" = any
    accept: tuple[Location, ...] = ()  # empty = anywhere
    reject: tuple[Location, ...] = ()
    peer: str | None = None  # pinned provider
    exclude_peers: frozenset[str] = frozenset()
    public_ports: tuple[int, ...] = ()  # fixed public ports
    any_ports: int = 0  # public ports the provider picks

    @property
    def capability(self) -> Capability:
        return Capability(resources=self.resources, architecture=self.architecture)


class Assignment(msgspec.Struct, frozen=True):
    nodes: dict[str, str]  # node -> provider DID
    standby: dict[str, tuple[str, ...]] = {}  # node -> providers for its `redundancy`


class Unassignable(msgspec.Struct, frozen=True):
    reasons: dict[str, str]  # node ("" for the whole ensemble) -> why it has no provider


# --- comparing --------------------------------------------------------------------------------


def compare(offered: Capability, wanted: Capability) -> Comparison:
    if wanted.architecture and normalize_arch(offered.architecture) != wanted.architecture:
        return Comparison.NONE
    have, need = offered.resources, wanted.resources
    parts = [
        _cpu(offered, wanted),
        _order(have.ram_bytes, need.ram_bytes),
        _order(have.disk_bytes, need.disk_bytes),
        _gpus(have.gpus, need.gpus),
    ]
    if Comparison.WORSE in parts:
        return Comparison.WORSE
    return Comparison.BETTER if Comparison.BETTER in parts else Comparison.EQUAL


def _order(have: float, need: float) -> Comparison:
    if have > need:
        return Comparison.BETTER
    return Comparison.WORSE if have < need else Comparison.EQUAL


def _cpu(offered: Capability, wanted: Capability) -> Comparison:
    have, need = offered.resources.cpu_cores, wanted.resources.cpu_cores
    if offered.scores is not None and wanted.scores is not None:
        have_gflops = cpu_capacity(have, offered.scores)
        need_gflops = cpu_capacity(need, wanted.scores)
        if have_gflops is not None and need_gflops is not None:
            return _order(have_gflops, need_gflops)
    return _order(have, need)


def _gpus(have: tuple[GPU, ...], need: tuple[GPU, ...]) -> Comparison:
    match = match_gpus(need, have)
    if match is None:
        return Comparison.WORSE
    larger = any(w.vram_bytes and o.vram_bytes > w.vram_bytes for w, o in zip(need, match,
                                                                            strict=True))
    return Comparison.BETTER if larger or len(have) > len(need) else Comparison.EQUAL


def gpu_suits(wanted: GPU, offered: GPU) -> bool:
    """Vendor and model are case-insensitive substrings ("nvidia" suits "NVIDIA", "3090" suits
    "GeForce RTX 3090"); VRAM at least the wanted amount."""
    return (wanted.vendor.lower() in offered.vendor.lower()
            and wanted.model.lower() in offered.model.lower()
            and offered.vram_bytes >= wanted.vram_bytes)


def match_gpus(wanted: Sequence[GPU], offered: Sequence[GPU]) -> list[GPU] | None:
    """For each wanted GPU a different offered one that suits it, or None when that is
    impossible. Exact (an early wanted GPU never takes the only GPU a later one could use),
    trying the smallest suitable VRAM first so that large GPUs stay free. Only the first
    MAX_OFFERED_GPUS offered GPUs are looked at: an offer is untrusted input."""
    offered = offered[:MAX_OFFERED_GPUS]
    if len(wanted) > len(offered):
        return None
    options = [sorted((j for j, o in enumerate(offered) if gpu_suits(w, o)),
                      key=lambda j: (offered[j].vram_bytes, offered[j].index)) for w in wanted]
    got = _matching(options)
    return None if got is None else [offered[j] for j in got]


def _matching(options: Sequence[Sequence[int]]) -> list[int] | None:
    """A different option for every left item (bipartite matching by augmenting paths), each
    trying its options in order; None when there is none."""
    owner: dict[int, int] = {}  # option -> left item
    held: dict[int, int] = {}  # left item -> option
    for i in range(len(options)):
        # Breadth-first over alternating paths from item i to a free option.
        reached_from: dict[int, int] = {}
        queue = deque([i])
        free = None
        while queue and free is None:
            left = queue.popleft()
            for j in options[left]:
                if j not in reached_from:
                    reached_from[j] = left
                    if j not in owner:
                        free = j
                        break
                    queue.append(owner[j])
        if free is None:
            return None
        j = free
        while True:  # shift every holder on the path to the option it reached
            left = reached_from[j]
            previous = held.get(left)
            owner[j], held[left] = left, j
            if left == i or previous is None:
                break
            j = previous
    return [held[i] for i in range(len(options))]


# --- matching ---------------------------------------------------------------------------------


def requirement(ensemble: Ensemble, node: str) -> Requirement:
    """What ensemble node `node` needs from the one provider it runs on."""
    spec = ensemble.nodes[node]
    allocations = [ensemble.allocations[a] for a in spec.allocations]
    archs = {a.resources.cpu.architecture or "" for a in allocations} - {""}
    return Requirement(
        resources=ensemble.node_resources(node),
        executors=tuple(sorted({a.executor for a in allocations})),
        architecture=archs.pop() if archs else "",  # validation allows one per node
        accept=spec.location.accept,
        reject=spec.location.reject,
        peer=spec.peer,
        exclude_peers=frozenset(ensemble.exclude_peers),
        public_ports=tuple(p.public for p in spec.ports if p.public),
        any_ports=sum(1 for p in spec.ports if not p.public),
    )


def fits(requirement: Requirement, offer: Offer) -> str | None:
    """None when the offer meets every hard constraint, else every reason it does not."""
    if requirement.peer is not None and offer.peer != requirement.peer:
        return f"the node is pinned to {requirement.peer}"
    if offer.peer in requirement.exclude_peers:
        return "excluded by the ensemble's exclude_peers"
    reasons: list[str] = []
    missing = [e for e in requirement.executors if e not in offer.executors]
    if missing:
        reasons.append(f"executor {', '.join(missing)} not available "
                       f"(has {', '.join(offer.executors) or 'none'})")
    arch = normalize_arch(offer.architecture)
    if requirement.architecture and arch != requirement.architecture:
        reasons.append(f"needs a {requirement.architecture} CPU, has {arch or 'unknown'}")
    if (why := location_refusal(requirement, offer.location)) is not None:
        reasons.append(why)
    reasons.extend(_resource_refusals(requirement.resources, offer.free))
    if (why := _port_refusal(requirement, offer)) is not None:
        reasons.append(why)
    return "; ".join(reasons) or None


def _resource_refusals(need: Resources, have: Resources) -> list[str]:
    out = []
    if round(need.cpu_cores - have.cpu_cores, 3) > 0:
        out.append(f"needs {need.cpu_cores:g} cores, has {have.cpu_cores:g} free")
    for what, n, h in (("RAM", need.ram_bytes, have.ram_bytes),
                       ("disk", need.disk_bytes, have.disk_bytes)):
        if n > h:
            out.append(f"needs {format_gib(n)} {what}, has {format_gib(h)} free")
    if len(need.gpus) > len(have.gpus):
        n = len(need.gpus)
        out.append(f"needs {n} GPU{'s' * (n != 1)}, has {len(have.gpus)}")
    elif need.gpus and match_gpus(need.gpus, have.gpus) is None:
        out.append(f"needs {_gpu_list(need.gpus)}, has {_gpu_list(have.gpus)} free")
    return out


def _gpu_list(gpus: Iterable[GPU]) -> str:
    def one(g: GPU) -> str:
        name = " ".join(filter(None, (g.vendor, g.model))) or "a GPU"
        return f"{name} with {format_gib(g.vram_bytes)}" if g.vram_bytes else name

    return ", ".join(one(g) for g in gpus)


def _port_refusal(requirement: Requirement, offer: Offer) -> str | None:
    low, high = offer.port_range
    taken = [p for p in requirement.public_ports if p in offer.busy_ports or not low <= p <= high]
    if taken:
        return f"public port{'s' * (len(taken) > 1)} {', '.join(map(str, taken))} not available"
    busy = sum(1 for p in offer.busy_ports if low <= p <= high)
    free = max(0, high - low + 1 - busy - len(requirement.public_ports))
    if requirement.any_ports > free:
        return f"needs {requirement.any_ports} public ports, has {free} free"
    return None


def place_matches(rule: Location, place: Place) -> bool:
    """DMS's rule: the continent must be equal, and the country and city where the rule names
    them (case-insensitive)."""
    def same(a: str | None, b: str) -> bool:
        return a is None or a.casefold() == b.casefold()

    return rule.continent.casefold() == place.continent.casefold() and same(
        rule.country, place.country) and same(rule.city, place.city)


def location_refusal(requirement: Requirement, place: Place) -> str | None:
    where = "/".join(filter(None, (place.continent, place.country, place.city))) or "unknown"
    if requirement.accept and not any(place_matches(r, place) for r in requirement.accept):
        accepted = ", ".join("/".join(filter(None, (r.continent, r.country, r.city)))
                             for r in requirement.accept)
        return f"location {where} is not accepted (accepts {accepted})"
    if any(place_matches(r, place) for r in requirement.reject):
        return f"location {where} is rejected"
    return None


def claim(requirement: Requirement, offer: Offer) -> Resources:
    """Exactly what the provider reserves: CPU, RAM and disk as asked, and the whole of each
    matched GPU (a container gets whole devices; GPUs are not shared). `CapacityError` when the
    offer does not fit."""
    if (why := fits(requirement, offer)) is not None:
        raise CapacityError(why)
    need = requirement.resources
    gpus = match_gpus(need.gpus, offer.free.gpus) or []
    return Resources(cpu_cores=need.cpu_cores, ram_bytes=need.ram_bytes,
                     disk_bytes=need.disk_bytes, gpus=tuple(sorted(gpus, key=lambda g: g.index)))


# --- ranking ----------------------------------------------------------------------------------


def rank(offers: Iterable[Offer], requirement: Requirement) -> list[Offer]:
    """The offers that fit, best first. The one place soft preferences are weighed:

        score = 0.40 price + 0.25 qos + 0.20 speed + 0.15 idle, each part in 0..1
        price = cheapest fitting price / this price (1 for the cheapest and for free offers)
        qos   = QoS score / 100 (never probed: 0.5)
        speed = this offer's measured CPU capacity for the wanted cores / the best one's
                (`cpu_capacity`; not benchmarked: 0.5)
        idle  = 1 - load

    Ties go to the lower price, then to the smaller peer DID, so the order is deterministic."""
    fitting = [o for o in offers if fits(requirement, o) is None]
    if not fitting:
        return []
    cheapest = min(o.price for o in fitting)
    cores = requirement.resources.cpu_cores or 1.0
    speeds = {o.peer: _speed(o, cores) for o in fitting}
    fastest = max((s for s in speeds.values() if s is not None), default=None)

    def score(o: Offer) -> float:
        price = cheapest / o.price if o.price > 0 else 1.0
        qos = UNKNOWN if o.qos_score is None else min(max(o.qos_score, 0.0), 100.0) / 100
        speed = speeds[o.peer]
        speed_part = UNKNOWN if speed is None or not fastest else speed / fastest
        idle = 1.0 - min(max(o.load, 0.0), 1.0)
        return (PRICE_WEIGHT * price + QOS_WEIGHT * qos + SPEED_WEIGHT * speed_part
                + IDLE_WEIGHT * idle)

    return sorted(fitting, key=lambda o: (-score(o), o.price, o.peer))


def _speed(offer: Offer, cores: float) -> float | None:
    return None if offer.benchmark is None else cpu_capacity(cores, offer.benchmark)


# --- assigning --------------------------------------------------------------------------------


def assign(
    ensemble: Ensemble, offers: Mapping[str, Offer], *,
    rtt_ms: Callable[[str, str], float | None] | None = None,
) -> Assignment | Unassignable:
    """Every node on a different provider that fits it, honouring pins, locations, edges' RTT
    limits (`rtt_ms(peer_a, peer_b)`, None = not measured, which fails a limit) and
    `redundancy` (that many more fitting providers, different from every other one chosen).
    Picks the best-ranked providers that make a complete assignment: nodes with the fewest
    candidates are placed first, with backtracking; when that runs out of budget and no edge
    limits RTT, any complete matching is taken. `offers` is keyed by provider DID."""
    pool = list(offers.values())
    candidates: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for node, spec in ensemble.nodes.items():
        req = requirement(ensemble, node)
        ranked = [o.peer for o in rank(pool, req)]
        if not ranked:
            reasons[node] = _refusals(req, pool)
        elif len(ranked) < 1 + spec.redundancy:
            reasons[node] = (f"redundancy {spec.redundancy} needs {1 + spec.redundancy} "
                             f"providers, {len(ranked)} fit")
        candidates[node] = ranked
    if reasons:
        return Unassignable(reasons)
    limited = [e for e in ensemble.edges if e.rtt is not None]
    if limited and rtt_ms is None:
        return Unassignable({"": "the ensemble's edges limit RTT, and no RTT measurements "
                                 "were given"})
    names = list(candidates)
    peers = sorted({p for ranked in candidates.values() for p in ranked})
    position = {p: j for j, p in enumerate(peers)}
    matched = _matching([[position[p] for p in candidates[n]] for n in names])
    if matched is None:  # Hall's condition fails: no search could succeed
        if len(peers) < len(names):
            why = (f"{len(names)} nodes need {len(names)} different providers, only "
                   f"{len(peers)} fit any of them")
        else:
            why = "the nodes compete for the same providers: no complete assignment"
        return Unassignable({"": why})
    search = _Search(candidates, limited, rtt_ms)
    chosen = search.run()
    if chosen is None and not limited:  # the search ran out of budget; any matching will do
        chosen = {n: peers[j] for n, j in zip(names, matched, strict=True)}
    if chosen is None:
        return Unassignable({"": search.failure()})
    used = set(chosen.values())
    standby: dict[str, tuple[str, ...]] = {}
    for node, spec in ensemble.nodes.items():
        if spec.redundancy:
            extra = [p for p in candidates[node] if p not in used][:spec.redundancy]
            if len(extra) < spec.redundancy:
                return Unassignable({node: f"redundancy {spec.redundancy}: only {len(extra)} "
                                           "more fitting providers are left"})
            used.update(extra)
            standby[node] = tuple(extra)
    return Assignment(nodes=chosen, standby=standby)


def _refusals(req: Requirement, offers: list[Offer]) -> str:
    if not offers:
        return "no provider answered"
    if req.peer is not None and all(o.peer != req.peer for o in offers):
        return f"the pinned provider {req.peer} did not answer"
    counts = Counter(fits(req, o) or "" for o in offers)
    parts = [f"{why} ({n} provider{'s' * (n != 1)})" for why, n in counts.most_common(3)]
    more = len(counts) - len(parts)
    return "no provider fits: " + "; ".join(parts) + (f"; {more} other reasons" if more else "")


class _Search:
    """Backtracking over nodes, most constrained first; candidates in rank order."""

    def __init__(self, candidates: dict[str, list[str]], edges: Sequence[Edge],
                 rtt_ms: Callable[[str, str], float | None] | None) -> None:
        self.candidates = candidates
        self.order = sorted(candidates, key=lambda n: (len(candidates[n]), n))
        self.limits: dict[str, list[tuple[str, float]]] = {n: [] for n in candidates}
        for e in edges:
            if e.rtt is not None:
                self.limits[e.s].append((e.t, e.rtt))
                self.limits[e.t].append((e.s, e.rtt))
        self.rtt_ms = rtt_ms
        self.tries = 0

    def run(self) -> dict[str, str] | None:
        chosen: dict[str, str] = {}
        return dict(chosen) if self._place(0, chosen, set()) else None

    def _place(self, i: int, chosen: dict[str, str], used: set[str]) -> bool:
        if i == len(self.order):
            return True
        node = self.order[i]
        for peer in self.candidates[node]:
            if peer in used or not self._edges_ok(node, peer, chosen):
                continue
            self.tries += 1
            if self.tries > SEARCH_BUDGET:
                return False
            chosen[node] = peer
            used.add(peer)
            if self._place(i + 1, chosen, used):
                return True
            del chosen[node]
            used.discard(peer)
        return False

    def _edges_ok(self, node: str, peer: str, chosen: dict[str, str]) -> bool:
        for other, limit in self.limits[node]:
            if other in chosen:
                rtt = self.rtt_ms(peer, chosen[other]) if self.rtt_ms else None
                if rtt is None or rtt > limit:
                    return False
        return True

    def failure(self) -> str:
        if self.tries > SEARCH_BUDGET:
            return f"gave up after {SEARCH_BUDGET} placements were tried"
        return "no choice of providers meets the edges' RTT limits"
