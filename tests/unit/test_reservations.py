"""The provider's commit ledger (sans-I/O): resources and ports held until allocate, revert or
expiry, and a sweeper that keeps sweeping."""

from __future__ import annotations

import pytest

from nunet.errors import ExpiredError, NotFound, ValidationError
from nunet.jobs.protocol import Commit
from nunet.jobs.reservations import MAX_RESERVATIONS, Reservations
from nunet.node.resources import GPU, Resources, gib

T0 = 1_000.0
FREE = Resources(cpu_cores=4, ram_bytes=gib(8), disk_bytes=gib(100),
                 gpus=(GPU(0, "NVIDIA", "L4", gib(24)),))
SMALL = Resources(cpu_cores=1, ram_bytes=gib(2), disk_bytes=gib(10))


def commit(dep: str = "d1", node: str = "n1", resources: Resources = SMALL, *,
           ports: tuple[int, ...] = (), expires: float = T0 + 30) -> Commit:
    return Commit(deployment_id=dep, node=node, resources=resources, ports=ports,
                  expires_at=expires)


def test_reserve_take_and_nothing_left() -> None:
    ledger = Reservations()
    reply = ledger.reserve(commit(), FREE, T0, orchestrator="did:o")
    assert reply.ok
    assert reply.reason == ""
    assert ledger.reserved(T0) == SMALL
    taken = ledger.take("d1", "n1", T0 + 1)
    assert (taken.resources, taken.orchestrator) == (SMALL, "did:o")
    assert len(ledger) == 0
    assert ledger.reserved(T0) == Resources()
    with pytest.raises(NotFound):
        ledger.take("d1", "n1", T0 + 1)


def test_other_reservations_count_against_free() -> None:
    ledger = Reservations()
    big = Resources(cpu_cores=3, ram_bytes=gib(6))
    assert ledger.reserve(commit("d1", resources=big), FREE, T0).ok
    reply = ledger.reserve(commit("d2", resources=SMALL + SMALL), FREE, T0)
    assert not reply.ok
    assert "not enough free resources" in reply.reason
    assert "cores" in reply.reason
    assert ledger.get("d1", "n1", T0).resources == big
    with pytest.raises(NotFound):
        ledger.get("d2", "n1", T0)
    # Once d1 is reverted the same request fits.
    assert ledger.release("d1", "n1") is not None
    assert ledger.reserve(commit("d2", resources=SMALL + SMALL), FREE, T0).ok


def test_gpu_is_reserved_once() -> None:
    ledger = Reservations()
    gpu = Resources(gpus=(GPU(0, "NVIDIA", "L4", gib(24)),))
    assert ledger.reserve(commit("d1", resources=gpu), FREE, T0).ok
    reply = ledger.reserve(commit("d2", resources=gpu), FREE, T0)
    assert not reply.ok
    assert "GPU" in reply.reason


def test_expired_reservations_do_not_count_and_cannot_be_taken() -> None:
    ledger = Reservations()
    assert ledger.reserve(commit("d1", resources=FREE, expires=T0 + 5), FREE, T0).ok
    assert not ledger.reserve(commit("d2", expires=T0 + 30), FREE, T0 + 1).ok
    # After d1's expiry (not yet swept) its resources are free again...
    assert ledger.reserve(commit("d2", expires=T0 + 30), FREE, T0 + 6).ok
    # ...and d1 can no longer be allocated: taking it refuses and drops it.
    with pytest.raises(ExpiredError):
        ledger.take("d1", "n1", T0 + 6)
    with pytest.raises(NotFound):
        ledger.take("d1", "n1", T0 + 6)


def test_a_commit_that_already_expired_is_refused() -> None:
    ledger = Reservations()
    reply = ledger.reserve(commit(expires=T0), FREE, T0)
    assert not reply.ok
    assert "expired" in reply.reason
    assert len(ledger) == 0


def test_expiry_is_capped_by_max_ttl() -> None:
    ledger = Reservations(max_ttl_s=10)
    assert ledger.reserve(commit(expires=T0 + 3600), FREE, T0).ok
    assert ledger.get("d1", "n1", T0).expires_at == T0 + 10
    assert ledger.sweep(T0 + 10)


