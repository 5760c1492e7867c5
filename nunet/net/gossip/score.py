"""Per-peer score, in the spirit of gossipsub v1.1 (P2 first deliveries, P4 invalid messages,
P7 behaviour penalty; time in mesh, delivery deficits and IP colocation are left out).

    score = w2 * min(first_deliveries, cap)
          + w4 * invalid**2
          + w7 * max(0, behaviour - allowance)**2

Squares make a peer's first slip cheap and a pattern expensive. Counters decay every heartbeat,
so a peer that stops misbehaving recovers; the score survives a disconnect for `retain_score`
seconds, so reconnecting does not wash it clean.
"""

from __future__ import annotations

from nunet.net.gossip.params import ScoreParams


class PeerScore:
    __slots__ = ("behaviour", "disconnected_at", "first_deliveries", "invalid")

    def __init__(self) -> None:
        self.first_deliveries = 0.0
        self.invalid = 0.0
        self.behaviour = 0.0
        self.disconnected_at: float | None = None

    def value(self, p: ScoreParams) -> float:
        score = p.first_delivery_weight * min(self.first_deliveries, p.first_delivery_cap)
        if self.invalid:
            score += p.invalid_weight * self.invalid * self.invalid
        excess = self.behaviour - p.behaviour_allowance
        if excess > 0:
            score += p.behaviour_weight * excess * excess
        return score

    def decay(self, p: ScoreParams) -> None:
        self.first_deliveries = _decayed(self.first_deliveries, p.first_delivery_decay, p)
        self.invalid = _decayed(self.invalid, p.invalid_decay, p)
        self.behaviour = _decayed(self.behaviour, p.behaviour_decay, p)

    def idle(self) -> bool:
        """Nothing worth keeping once the peer is gone."""
        return not (self.invalid or self.behaviour)


def _decayed(value: float, factor: float, p: ScoreParams) -> float:
    value *= factor
    return 0.0 if value < p.decay_to_zero else value
