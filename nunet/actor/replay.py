"""Replay protection for signed envelopes, in bounded memory (sans-I/O: `now` is passed in).

A signed envelope can be re-presented by anyone who saw it (a relay, a gossip peer), so its
`(sender, nonce)` is remembered until the envelope expires, and an envelope may not claim to live
longer than `window_ns` (else its nonce would have to be kept longer than we are willing to).

Memory is bounded without ever letting a replay through: when a sender's table is full, its
oldest entry is dropped and the sender's *watermark* rises to that entry's expiry; from then on
an envelope of that sender expiring at or before the watermark is refused as a possible replay.
A sender's own messages normally expire in the order they are sent, so only a sender outpacing
`per_sender` nonces per lifetime sees refusals. When there are too many senders, the least
recently seen one is forgotten and the *global* watermark rises to its latest expiry: an unknown
sender's envelope expiring at or before it is refused.
"""

from __future__ import annotations

from collections import OrderedDict

from nunet.errors import ReplayError


class _Sender:
    __slots__ = ("nonces", "watermark")

    def __init__(self, watermark: int) -> None:
        self.nonces: dict[int, int] = {}  # nonce -> expiry (ns), in arrival order
        self.watermark = watermark


class ReplayGuard:
    def __init__(
        self, *, window_ns: int, per_sender: int = 4096, max_senders: int = 16384
    ) -> None:
        self.window_ns = window_ns
        self.per_sender = per_sender
        self.max_senders = max_senders
        self._senders: OrderedDict[str, _Sender] = OrderedDict()
        self._watermark = 0  # for senders we forgot
        self._swept_at = 0

    def __len__(self) -> int:
        return sum(len(s.nonces) for s in self._senders.values())

    def check(self, sender: str, nonce: int, expiry_ns: int, now_ns: int) -> None:
        """Record `(sender, nonce)`, or ReplayError if it may be a replay. The caller has already
        refused envelopes that expired."""
        if expiry_ns > now_ns + self.window_ns:
            raise ReplayError(
                f"a signed envelope may live at most {self.window_ns / 1e9:g} s",
                path="options.expiry",
            )
        state = self._senders.get(sender)
        if state is None:
            if expiry_ns <= self._watermark:
                raise ReplayError("older than the replay window remembers", path="nonce")
            if len(self._senders) >= self.max_senders:
                self._forget_sender(now_ns)
            state = self._senders[sender] = _Sender(self._watermark)
        else:
            self._senders.move_to_end(sender)
            if nonce in state.nonces:
                raise ReplayError(f"nonce {nonce} was already used by {sender}", path="nonce")
            if expiry_ns <= state.watermark:
                raise ReplayError("older than the replay window remembers", path="nonce")
        nonces = state.nonces
        if len(nonces) >= self.per_sender:
            oldest = next(iter(nonces))
            state.watermark = max(state.watermark, nonces.pop(oldest))
        nonces[nonce] = expiry_ns

    def sweep(self, now_ns: int) -> int:
        """Forget nonces whose envelopes have expired (a replay of one is refused as expired);
        returns how many were dropped."""
        dropped = 0
        for sender in list(self._senders):
            nonces = self._senders[sender].nonces
            expired = [n for n, e in nonces.items() if e <= now_ns]
            for n in expired:
                del nonces[n]
            dropped += len(expired)
            if not nonces and self._senders[sender].watermark <= now_ns:
                del self._senders[sender]
        self._swept_at = now_ns
        return dropped

    def _forget_sender(self, now_ns: int) -> None:
        if now_ns - self._swept_at >= 1_000_000_000:  # a flood of new senders: sweep once a second
            self.sweep(now_ns)
        if len(self._senders) >= self.max_senders:
            _, state = self._senders.popitem(last=False)
            latest = max(state.nonces.values(), default=state.watermark)
            self._watermark = max(self._watermark, latest, state.watermark)