def test_sweeper_runs_periodically() -> None:
    ledger = Reservations()
    assert ledger.reserve(commit("d1", expires=T0 + 5), FREE, T0).ok
    assert ledger.reserve(commit("d2", expires=T0 + 20), FREE, T0).ok
    assert ledger.sweep(T0 + 1) == []
    first = ledger.sweep(T0 + 6)
    assert [r.deployment_id for r in first] == ["d1"]
    # A commit made after the first sweep, and one that expires after it: both swept later
    # (DMS's sweeper ran once and left the second expiry reserved for ever).
    assert ledger.reserve(commit("d3", expires=T0 + 12), FREE, T0 + 7).ok
    second = ledger.sweep(T0 + 13)
    assert [r.deployment_id for r in second] == ["d3"]
    third = ledger.sweep(T0 + 25)
    assert [r.deployment_id for r in third] == ["d2"]
    assert len(ledger) == 0
    assert ledger.reserved(T0 + 25) == Resources()


def test_recommit_replaces_but_not_for_another_orchestrator() -> None:
    ledger = Reservations()
    assert ledger.reserve(commit(resources=FREE), FREE, T0, orchestrator="did:a").ok
    # The same orchestrator retrying: replaces (its own hold does not count against it).
    assert ledger.reserve(commit(resources=FREE), FREE, T0 + 1, orchestrator="did:a").ok
    assert len(ledger) == 1
    reply = ledger.reserve(commit(resources=SMALL), FREE, T0 + 1, orchestrator="did:b")
    assert not reply.ok
    assert "another orchestrator" in reply.reason
    assert ledger.get("d1", "n1", T0 + 1).orchestrator == "did:a"


def test_fixed_ports_must_be_free_and_unreserved() -> None:
    ledger = Reservations(port_range=(40000, 40010))
    assert ledger.reserve(commit("d1", ports=(40001,)), FREE, T0).ok
    reply = ledger.reserve(commit("d2", ports=(40001,)), FREE, T0)
    assert not reply.ok
    assert "40001" in reply.reason
    reply = ledger.reserve(commit("d3", ports=(40002,)), FREE, T0, port_busy={40002}.__contains__)
    assert not reply.ok
    assert "not available" in reply.reason
    reply = ledger.reserve(commit("d4", ports=(80,)), FREE, T0)
    assert not reply.ok
    assert "outside" in reply.reason
    reply = ledger.reserve(commit("d5", ports=(40003, 40003)), FREE, T0)
    assert not reply.ok
    assert "twice" in reply.reason
    assert ledger.reserved_ports(T0) == {40001}


def test_port_zero_picks_free_ports_in_order() -> None:
    ledger = Reservations(port_range=(40000, 40005))
    busy = {40000, 40002}
    reply = ledger.reserve(commit("d1", ports=(0, 40001, 0)), FREE, T0,
                           port_busy=busy.__contains__)
    assert reply.ok
    assert reply.ports[1] == 40001
    picked = {reply.ports[0], reply.ports[2]}
    assert len(picked) == 2
    assert not picked & (busy | {40001})
    assert ledger.reserved_ports(T0) == set(reply.ports)
    # Three ports left free in the range at most: asking for four fails, nothing is held.
    reply = ledger.reserve(commit("d2", ports=(0, 0, 0, 0)), FREE, T0, port_busy=busy.__contains__)
    assert not reply.ok
    assert "no free public port" in reply.reason
    with pytest.raises(NotFound):
        ledger.get("d2", "n1", T0)


def test_too_many_reservations_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_RESERVATIONS >= 1024
    monkeypatch.setattr("nunet.jobs.reservations.MAX_RESERVATIONS", 40)
    ledger = Reservations()
    tiny = Resources(cpu_cores=0.001)
    free = Resources(cpu_cores=1)
    for i in range(40):
        assert ledger.reserve(commit(f"d{i}", resources=tiny), free, T0).ok
    reply = ledger.reserve(commit("one-more", resources=tiny), free, T0)
    assert not reply.ok
    assert "too many" in reply.reason


def test_bad_port_range_is_a_typed_error() -> None:
    with pytest.raises(ValidationError):
        Reservations(port_range=(10, 5))
