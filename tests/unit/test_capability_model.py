"""The capability model: comparing, hard constraints with reasons, the ranking, claims and the
assignment of ensemble nodes to providers."""

from __future__ import annotations

import itertools
import random

import msgspec
import pytest

from nunet.benchmark.model import Scores
from nunet.crypto.keys import KeyPair
from nunet.errors import CapacityError, ValidationError
from nunet.jobs.capability import (
    Assignment,
    Capability,
    Comparison,
    Offer,
    Requirement,
    Unassignable,
    assign,
    claim,
    compare,
    fits,
    match_gpus,
    rank,
    requirement,
)
from nunet.jobs.spec import Ensemble, Location, ensemble_from_data
from nunet.node.onboarding import Location as Place
from nunet.node.resources import GPU, Resources, gib

PEERS = sorted(KeyPair.generate().did for _ in range(6))
P1, P2, P3, P4, P5, P6 = PEERS
BERLIN = Place(continent="Europe", country="DE", city="Berlin")


def res(cpu: float = 4, ram: float = 8, disk: float = 100, gpus: tuple[GPU, ...] = ()) -> Resources:
    return Resources(cpu_cores=cpu, ram_bytes=gib(ram), disk_bytes=gib(disk), gpus=gpus)


def gpu(index: int, vram: float, vendor: str = "NVIDIA", model: str = "GeForce RTX 3090") -> GPU:
    return GPU(index=index, vendor=vendor, model=model, vram_bytes=gib(vram))


def want(vram: float = 0, vendor: str = "", model: str = "", index: int = 0) -> GPU:
    return GPU(index=index, vendor=vendor, model=model, vram_bytes=gib(vram))


def scores(per_core: float | None) -> Scores:
    return Scores(measured_at=0.0, quick=True, cpu_gflops_per_core=per_core)


def offer(peer: str = P1, **kw: object) -> Offer:
    kw.setdefault("free", res())
    kw.setdefault("location", BERLIN)
    return Offer(peer=peer, **kw)  # type: ignore[arg-type]


def req(**kw: object) -> Requirement:
    kw.setdefault("resources", res(1, 1, 1))
    return Requirement(**kw)  # type: ignore[arg-type]


# --- compare ------------------------------------------------------------------------------------


def cap(**kw: object) -> Capability:
    return Capability(**kw)  # type: ignore[arg-type]


def test_compare_each_part() -> None:
    base = cap(resources=res())
    assert compare(base, base) is Comparison.EQUAL
    assert compare(cap(resources=res(ram=16)), base) is Comparison.BETTER
    assert compare(cap(resources=res(cpu=2)), base) is Comparison.WORSE
    assert compare(cap(resources=res(disk=50)), base) is Comparison.WORSE
    # Short on one part is Worse even when another part is larger: it cannot hold the want.
    assert compare(cap(resources=res(cpu=64, ram=4)), base) is Comparison.WORSE


def test_compare_other_architecture_is_incomparable() -> None:
    arm = cap(resources=res(), architecture="arm64")
    assert compare(cap(resources=res(cpu=64), architecture="x86_64"), arm) is Comparison.NONE
    assert compare(cap(resources=res(cpu=64)), arm) is Comparison.NONE  # unknown is not arm64
    assert compare(cap(resources=res(), architecture="aarch64"), arm) is Comparison.EQUAL
    assert compare(arm, cap(resources=res())) is Comparison.EQUAL  # no architecture wanted


def test_compare_cpu_uses_measured_speed_when_both_were_benchmarked() -> None:
    slow = cap(resources=res(cpu=8), scores=scores(5.0))
    fast = cap(resources=res(cpu=4), scores=scores(20.0))
    assert compare(fast, slow) is Comparison.BETTER  # 80 GFLOPS vs 40, though fewer cores
    assert compare(slow, fast) is Comparison.WORSE
    assert compare(cap(resources=res(cpu=4), scores=scores(10.0)),
                   cap(resources=res(cpu=2), scores=scores(20.0))) is Comparison.EQUAL
    # Nominal cores when one side is not measured (or measured without the CPU stage).
    assert compare(fast, cap(resources=res(cpu=8))) is Comparison.WORSE
    assert compare(fast, cap(resources=res(cpu=8), scores=scores(None))) is Comparison.WORSE


