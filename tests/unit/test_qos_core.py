"""QoS score math and per-peer state, with a fake clock (plain numbers)."""

from __future__ import annotations

import math

import pytest

from nunet.errors import ValidationError
from nunet.net.qos import QosConfig, QosCore, QosService, score_of
from nunet.testing.memnet import MemoryHub

CFG = QosConfig(deadline=2.0, fast_rtt=0.025, window=10, ewma_alpha=0.5)


def test_score_formula_corners() -> None:
    assert score_of(1.0, 0.001, 0, CFG) == 100.0
    assert score_of(1.0, CFG.fast_rtt, 0, CFG) == 100.0
    assert score_of(1.0, CFG.deadline, 0, CFG) == 40.0  # always answers, but as slow as allowed
    assert score_of(1.0, None, 0, CFG) == 40.0
    assert score_of(0.0, 0.001, 0, CFG) == 0.0
    assert score_of(0.5, 0.001, 0, CFG) == 50.0
    assert score_of(1.0, 0.001, 1, CFG) == 50.0
    assert score_of(1.0, 0.001, 3, CFG) == 12.5
    # Log scale: 200 ms sits where ln(10)/ln(80) of the way from 2 s to 25 ms puts it.
    expected = 100 * (0.4 + 0.6 * math.log(10) / math.log(80))
    assert score_of(1.0, 0.2, 0, CFG) == round(expected, 1)


def test_score_falls_with_latency() -> None:
    rtts = [0.01, 0.05, 0.1, 0.3, 1.0, 1.9]
    scores = [score_of(1.0, rtt, 0, CFG) for rtt in rtts]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)


def test_availability_is_over_a_sliding_window() -> None:
    core = QosCore(CFG)
    for i in range(10):
        core.record("p", None if i < 5 else 0.01, now=float(i))
    assert core.score("p", 10.0).availability == 0.5  # type: ignore[union-attr]
    for i in range(5):
        core.record("p", 0.01, now=10.0 + i)
    peer = core.score("p", 20.0)
    assert peer is not None
    assert peer.availability == 1.0  # the failures slid out of the window
    assert peer.probes == 10
    assert peer.score == 100.0
    assert peer.since_last_probe_s == 6.0


def test_failures_in_a_row_drop_the_score_and_an_answer_recovers_it() -> None:
    core = QosCore(CFG)
    for i in range(10):
        core.record("p", 0.01, now=float(i))
    scores = []
    for i in range(3):
        core.record("p", None, now=10.0 + i)
        scores.append(core.score("p", 13.0).score)  # type: ignore[union-attr]
    assert scores == sorted(scores, reverse=True)
    assert scores[-1] < 10  # 0.7 availability x 1/8
    assert core.score("p", 13.0).consecutive_failures == 3  # type: ignore[union-attr]
    core.record("p", 0.01, now=14.0)
    back = core.score("p", 14.0)
    assert back is not None
    assert back.consecutive_failures == 0
    assert back.score == 70.0  # 7 of the last 10 answered
    rising = []
    for i in range(9):  # the failures slide out of the 10-probe window: not a ban
        core.record("p", 0.01, now=15.0 + i)
        rising.append(core.score("p", 15.0 + i).score)  # type: ignore[union-attr]
    assert rising == sorted(rising)
    assert rising[-1] == 100.0


def test_ewma_and_latest_rtt() -> None:
    core = QosCore(CFG)
    core.record("p", 0.1, 0.0)
    core.record("p", 0.3, 1.0)
    peer = core.score("p", 1.0)
    assert peer is not None
    assert peer.latest_rtt_ms == 300.0
    assert peer.ewma_rtt_ms == 200.0  # alpha 0.5
    core.record("p", None, 2.0)  # a failure leaves the RTTs alone
    assert core.score("p", 2.0).ewma_rtt_ms == 200.0  # type: ignore[union-attr]


def test_an_answer_after_the_deadline_is_a_failure() -> None:
    core = QosCore(CFG)
    core.record("p", CFG.deadline + 0.5, 0.0)
    peer = core.score("p", 0.0)
    assert peer is not None
    assert peer.availability == 0.0
    assert peer.latest_rtt_ms is None
    assert peer.score == 0.0


def test_unknown_peers_have_no_score_and_silent_peers_are_forgotten() -> None:
    core = QosCore(QosConfig(forget_after=100.0, max_peers=2))
    assert core.score("nobody", 0.0) is None
    core.record("a", 0.01, 0.0)
    core.record("b", None, 0.0)
    core.record("c", 0.01, 0.0)  # over max_peers: not tracked
    assert sorted(core.scores(0.0)) == ["a", "b"]
    core.record("a", 0.01, 90.0)
    assert core.prune(150.0, keep=()) == 1  # b never answered in 150 s
    assert core.known() == ["a"]
    core.record("d", None, 150.0)
    assert core.prune(500.0, keep={"d"}) == 1  # a: silent since 90; d is watched
    assert core.known() == ["d"]
    assert core.forget("d")
    assert not core.forget("d")
    assert len(core) == 0


def test_service_rejects_nonsense_settings() -> None:
    net = MemoryHub().node("did:key:me")
    with pytest.raises(ValidationError):
        QosService(net, samples=0)
    with pytest.raises(ValidationError):
        QosService(net, deadline=0)
    svc = QosService(net, interval=5.0, samples=2, deadline=0.5)
    assert (svc.config.interval, svc.config.samples, svc.config.deadline) == (5.0, 2, 0.5)
