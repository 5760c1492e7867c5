"""QoS single check (Pocket's fisherman idea): probe peers, keep RTT and availability, score them.

A checker sends the same small probe (kinds.QOS request, echoed back) to every peer it may use,
`samples` times every `interval` seconds, each with a `deadline`. Per peer it keeps ephemeral
state (never stored, forgotten after `forget_after` seconds without an answer unless watched):
the latest RTT, an EWMA of RTTs, the outcomes of the last `window` probes, the number of
failures in a row, and a 0-100 score. The orchestrator ranks bids with `score(did)`.

The score, in one place (`score_of`):

    A = answered / sent over the last `window` probes              availability, 0..1
    L = 1                               if ewma_rtt <= fast_rtt    latency factor, 0..1
        0                               if ewma_rtt >= deadline
        ln(deadline / ewma_rtt) / ln(deadline / fast_rtt) otherwise  (log scale: 20 ms vs 40 ms
                                                                      matters as 1 s vs 2 s)
    P = 0.5 ** consecutive_failures                               a peer that just went silent
                                                                  drops at once
    score = 100 * A * (0.4 + 0.6 * L) * P

So an always-answering peer scores 40 to 100 by latency, each failure in a row halves the
score, and a peer that answers again recovers as its window fills with answers: a bad spell
lowers a score for a while, never for good.

`QosCore` is sans-I/O (fed outcomes and `now`); `QosService` (service.py) is the asyncio
adapter.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import msgspec


class QosConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval: float = 30.0  # seconds between probe rounds
    samples: int = 3  # probes per peer per round
    deadline: float = 2.0  # seconds; no answer by then is a failure
    window: int = 20  # probes the availability ratio is taken over
    ewma_alpha: float = 0.3  # weight of the newest RTT
    fast_rtt: float = 0.025  # seconds; an EWMA RTT at or under this is full marks
    forget_after: float = 600.0  # seconds without an answer before an unwatched peer is dropped
    max_peers: int = 4096  # peers tracked at most (memory bound)
    concurrency: int = 32  # peers probed at once


class PeerScore(msgspec.Struct, frozen=True):
    did: str
    score: float  # 0..100 (see the module docstring)
    availability: float  # 0..1 over the last `window` probes
    latest_rtt_ms: float | None
    ewma_rtt_ms: float | None
    consecutive_failures: int
    probes: int  # in the window
    since_last_probe_s: float


class QosStats(msgspec.Struct, frozen=True):
    peers: int
    probes_sent: int
    probes_failed: int
    bad_echoes: int  # answers that were not our probe
    echoes_served: int


def score_of(
    availability: float, ewma_rtt: float | None, consecutive_failures: int, config: QosConfig
) -> float:
    """The 0-100 score: the formula of the module docstring."""
    if ewma_rtt is None or ewma_rtt >= config.deadline:
        latency = 0.0
    elif ewma_rtt <= config.fast_rtt:
        latency = 1.0
    else:
        latency = math.log(config.deadline / ewma_rtt) / math.log(config.deadline / config.fast_rtt)
    score = 100.0 * availability * (0.4 + 0.6 * latency) * 0.5**consecutive_failures
    return round(score, 1)


class _Peer:
    __slots__ = ("ewma", "failures", "last_ok", "last_probe", "latest", "outcomes")

    def __init__(self, window: int, now: float) -> None:
        self.outcomes: deque[bool] = deque(maxlen=window)
        self.latest: float | None = None
        self.ewma: float | None = None
        self.failures = 0
        self.last_probe = now
        self.last_ok = now  # "known since": forgetting counts from here until a first answer


class QosCore:
    """Per-peer probe outcomes and scores. No clock, no I/O: `now` (seconds, any monotonic
    origin) comes in with every call."""

    def __init__(self, config: QosConfig | None = None) -> None:
        self.config = config or QosConfig()
        self._peers: dict[str, _Peer] = {}

    def record(self, did: str, rtt: float | None, now: float) -> None:
        """One probe's outcome: its RTT in seconds, or None for no (valid) answer in time."""
        peer = self._peers.get(did)
        if peer is None:
            if len(self._peers) >= self.config.max_peers:
                return
            peer = self._peers[did] = _Peer(self.config.window, now)
        peer.last_probe = now
        if rtt is None or rtt >= self.config.deadline:
            peer.outcomes.append(False)
            peer.failures += 1
            return
        peer.outcomes.append(True)
        peer.failures = 0
        peer.last_ok = now
        peer.latest = rtt
        a = self.config.ewma_alpha
        peer.ewma = rtt if peer.ewma is None else a * rtt + (1 - a) * peer.ewma

    def score(self, did: str, now: float) -> PeerScore | None:
        peer = self._peers.get(did)
        return None if peer is None else self._score(did, peer, now)

    def scores(self, now: float) -> dict[str, PeerScore]:
        return {did: self._score(did, peer, now) for did, peer in self._peers.items()}

    def known(self) -> list[str]:
        return list(self._peers)

    def forget(self, did: str) -> bool:
        return self._peers.pop(did, None) is not None

    def prune(self, now: float, keep: Iterable[str] = ()) -> int:
        """Drops peers with no answer for `forget_after` seconds, except those in `keep`."""
        keep = set(keep)
        stale = [
            did
            for did, peer in self._peers.items()
            if did not in keep and now - peer.last_ok >= self.config.forget_after
        ]
        for did in stale:
            del self._peers[did]
        return len(stale)

    def _score(self, did: str, peer: _Peer, now: float) -> PeerScore:
        n = len(peer.outcomes)
        availability = sum(peer.outcomes) / n if n else 0.0
        return PeerScore(
            did=did,
            score=score_of(availability, peer.ewma, peer.failures, self.config),
            availability=round(availability, 3),
            latest_rtt_ms=None if peer.latest is None else round(peer.latest * 1000, 3),
            ewma_rtt_ms=None if peer.ewma is None else round(peer.ewma * 1000, 3),
            consecutive_failures=peer.failures,
            probes=n,
            since_last_probe_s=round(now - peer.last_probe, 3),
        )

    def __len__(self) -> int:
        return len(self._peers)
