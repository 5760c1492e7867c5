"""Which capability tokens an outgoing envelope carries.

For a capability (a behaviour path) and, on broadcasts, a topic, `CapabilityProvider.tokens`
returns the chain to attach, leaf first:
1. a provide anchor of the trust context whose leaf is a delegation to our DID covering the
   request (the one valid longest), sent as leaf + proofs, presented by us (holder = us);
2. else, for a child actor, its parent's chain for the request plus a delegation from the parent
   to the child (issued here, since the parent's key is in this process);
3. else a self-issued root delegation (issuer = audience = us, capabilities `/`, topics `/`),
   renewed before it expires: accepted by receivers that trust us as a root.
Choices are cached per request for `recheck_s` seconds (so a new anchor is picked up soon
without scanning the anchors per message); `refresh()` forgets them at once.
"""

from __future__ import annotations

from nunet.crypto.keys import KeyPair
from nunet.errors import SecurityError
from nunet.ucan import TrustContext, covers, decode_token, issue
from nunet.ucan.token import Token

ROOT_LIFETIME_S = 3600
RENEW_BEFORE_S = 300  # a token is replaced once it has less than this left
BACKDATE_S = 60  # not_before in the past: receivers' clocks may lag ours


class CapabilityProvider:
    def __init__(
        self,
        trust: TrustContext,
        keypair: KeyPair,
        *,
        parent: CapabilityProvider | None = None,
        lifetime_s: int = ROOT_LIFETIME_S,
        recheck_s: float = 5.0,
    ) -> None:
        self.trust = trust
        self.keypair = keypair
        self.parent = parent
        self.lifetime_s = lifetime_s
        self.recheck_s = recheck_s
        self._cache: dict[tuple[str | None, str | None], tuple[float, tuple[bytes, ...]]] = {}
        self._root: tuple[int, bytes] | None = None  # (expiry, token)
        self._delegations: dict[bytes, tuple[int, bytes]] = {}  # parent leaf -> (expiry, token)

    def refresh(self) -> None:
        self._cache.clear()

    def tokens(self, capability: str | None, topic: str | None, now: float) -> tuple[bytes, ...]:
        key = (capability, topic)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        chain, expiry = self._choose(capability, topic, now)
        self._cache[key] = (min(now + self.recheck_s, expiry - RENEW_BEFORE_S), chain)
        return chain

    def _choose(
        self, capability: str | None, topic: str | None, now: float
    ) -> tuple[tuple[bytes, ...], int]:
        best: tuple[int, tuple[bytes, ...]] | None = None
        did = self.keypair.did
        for leaf, proofs in self.trust.provide_anchors():
            tok = decode_token(leaf)
            if (
                tok.action == "delegate"
                and tok.audience == did
                and tok.not_before <= now + BACKDATE_S
                and tok.expiry > now + RENEW_BEFORE_S
                and _grants(tok, capability, topic)
                and (best is None or tok.expiry > best[0])
            ):
                best = (tok.expiry, (leaf, *proofs))
        if best is not None:
            return best[1], best[0]
        if self.parent is not None:
            chain = self.parent.tokens(capability, topic, now)
            if chain:
                expiry, token = self._delegation(chain[0], now)
                return (token, *chain), expiry
        expiry, token = self._self_root(now)
        return (token,), expiry

    def _self_root(self, now: float) -> tuple[int, bytes]:
        if self._root is None or self._root[0] - RENEW_BEFORE_S <= now:
            did = self.keypair.did
            expiry = int(now) + self.lifetime_s
            token = issue(
                self.keypair,
                action="delegate",
                subject=did,
                audience=did,
                capabilities=("/",),
                topics=("/",),
                not_before=max(0, int(now) - BACKDATE_S),
                expiry=expiry,
            )
            self._root = (expiry, token)
        return self._root

    def _delegation(self, parent_leaf: bytes, now: float) -> tuple[int, bytes]:
        """A delegation of everything `parent_leaf` grants, from the parent to us."""
        cached = self._delegations.get(parent_leaf)
        if cached is not None and cached[0] - RENEW_BEFORE_S > now:
            return cached
        parent = decode_token(parent_leaf)
        if parent.action != "delegate":
            raise SecurityError("the parent's chain ends in no delegation", path="capabilities")
        assert self.parent is not None
        expiry = min(parent.expiry, int(now) + self.lifetime_s)
        token = issue(
            self.parent.keypair,
            action="delegate",
            subject=parent.subject,
            audience=self.keypair.did,
            capabilities=parent.capabilities,
            topics=parent.topics,
            not_before=min(expiry, max(parent.not_before, int(now) - BACKDATE_S)),
            expiry=expiry,
            parent=parent_leaf,
        )
        if len(self._delegations) >= 64:
            self._delegations.clear()
        self._delegations[parent_leaf] = (expiry, token)
        return expiry, token


def _grants(tok: Token, capability: str | None, topic: str | None) -> bool:
    if capability is not None and not any(covers(c, capability) for c in tok.capabilities):
        return False
    return topic is None or any(covers(t, topic) for t in tok.topics)