def test_compare_gpus() -> None:
    two = cap(resources=res(gpus=(gpu(0, 24), gpu(1, 8, "AMD", "Radeon RX 6600"))))
    assert compare(two, cap(resources=res(gpus=(want(8, "nvidia"),)))) is Comparison.BETTER
    assert compare(two, cap(resources=res(gpus=(want(24, "nvidia", "3090"),
                                                want(8, "amd", index=1))))) is Comparison.EQUAL
    assert compare(two, cap(resources=res(gpus=(want(24), want(24, index=1))))) is \
        Comparison.WORSE
    assert compare(two, cap(resources=res(gpus=(want(1, "intel"),)))) is Comparison.WORSE
    assert compare(cap(resources=res()), cap(resources=res(gpus=(want(),)))) is Comparison.WORSE


def test_match_gpus_is_exact_and_prefers_the_smallest_that_suits() -> None:
    offered = [gpu(0, 24), gpu(1, 8), gpu(2, 8, "AMD", "Radeon")]
    assert match_gpus([want(6, "nvidia")], offered) == [offered[1]]
    # The first wanted GPU would take GPU 1 if matching were greedy; the second needs it.
    got = match_gpus([want(6), want(6, "nvidia", index=1), want(20, index=2)], offered)
    assert got == [offered[2], offered[1], offered[0]]
    assert match_gpus([want(30)], offered) is None
    assert match_gpus([want(), want(index=1), want(index=2), want(index=3)], offered) is None
    assert match_gpus([], offered) == []


def test_match_gpus_agrees_with_brute_force() -> None:
    rng = random.Random(7)
    vendors = ["NVIDIA", "AMD"]
    for _ in range(300):
        offered = [gpu(i, rng.choice([4, 8, 16]), rng.choice(vendors)) for i in
                   range(rng.randint(0, 5))]
        wanted = [want(rng.choice([0, 4, 8, 16]), rng.choice(["", "nvidia", "amd"]), index=i)
                  for i in range(rng.randint(0, 4))]
        possible = any(
            all(w.vendor.lower() in o.vendor.lower() and o.vram_bytes >= w.vram_bytes
                for w, o in zip(wanted, perm, strict=False))
            for perm in itertools.permutations(offered, len(wanted))
        ) if len(wanted) <= len(offered) else False
        got = match_gpus(wanted, offered)
        assert (got is not None) == possible
        if got is not None:
            assert len({g.index for g in got}) == len(wanted)


# --- add / subtract / claim ---------------------------------------------------------------------


def test_claim_then_subtract_tracks_usage() -> None:
    o = offer(free=res(4, 8, 100, gpus=(gpu(0, 24), gpu(1, 8))))
    r = req(resources=res(1.5, 2, 10, gpus=(want(6, "nvidia"),)))
    taken = claim(r, o)
    assert taken == Resources(cpu_cores=1.5, ram_bytes=gib(2), disk_bytes=gib(10),
                              gpus=(gpu(1, 8),))
    left = o.free - taken
    assert left == res(2.5, 6, 90, gpus=(gpu(0, 24),))  # a whole GPU is claimed, never shared
    assert left + taken == o.free
    with pytest.raises(ValidationError) as info:
        left - taken  # GPU 1 is gone: underflow is an error
    assert info.value.path == "gpus[0].index"
    with pytest.raises(CapacityError, match="needs 8 cores, has 4 free"):
        claim(req(resources=res(8, 1, 1)), o)


# --- fits ---------------------------------------------------------------------------------------


