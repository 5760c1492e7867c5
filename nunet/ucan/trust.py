"""A trust context: what one node (or one user context) trusts, and the verifier that uses it.

- roots: DIDs trusted as root issuers of any chain.
- require anchors: root tokens issued by an outside DID X (DMS: "side chains"). Holding one
  makes chains rooted at X acceptable, but only for what the anchor covers (its capabilities and
  topics) while it is valid and not revoked.
- provide anchors: chains this context holds and presents to others (rooted elsewhere), checked
  when added (signatures, structure, time; not our roots: they are someone else's).
- revocations: signed `revoke` tokens naming a token id. One takes effect on a chain only when
  its issuer issued the revoked link or one of that link's ancestors; it then invalidates every
  token built on the link. Kept until the revocation's expiry (see `gc`).

The verifier (`self.verifier`) reads the containers below on every call; they are only ever
changed in place, so an anchor or revocation added here applies to the very next message, and
the cache of verified links (which holds no trust decision) survives every change.
With a `CapabilityStore` (the context's file), every change is written through at once, and
`reload()` re-reads the file after another process (`nunet cap`) changed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from nunet.crypto.did import public_key_from_did
from nunet.errors import (
    ExpiredError,
    InvalidDID,
    MalformedToken,
    NotFound,
    SignatureError,
    StoreError,
    ValidationError,
)
from nunet.ucan import chain
from nunet.ucan.store import CapabilityStore
from nunet.ucan.token import Token, signed_message, token_id

if TYPE_CHECKING:
    from nunet.ucan.chain import Link


class TrustContext:
    """Anchors and revocations of one capability context, with its chain verifier."""

    def __init__(
        self,
        roots: Iterable[str] = (),
        *,
        did: str | None = None,
        store: CapabilityStore | None = None,
        skew: float = chain.DEFAULT_SKEW,
        max_depth: int = chain.DEFAULT_MAX_DEPTH,
        max_bytes: int = chain.DEFAULT_MAX_BYTES,
        cache_size: int = chain.DEFAULT_CACHE_SIZE,
    ) -> None:
        if did is not None:
            _check_did(did, "did")
        self.did = did
        self._store = store
        self._roots: set[str] = set()
        self._require: dict[str, list[tuple[bytes, Token]]] = {}
        self._require_raw: dict[bytes, bytes] = {}
        self._provide: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}
        self._revoked: dict[bytes, set[str]] = {}
        # revocation id -> (target id, revoker, expiry, bytes)
        self._revocations: dict[bytes, tuple[bytes, str, int, bytes]] = {}
        self.verifier = chain.ChainVerifier(
            self._roots,
            self._require,
            self._revoked,
            skew=skew,
            max_depth=max_depth,
            max_bytes=max_bytes,
            cache_size=cache_size,
        )
        if store is not None:
            self._load()
        for root in roots:
            self.add_root(root)

    def __repr__(self) -> str:
        return (
            f"<TrustContext roots={len(self._roots)} require={len(self._require_raw)} "
            f"provide={len(self._provide)} revocations={len(self._revocations)}>"
        )

    @property
    def store(self) -> CapabilityStore | None:
        """The file this context is kept in, if any."""
        return self._store

    # --- the hot path -----------------------------------------------------------------------------

    def verify(
        self,
        token: bytes,
        proofs: Mapping[bytes, bytes] | Sequence[bytes],
        now: float,
        *,
        capability: str | None = None,
        topic: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        holder: str | None = None,
        receiver: str | None = None,
    ) -> Link:
        """`nunet.ucan.verify_chain` under this context."""
        return self.verifier.verify(
            token,
            proofs,
            now,
            capability=capability,
            topic=topic,
            audience=audience,
            issuer=issuer,
            holder=holder,
            receiver=receiver,
        )

    # --- roots ------------------------------------------------------------------------------------

    @property
    def roots(self) -> frozenset[str]:
        return frozenset(self._roots)

    def add_root(self, did: str) -> None:
        _check_did(did, "root")
        if did in self._roots:
            return
        if self._store is not None:
            self._store.put_root(did)
        self._roots.add(did)

    def remove_root(self, did: str) -> None:
        if did not in self._roots:
            raise NotFound(f"{did} is not a root anchor")
        if self._store is not None:
            self._store.delete_root(did)
        self._roots.discard(did)

    # --- require anchors --------------------------------------------------------------------------

    def add_require(self, token: bytes, now: float) -> bytes:
        """Accept chains rooted at `token`'s issuer for what `token` covers; returns its id.
        `token` must be a valid root delegation (no proofs), checked here."""
        tok = chain.decode_token(token)
        if tok.action != "delegate" or tok.proofs:
            raise ValidationError(
                "a require anchor is a root delegation (action delegate, no proofs)",
                path="token",
            )
        self.verifier.verify(token, (), now, anchored=False)
        tid = token_id(token)
        if tid in self._require_raw:
            return tid
        if self._store is not None:
            self._store.put_require(token)
        self._require_raw[tid] = token
        self._require.setdefault(tok.issuer, []).append((tid, tok))
        return tid

    def remove_require(self, tid: bytes) -> None:
        raw = self._require_raw.get(tid)
        if raw is None:
            raise NotFound(f"no require anchor {tid.hex()}")
        if self._store is not None:
            self._store.delete_require(tid)
        self._drop_require(tid, raw)

    def require_anchors(self) -> list[bytes]:
        return list(self._require_raw.values())

    def _drop_require(self, tid: bytes, raw: bytes) -> None:
        del self._require_raw[tid]
        issuer = chain.decode_token(raw).issuer
        kept = [entry for entry in self._require.get(issuer, ()) if entry[0] != tid]
        if kept:
            self._require[issuer] = kept
        else:
            self._require.pop(issuer, None)

    # --- provide anchors --------------------------------------------------------------------------

    def add_provide(self, token: bytes, proofs: Sequence[bytes], now: float) -> bytes:
        """Keep a chain this context presents to others; returns the leaf's id. Checked now
        (signatures, structure, time, addressed to `did` when set), not against our roots."""
        proofs = tuple(proofs)
        self.verifier.verify(token, proofs, now, audience=self.did, anchored=False)
        tid = token_id(token)
        if tid in self._provide:
            return tid
        if self._store is not None:
            self._store.put_provide(token, proofs)
        self._provide[tid] = (token, proofs)
        return tid

    def remove_provide(self, tid: bytes) -> None:
        if tid not in self._provide:
            raise NotFound(f"no provide anchor {tid.hex()}")
        if self._store is not None:
            self._store.delete_provide(tid)
        del self._provide[tid]

    def provide_anchors(self) -> list[tuple[bytes, tuple[bytes, ...]]]:
        return list(self._provide.values())

    # --- revocations ------------------------------------------------------------------------------

    def add_revocation(self, token: bytes, now: float) -> bytes:
        """Check a signed revocation and apply it from the next verification on; returns the id
        of the token it revokes. Whether its issuer may revoke that token is decided per chain
        (the revoked link's issuer or an ancestor's), since the target may not be known yet."""
        tok = chain.decode_token(token)
        if tok.action != "revoke":
            raise MalformedToken(f"a {tok.action} token is not a revocation", path="token.action")
        if not chain.verify_signature(
            public_key_from_did(tok.issuer), signed_message(token), tok.signature
        ):
            raise SignatureError(
                f"revocation {token_id(token)[:8].hex()}: signature does not verify against "
                f"its issuer {tok.issuer}",
                path="token.signature",
            )
        if now - self.verifier.skew >= tok.expiry:
            raise ExpiredError(
                f"revocation {token_id(token)[:8].hex()} expired at {tok.expiry}",
                path="token.expiry",
            )
        rid = token_id(token)
        target = tok.proofs[0]
        if rid not in self._revocations:
            if self._store is not None:
                self._store.put_revocation(token)
            self._apply_revocation(rid, tok, token)
        return target

    def is_revoked(self, tid: bytes) -> bool:
        """Whether some revocation names `tid` (whoever issued it)."""
        return tid in self._revoked

    def revocations(self) -> list[bytes]:
        return [entry[3] for entry in self._revocations.values()]

    def _apply_revocation(self, rid: bytes, tok: Token, raw: bytes) -> None:
        target = tok.proofs[0]
        self._revocations[rid] = (target, tok.issuer, tok.expiry, raw)
        self._revoked.setdefault(target, set()).add(tok.issuer)

    # --- upkeep -----------------------------------------------------------------------------------

    def gc(self, now: float) -> int:
        """Drop revocations and anchors that expired more than the clock skew ago (the tokens
        they are about are dead by then); returns how many were dropped."""
        dead = now - self.verifier.skew
        with self._store.edit() if self._store is not None else contextlib.nullcontext():
            return self._gc(dead)

    def _gc(self, dead: float) -> int:
        dropped = 0
        for rid, (_, _, expiry, _) in list(self._revocations.items()):
            if expiry <= dead:
                if self._store is not None:
                    self._store.delete_revocation(rid)
                self._forget_revocation(rid)
                dropped += 1
        for tid, raw in list(self._require_raw.items()):
            if chain.decode_token(raw).expiry <= dead:
                if self._store is not None:
                    self._store.delete_require(tid)
                self._drop_require(tid, raw)
                dropped += 1
        for tid, (raw, _) in list(self._provide.items()):
            if chain.decode_token(raw).expiry <= dead:
                self.remove_provide(tid)
                dropped += 1
        return dropped

    def _forget_revocation(self, rid: bytes) -> None:
        target = self._revocations.pop(rid)[0]
        still = {i for t, i, _, _ in self._revocations.values() if t == target}
        if still:
            self._revoked[target] = still
        else:
            self._revoked.pop(target, None)

    def reload(self) -> None:
        """Re-read anchors and revocations from the store (after another process changed them).
        A store that does not read leaves this context as it was (StoreError)."""
        if self._store is None:
            return
        self._store.reload()
        self._load()

    def _load(self) -> None:
        """Replace the containers' contents with the store's; everything is decoded before
        anything is changed. In place: the verifier holds these very containers."""
        assert self._store is not None
        requires = [(raw, self._stored(raw, "require")) for raw in self._store.requires()]
        provides = self._store.provides()
        for raw, _ in provides:
            self._stored(raw, "provide")
        revocations = [(raw, self._stored(raw, "revoke")) for raw in self._store.revocations()]
        for _, tok in revocations:
            if tok.action != "revoke":
                raise StoreError(
                    f"{self._store.path}: a {tok.action} token is stored as a revocation"
                )
        self._roots.clear()
        self._require.clear()
        self._require_raw.clear()
        self._provide.clear()
        self._revoked.clear()
        self._revocations.clear()
        self._roots.update(self._store.roots())
        for raw, tok in requires:
            tid = token_id(raw)
            self._require_raw[tid] = raw
            self._require.setdefault(tok.issuer, []).append((tid, tok))
        for raw, proofs in provides:
            self._provide[token_id(raw)] = (raw, proofs)
        for raw, tok in revocations:
            self._apply_revocation(token_id(raw), tok, raw)

    def _stored(self, raw: bytes, kind: str) -> Token:
        try:
            return chain.decode_token(raw)
        except MalformedToken as exc:
            where = "" if self._store is None else f"{self._store.path}: "
            raise StoreError(
                f"{where}stored {kind} token {token_id(raw).hex()} does not decode: {exc}"
            ) from exc


def _check_did(did: object, name: str) -> None:
    if not isinstance(did, str):
        raise ValidationError("must be a DID string", path=name)
    try:
        public_key_from_did(did)
    except InvalidDID as exc:
        raise ValidationError(exc.message, path=name) from None