def test_fits_says_why_not() -> None:
    assert fits(req(), offer()) is None
    assert fits(req(resources=res(gpus=(want(), want(index=1)))), offer()) == \
        "needs 2 GPUs, has 0"
    assert fits(req(resources=res(8, 16, 500)), offer()) == (
        "needs 8 cores, has 4 free; needs 16 GiB RAM, has 8 GiB free; "
        "needs 500 GiB disk, has 100 GiB free")
    assert fits(req(resources=res(1, 1, 1, gpus=(want(16, "nvidia"),))),
                offer(free=res(gpus=(gpu(0, 8), gpu(1, 24, "AMD", "MI100"))))) == (
        "needs nvidia with 16 GiB, has NVIDIA GeForce RTX 3090 with 8 GiB, AMD MI100 with "
        "24 GiB free")
    assert fits(req(executors=("docker",)), offer(executors=("null",))) == \
        "executor docker not available (has null)"
    assert fits(req(architecture="arm64"), offer(architecture="x86_64")) == \
        "needs a arm64 CPU, has x86_64"
    assert fits(req(architecture="x86_64"), offer(architecture="amd64")) is None


def test_fits_peers() -> None:
    assert fits(req(peer=P2), offer(P1)) == f"the node is pinned to {P2}"
    assert fits(req(peer=P1), offer(P1)) is None
    assert fits(req(exclude_peers=frozenset({P1})), offer(P1)) == \
        "excluded by the ensemble's exclude_peers"


def test_fits_location() -> None:
    europe = Location(continent="Europe")
    germany = Location(continent="Europe", country="de")
    assert fits(req(accept=(europe,)), offer()) is None
    assert fits(req(accept=(Location(continent="Asia"), germany)), offer()) is None
    assert fits(req(accept=(Location(continent="Asia"),)), offer()) == \
        "location Europe/DE/Berlin is not accepted (accepts Asia)"
    assert fits(req(reject=(germany,)), offer()) == "location Europe/DE/Berlin is rejected"
    assert fits(req(reject=(Location(continent="Europe", country="FR"),)), offer()) is None
    assert fits(req(accept=(europe,)), offer(location=Place())) == \
        "location unknown is not accepted (accepts Europe)"
    assert fits(req(accept=(Location(continent="Europe", country="DE", city="Munich"),)),
                offer()) is not None


def test_fits_ports() -> None:
    assert fits(req(public_ports=(8080,)), offer(busy_ports=frozenset({8080}))) == \
        "public port 8080 not available"
    assert fits(req(public_ports=(80,)), offer()) == "public port 80 not available"
    assert fits(req(any_ports=3), offer(port_range=(2000, 2002),
                                        busy_ports=frozenset({2001}))) == \
        "needs 3 public ports, has 2 free"
    assert fits(req(any_ports=2, public_ports=(2000,)), offer(port_range=(2000, 2002))) is None


# --- rank ---------------------------------------------------------------------------------------


def test_rank_filters_and_orders_by_price() -> None:
    offers = [offer(P1, price=3.0), offer(P2, price=1.0), offer(P3, price=2.0),
              offer(P4, price=0.5, free=res(cpu=0.5))]
    assert [o.peer for o in rank(offers, req())] == [P2, P3, P1]


def test_rank_weighs_qos_speed_and_load() -> None:
    same = dict(price=1.0)
    assert [o.peer for o in rank([offer(P1, qos_score=20, **same),
                                  offer(P2, qos_score=90, **same)], req())] == [P2, P1]
    assert [o.peer for o in rank([offer(P1, benchmark=scores(5.0), **same),
                                  offer(P2, benchmark=scores(20.0), **same)], req())] == [P2, P1]
    assert [o.peer for o in rank([offer(P1, load=0.9, **same),
                                  offer(P2, load=0.1, **same)], req())] == [P2, P1]
    # Unknown QoS and speed count as middling: between a poor and a good offer.
    ranked = rank([offer(P1, qos_score=10), offer(P2), offer(P3, qos_score=100)], req())
    assert [o.peer for o in ranked] == [P3, P2, P1]


def test_rank_price_outweighs_a_little_qos() -> None:
    ranked = rank([offer(P1, price=1.0, qos_score=70), offer(P2, price=4.0, qos_score=90)], req())
    assert [o.peer for o in ranked] == [P1, P2]


def test_rank_is_deterministic_on_ties() -> None:
    offers = [offer(p) for p in reversed(PEERS)]
    assert [o.peer for o in rank(offers, req())] == PEERS
    assert rank([], req()) == []


# --- requirement and assign ---------------------------------------------------------------------


def ensemble(nodes: dict[str, dict], allocations: dict[str, dict] | None = None,
             **top: object) -> Ensemble:
    def alloc(cores: float = 1, gpus: list | None = None, executor: str = "docker") -> dict:
        return {"type": "task", "executor": executor,
                "resources": {"cpu": {"cores": cores}, "ram": {"size": 1}, "disk": {"size": 1},
                              "gpus": gpus or []},
                "execution": {"type": executor, "image": "busybox"}}

    allocs = {name: alloc(**spec) for name, spec in (allocations or {}).items()}
    for node in nodes.values():
        for a in node["allocations"]:
            allocs.setdefault(a, alloc())
    return ensemble_from_data({"allocations": allocs, "nodes": nodes, **top})


def test_requirement_sums_a_nodes_allocations() -> None:
    e = ensemble(
        {"n1": {"allocations": ["a", "b"], "peer": P1,
                "ports": [{"public": 8080, "private": 80, "allocation": "a"},
                          {"public": 0, "private": 81, "allocation": "b"}],
                "location": {"reject": [{"continent": "Asia"}]}}},
        {"a": {"cores": 1.5, "gpus": [{"vendor": "nvidia", "vram": 8}]},
         "b": {"cores": 0.5, "gpus": [{"vram": 4}], "executor": "null"}},
        exclude_peers=[P2],
    )
    r = requirement(e, "n1")
    assert r.resources == Resources(cpu_cores=2.0, ram_bytes=gib(2), disk_bytes=gib(2), gpus=(
        GPU(index=0, vendor="nvidia", model="", vram_bytes=gib(8)),
        GPU(index=1, vendor="", model="", vram_bytes=gib(4))))
    assert r.executors == ("docker", "null")
    assert (r.peer, r.exclude_peers) == (P1, frozenset({P2}))
    assert (r.public_ports, r.any_ports) == ((8080,), 1)
    assert r.reject == (Location(continent="Asia"),)
    assert msgspec.json.decode(msgspec.json.encode(r), type=Requirement) == r


def offers(*items: Offer) -> dict[str, Offer]:
    return {o.peer: o for o in items}


def test_assign_two_nodes_on_two_providers() -> None:
    e = ensemble({"a": {"allocations": ["x"]}, "b": {"allocations": ["y"]}})
    got = assign(e, offers(offer(P1, price=1), offer(P2, price=2), offer(P3, price=3)))
    assert got == Assignment(nodes={"a": P1, "b": P2})


def test_assign_backtracks_when_nodes_compete() -> None:
    # Node "a" prefers P1 (cheaper), but node "b" only fits on P1.
    e = ensemble({"a": {"allocations": ["x"]}, "b": {"allocations": ["y"]}},
                 {"x": {"cores": 1}, "y": {"cores": 3}})
    got = assign(e, offers(offer(P1, price=1), offer(P2, price=2, free=res(cpu=2))))
    assert got == Assignment(nodes={"a": P2, "b": P1})


def test_assign_honours_pins_and_exclusions() -> None:
    e = ensemble({"a": {"allocations": ["x"], "peer": P3}}, exclude_peers=[P1])
    assert assign(e, offers(offer(P1), offer(P2), offer(P3, price=9))) == \
        Assignment(nodes={"a": P3})
    assert assign(e, offers(offer(P1), offer(P2))) == \
        Unassignable({"a": f"the pinned provider {P3} did not answer"})


def test_assign_says_why_nothing_fits() -> None:
    e = ensemble({"a": {"allocations": ["x"]}, "b": {"allocations": ["y"]}},
                 {"x": {"gpus": [{"vendor": "nvidia"}, {"vendor": "nvidia"}]}})
    got = assign(e, offers(offer(P1), offer(P2), offer(P3, free=res(cpu=0.5))))
    assert got == Unassignable({"a": "no provider fits: needs 2 GPUs, has 0 (2 providers); "
                                     "needs 1 cores, has 0.5 free; needs 2 GPUs, has 0 "
                                     "(1 provider)"})
    assert assign(e, {}) == Unassignable({"a": "no provider answered", "b": "no provider answered"})


def test_assign_needs_distinct_providers() -> None:
    e = ensemble({"a": {"allocations": ["x"]}, "b": {"allocations": ["y"]}})
    assert assign(e, offers(offer(P1))) == Unassignable(
        {"": "2 nodes need 2 different providers, only 1 fit any of them"})


def test_assign_nodes_competing_for_one_provider() -> None:
    e = ensemble({"a": {"allocations": ["x"]}, "b": {"allocations": ["y"]},
                  "c": {"allocations": ["z"]}},
                 {"x": {"cores": 3}, "y": {"cores": 3}, "z": {"cores": 1}})
    pool = offers(offer(P1), offer(P2, free=res(cpu=1)), offer(P3, free=res(cpu=1)))
    assert assign(e, pool) == Unassignable(
        {"": "the nodes compete for the same providers: no complete assignment"})


def test_assign_redundancy() -> None:
    e = ensemble({"a": {"allocations": ["x"], "redundancy": 2}, "b": {"allocations": ["y"]}})
    pool = offers(*(offer(p, price=i) for i, p in enumerate(PEERS[:4], 1)))
    got = assign(e, pool)
    assert isinstance(got, Assignment)
    assert got.nodes == {"a": P1, "b": P2}
    assert got.standby == {"a": (P3, P4)}
    assert len({got.nodes["a"], got.nodes["b"], *got.standby["a"]}) == 4
    got = assign(e, offers(*(offer(p) for p in PEERS[:3])))
    assert got == Unassignable({"a": "redundancy 2: only 1 more fitting providers are left"})
    assert assign(e, offers(offer(P1), offer(P2))) == Unassignable(
        {"a": "redundancy 2 needs 3 providers, 2 fit"})


def test_assign_edges_limit_rtt() -> None:
    e = ensemble({"a": {"allocations": ["x"]}, "b": {"allocations": ["y"]}},
                 edges=[{"s": "a", "t": "b", "rtt": 20}])
    far = {frozenset({P1, P2}): 80.0, frozenset({P1, P3}): 10.0, frozenset({P2, P3}): 50.0}

    def rtt(x: str, y: str) -> float | None:
        return far.get(frozenset({x, y}))

    pool = offers(offer(P1, price=1), offer(P2, price=2), offer(P3, price=3))
    assert assign(e, pool, rtt_ms=rtt) == Assignment(nodes={"a": P1, "b": P3})
    assert assign(e, pool) == Unassignable(
        {"": "the ensemble's edges limit RTT, and no RTT measurements were given"})
    assert assign(e, pool, rtt_ms=lambda x, y: None) == Unassignable(
        {"": "no choice of providers meets the edges' RTT limits"})


def test_assign_many_nodes_is_bounded() -> None:
    names = [f"n{i}" for i in range(30)]
    e = ensemble({n: {"allocations": [f"a{i}"]} for i, n in enumerate(names)})
    pool = offers(*(offer(KeyPair.generate().did) for _ in range(29)))
    got = assign(e, pool)
    assert got == Unassignable({"": "30 nodes need 30 different providers, only 29 fit any "
                                    "of them"})
