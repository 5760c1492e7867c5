"""Capability chain verification, pure Python: the readable specification of `ucan_verify.pyx`.

A chain is presented as the token that is used (the leaf, `chain[0]`) plus its ancestors
(`proofs`: a mapping of id to bytes, or a list of bytes in any order). `chain[k]` is the k-th link
counted from the leaf; the root is the link with no proof. Error paths name the link that failed
(`chain[2].issuer`) and messages its short id.

The rules, in the order they are checked (each failure raises its own `SecurityError`, and both
twins raise the same class with the same message and path for the same input):
1. Size: the leaf plus every proof presented over `max_bytes` -> `TokenTooLarge`, before any
   decoding.
2. Known links: a leaf whose exact bytes are cached was verified before; skip to rule 6.
   A leaf that failed a rule that depends on its bytes alone (3 but a missing or mismatched
   proof, which is the presenter's fault; 4; 5) is remembered by id and refused again at the
   cost of one hash.
3. Walk, leaf to root: each link is decoded strictly (`MalformedToken`: garbage, a bad DID or
   path, not_before after expiry, an encoding that is not canonical) and its parent found among
   the cached links or the proofs (`BrokenChain` if missing or not hashing to its id). Links are
   counted as they are decoded: more than `max_depth` -> `ChainTooDeep` before any signature.
4. Structure, root to leaf, for every new link (`chain[k]` with parent `p`): `p` is a delegation,
   `chain[k].issuer == p.audience`, the subject is unchanged (`BrokenChain`); `p`'s depth
   allowance is not used up (`ChainTooDeep`); every capability and topic is covered by one of
   `p`'s, and `[not_before, expiry]` lies within `p`'s (`CapabilityEscalation`). The leaf is not
   a revocation. A depth limit `n` on a link allows at most `n` links below it; the tightest
   limit along the chain wins. All of this depends on the bytes only.
5. (new links only, after 6) Signatures, root-most first, each over `SIGNATURE_DOMAIN` + the
   link's unsigned canonical bytes, against its issuer's did:key (`SignatureError`). A link is
   cached as soon as its signature verifies: its validity does not depend on its descendants.
6. Per use (cached or not), cheapest first and before any signature: the leaf's time window with
   `skew` seconds of allowance either way (`NotYetValid`, `ExpiredError`; windows nest, so the
   leaf's is the chain's); the root issuer is one of `roots`, or has a `require` anchor valid now
   that covers the requested capability and topic (`UntrustedRoot`); no link is revoked by its
   own issuer or an ancestor's (`RevokedError`, naming the link nearest the root); the leaf's
   audience and issuer are the ones asked for, a `holder` (the sender) is the audience of a
   delegation leaf or the issuer of any other, an invocation is addressed to the `receiver`
   (`WrongAudience`, `WrongIssuer`); the requested capability is covered by the leaf's
   capabilities, the requested topic by its topics (invoke tokens grant no topics) -> else
   `CapabilityError`: deny by default.

Coverage is by whole path segments: `/dms/deployment` covers `/dms/deployment/bid`, not
`/dms/deploymentx`; `/` covers every path. A cached link holds its parent, so a chain stays
whole while its leaf is cached; the cache holds at most `cache_size` links, evicted by the clock
algorithm (a hit sets a reference bit; the hand clears bits until it finds an unreferenced link).
`roots`, `require` and `revoked` are the owner's containers, read on every call and never
written here: the owner (`nunet.ucan.TrustContext`) changes them in place and the next call sees
the change. One verifier belongs to one thread (the event loop's).
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import msgspec
import nacl.bindings
import nacl.exceptions
from blake3 import blake3

from nunet.crypto.did import public_key_from_did
from nunet.errors import (
    BrokenChain,
    CapabilityError,
    CapabilityEscalation,
    ChainTooDeep,
    ExpiredError,
    InvalidDID,
    LocalProtocolError,
    MalformedToken,
    NotYetValid,
    RevokedError,
    SecurityError,
    SignatureError,
    TokenTooLarge,
    UntrustedRoot,
    ValidationError,
    WrongAudience,
    WrongIssuer,
)

# `typing.TYPE_CHECKING`, not the bare name: a public bool would count as part of the API.
if typing.TYPE_CHECKING:
    from nunet.ucan.token import Token

DEFAULT_SKEW = 30.0
DEFAULT_MAX_DEPTH = 16
DEFAULT_MAX_BYTES = 16 * 1024
DEFAULT_CACHE_SIZE = 4096
REJECTED_SIZE = 1024
MAX_DEPTH = 1024
MAX_BYTES = 1 << 30
MAX_CACHE_SIZE = 1 << 24
SIGNATURE_BACKEND = "pynacl"

_SIGNATURE_ITEM = 66  # the last item of a signed token: c4 40 + 64 signature bytes

# capability, topic, audience, issuer, holder, receiver: what a use asks of the leaf.
_Request = tuple[str | None, str | None, str | None, str | None, str | None, str | None]
Anchors = Mapping[str, Sequence[tuple[bytes, "Token"]]]
Revoked = Mapping[bytes, "set[str] | frozenset[str]"]


@functools.cache
def _schema() -> ModuleType:
    # Imported on first use, not at import time: `nunet.ucan` imports this module (through the
    # selector), so importing `nunet.ucan.token` from here at load time would be circular.
    from nunet.ucan import token

    return token


@functools.cache
def _codec() -> tuple[msgspec.msgpack.Decoder[Token], msgspec.msgpack.Encoder]:
    return msgspec.msgpack.Decoder(_schema().Token), msgspec.msgpack.Encoder()


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if type(public_key) is not bytes or type(message) is not bytes or type(signature) is not bytes:
        raise LocalProtocolError("public_key, message and signature must be bytes")
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.CryptoError:
        return False
    return True


def decode_token(data: bytes, where: str = "token") -> Token:
    """A token from its canonical bytes, or `MalformedToken` naming the field (under `where`)."""
    if type(data) is not bytes:
        raise LocalProtocolError(f"a token must be bytes, not {type(data).__name__}")
    decoder, encoder = _codec()
    try:
        tok = decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec reports bad UTF-8 in a string as UnicodeDecodeError, not DecodeError.
        raise MalformedToken(f"not a token: {exc}", path=where) from None
    if encoder.encode(tok) != data:
        raise MalformedToken("not in canonical form", path=where)
    _check_did(tok.issuer, where, "issuer")
    _check_did(tok.subject, where, "subject")
    if tok.audience or tok.action not in ("broadcast", "revoke"):
        _check_did(tok.audience, where, "audience")
    _check_paths(tok.capabilities, where, "capabilities")
    _check_paths(tok.topics, where, "topics")
    if tok.not_before > tok.expiry:
        raise MalformedToken("not_before is after expiry", path=f"{where}.not_before")
    if tok.action == "revoke" and not tok.proofs:
        raise MalformedToken("a revocation must name the token it revokes", path=f"{where}.proofs")
    return tok


def _check_did(did: str, where: str, field: str) -> None:
    try:
        public_key_from_did(did)
    except InvalidDID as exc:
        raise MalformedToken(exc.message, path=f"{where}.{field}") from None


def _check_paths(paths: tuple[str, ...], where: str, field: str) -> None:
    is_path = _schema().is_path
    for i, path in enumerate(paths):
        if not is_path(path):
            raise MalformedToken(f"{path!r} is not a capability path", path=f"{where}.{field}[{i}]")


def _covered(wanted: str, granted: tuple[str, ...]) -> bool:
    for g in granted:
        if g == "/":
            if wanted.startswith("/"):
                return True
        elif wanted.startswith(g) and (len(wanted) == len(g) or wanted[len(g)] == "/"):
            return True
    return False


def _short(token_id: bytes) -> str:
    return token_id[:8].hex()


class Link:
    """A verified link: the decoded token, its id and bytes, and its place in the chain.
    Holding a leaf keeps its whole chain (`parent` ... `root`)."""

    __slots__ = ("_ref", "_root", "allowance", "depth", "id", "parent", "raw", "token")

    def __init__(
        self,
        token: Token,
        token_id: bytes,
        raw: bytes,
        parent: Link | None,
        depth: int,
        allowance: int,
    ) -> None:
        self.token = token
        self.id = token_id
        self.raw = raw
        self.parent = parent
        # None on a root link: a link naming itself would be a reference cycle for the GC.
        self._root = None if parent is None else parent.root
        self.depth = depth  # links from the root down to this one, both counted
        self.allowance = allowance  # how many more links may follow this one
        self._ref = True

    @property
    def root(self) -> Link:
        return self if self._root is None else self._root

    def __repr__(self) -> str:
        return f"<Link {_short(self.id)} {self.token.action} depth={self.depth}>"


def _seconds(now: object) -> float:
    if type(now) is float:
        value = now
    elif isinstance(now, int | float) and not isinstance(now, bool):
        try:
            value = float(now)
        except OverflowError:
            value = math.inf
    else:
        raise LocalProtocolError(f"now must be a number of seconds, not {type(now).__name__}")
    if not math.isfinite(value):
        raise LocalProtocolError("now must be a finite number of seconds")
    return value


def _optional_text(value: object, name: str) -> None:
    if value is not None and type(value) is not str:
        raise LocalProtocolError(f"{name} must be a string or None, not {type(value).__name__}")


def _proofs_size(proofs: object) -> int:
    values: Any
    if isinstance(proofs, list | tuple):
        values = proofs
    elif isinstance(proofs, Mapping):
        values = proofs.values()
    else:
        raise LocalProtocolError(
            "proofs must be a mapping of token id to token bytes, or a list of token bytes"
        )
    total = 0
    for value in values:
        if type(value) is not bytes:
            raise LocalProtocolError(f"a proof must be bytes, not {type(value).__name__}")
        total += len(value)
    return total


def _config(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"must be an integer in {low}..{high}", path=name)
    return value


class ChainVerifier:
    """Verifies capability chains against a trust context's containers, caching verified links.

    `roots`: DIDs trusted as root issuers. `require`: DID -> [(anchor id, anchor token)], outside
    issuers accepted as roots for what their anchor covers while it is valid. `revoked`: token
    id -> DIDs that revoked it (authority is checked against each chain).
    """

    def __init__(
        self,
        roots: set[str] | frozenset[str],
        require: Anchors,
        revoked: Revoked,
        *,
        skew: float = DEFAULT_SKEW,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_bytes: int = DEFAULT_MAX_BYTES,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if isinstance(skew, bool) or not isinstance(skew, int | float):
            raise ValidationError("must be a number of seconds", path="skew")
        try:
            seconds = float(skew)
        except OverflowError:
            seconds = math.inf
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValidationError("must be a finite number of seconds >= 0", path="skew")
        self._roots = roots
        self._require = require
        self._revoked = revoked
        self._skew = seconds
        self._max_depth = _config(max_depth, "max_depth", 1, MAX_DEPTH)
        self._max_bytes = _config(max_bytes, "max_bytes", 1, MAX_BYTES)
        self._cache_size = _config(cache_size, "cache_size", 1, MAX_CACHE_SIZE)
        schema = _schema()
        # The signed message is this + the token's bytes between its array header and its
        # signature item: the unsigned token's array has one item fewer (fixarray 0x90 | n).
        unsigned_items = len(schema.Token.__struct_fields__) - 1
        self._header = schema.SIGNATURE_DOMAIN + bytes((0x90 | unsigned_items,))
        self._by_id: dict[bytes, Link] = {}
        self._by_raw: dict[bytes, Link] = {}
        self._ring: list[Link] = []
        self._hand = 0
        self._rejected: dict[bytes, tuple[type[SecurityError], str, str | None]] = {}
        self.signatures_verified = 0
        self.links_decoded = 0
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def skew(self) -> float:
        return self._skew

    @property
    def max_depth(self) -> int:
        return self._max_depth

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def cache_size(self) -> int:
        return self._cache_size

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, token_id: object) -> bool:
        return token_id in self._by_id

    def clear(self) -> None:
        """Forget every verified and rejected link (the counters stay)."""
        self._by_id.clear()
        self._by_raw.clear()
        self._ring.clear()
        self._hand = 0
        self._rejected.clear()

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
        anchored: bool = True,
    ) -> Link:
        """The leaf's verified `Link` if the chain grants what is asked at time `now`, else the
        specific `SecurityError`.

        `audience`, `issuer`: the leaf's fields must be these. `holder`: the DID presenting the
        chain (a message's sender): a delegation must be addressed to it, an invocation or a
        broadcast issued by it. `receiver`: the DID verifying (us): an invocation must be
        addressed to it. `anchored=False` skips the trust-anchor rule only (for checking tokens
        we hold that are rooted elsewhere)."""
        if type(token) is not bytes:
            raise LocalProtocolError(f"a token must be bytes, not {type(token).__name__}")
        t = _seconds(now)
        _optional_text(capability, "capability")
        _optional_text(topic, "topic")
        _optional_text(audience, "audience")
        _optional_text(issuer, "issuer")
        _optional_text(holder, "holder")
        _optional_text(receiver, "receiver")
        size = len(token) + _proofs_size(proofs)
        if size > self._max_bytes:
            raise TokenTooLarge(
                f"{size} bytes of tokens, over the limit of {self._max_bytes}", path="chain"
            )
        link = self._by_raw.get(token)
        if link is None:
            return self._cold(
                token, proofs, t, (capability, topic, audience, issuer, holder, receiver), anchored
            )
        link._ref = True
        self.cache_hits += 1
        self._check(link, t, (capability, topic, audience, issuer, holder, receiver), anchored)
        return link

    # --- cold path --------------------------------------------------------------------------------

    def _cold(
        self,
        token: bytes,
        proofs: Mapping[bytes, bytes] | Sequence[bytes],
        now: float,
        request: _Request,
        anchored: bool,
    ) -> Link:
        self.cache_misses += 1
        leaf_id = blake3(token).digest()
        rejected = self._rejected.get(leaf_id)
        if rejected is not None:
            cls, message, path = rejected
            raise cls(message, path=path)
        new: list[tuple[Token, bytes, bytes]] = []
        raw, tid = token, leaf_id
        parent: Link | None = None
        index: Mapping[bytes, bytes] | None = None
        while True:
            tok = self._decode(raw, len(new), leaf_id)
            new.append((tok, tid, raw))
            if not tok.proofs or tok.action == "revoke":
                break
            tid = tok.proofs[0]
            cached = self._by_id.get(tid)
            if cached is not None:
                total = len(new) + cached.depth
                if total > self._max_depth:
                    raise self._static(
                        leaf_id,
                        ChainTooDeep(
                            f"{total} links, over the limit of {self._max_depth}", path="chain"
                        ),
                    )
                parent = cached
                break
            if len(new) >= self._max_depth:
                raise self._static(
                    leaf_id,
                    ChainTooDeep(f"more than {self._max_depth} links", path="chain"),
                )
            if index is None:
                index = self._index(proofs)
            raw = self._proof(index, tid, len(new) - 1, index is not proofs)
        for k in range(len(new) - 1, -1, -1):
            tok, tid, raw = new[k]
            parent = self._link(tok, tid, raw, parent, k, leaf_id)
        leaf = parent
        assert leaf is not None
        self._check(leaf, now, request, anchored)
        pending: list[Link] = []
        link: Link | None = leaf
        for _ in range(len(new)):
            assert link is not None
            pending.append(link)
            link = link.parent
        for k in range(len(pending) - 1, -1, -1):
            self._verify_signature(pending[k], k, leaf_id)
            self._insert(pending[k])
        return leaf

    def _static(self, leaf_id: bytes, exc: SecurityError) -> SecurityError:
        """Remembers a verdict that depends on the leaf's bytes alone, so it costs a hash next
        time; returns `exc` to raise."""
        if len(self._rejected) >= REJECTED_SIZE:
            del self._rejected[next(iter(self._rejected))]
        self._rejected[leaf_id] = (type(exc), exc.message, exc.path)
        return exc

    def _decode(self, raw: bytes, k: int, leaf_id: bytes) -> Token:
        self.links_decoded += 1
        try:
            return decode_token(raw, f"chain[{k}]")
        except MalformedToken as exc:
            raise self._static(leaf_id, exc) from None

    @staticmethod
    def _index(proofs: Mapping[bytes, bytes] | Sequence[bytes]) -> Mapping[bytes, bytes]:
        if isinstance(proofs, list | tuple):
            return {blake3(p).digest(): p for p in proofs}
        assert isinstance(proofs, Mapping)
        return proofs

    @staticmethod
    def _proof(index: Mapping[bytes, bytes], tid: bytes, k: int, hashed: bool) -> bytes:
        """The parent `tid` of `chain[k]`; `hashed`: `index` was built by hashing the proofs."""
        raw = index.get(tid)
        if raw is None:
            raise BrokenChain(
                f"its parent {_short(tid)} was not presented", path=f"chain[{k}].proofs"
            )
        if not hashed and blake3(raw).digest() != tid:
            raise BrokenChain(
                f"the proof presented as {_short(tid)} does not hash to that id",
                path=f"chain[{k}].proofs",
            )
        return raw

    def _link(
        self,
        tok: Token,
        tid: bytes,
        raw: bytes,
        parent: Link | None,
        k: int,
        leaf_id: bytes,
    ) -> Link:
        """Link `chain[k]` under `parent`, checking every rule that depends on bytes alone."""
        if k == 0 and tok.action == "revoke":
            raise self._static(
                leaf_id,
                CapabilityError(
                    f"token {_short(tid)}: a revocation grants nothing", path="chain[0].action"
                ),
            )
        if parent is None:
            limit = self._max_depth if tok.depth is None else min(tok.depth, self._max_depth)
            return Link(tok, tid, raw, None, 1, limit)
        error = self._join_error(tok, tid, parent, k)
        if error is not None:
            raise self._static(leaf_id, error)
        allowance = parent.allowance - 1
        if tok.depth is not None and tok.depth < allowance:
            allowance = tok.depth
        return Link(tok, tid, raw, parent, parent.depth + 1, allowance)

    @staticmethod
    def _join_error(tok: Token, tid: bytes, parent: Link, k: int) -> SecurityError | None:
        p = parent.token
        at = f"chain[{k}]"
        name = f"token {_short(tid)}"
        if p.action != "delegate":
            return BrokenChain(
                f"{name}: its parent {_short(parent.id)} is a {p.action} token, not a delegation",
                path=f"{at}.proofs",
            )
        if tok.issuer != p.audience:
            return BrokenChain(
                f"{name}: issuer {tok.issuer} is not its parent's audience {p.audience}",
                path=f"{at}.issuer",
            )
        if tok.subject != p.subject:
            return BrokenChain(
                f"{name}: subject {tok.subject} differs from its parent's {p.subject}",
                path=f"{at}.subject",
            )
        if parent.allowance < 1:
            return ChainTooDeep(
                f"{name}: the depth limit of its chain allows no delegation below "
                f"{_short(parent.id)}",
                path=at,
            )
        for i, cap in enumerate(tok.capabilities):
            if not _covered(cap, p.capabilities):
                return CapabilityEscalation(
                    f"{name}: capability {cap} is not granted by its parent",
                    path=f"{at}.capabilities[{i}]",
                )
        for i, topic in enumerate(tok.topics):
            if not _covered(topic, p.topics):
                return CapabilityEscalation(
                    f"{name}: topic {topic} is not granted by its parent",
                    path=f"{at}.topics[{i}]",
                )
        if tok.not_before < p.not_before:
            return CapabilityEscalation(
                f"{name}: valid from {tok.not_before}, before its parent ({p.not_before})",
                path=f"{at}.not_before",
            )
        if tok.expiry > p.expiry:
            return CapabilityEscalation(
                f"{name}: valid until {tok.expiry}, after its parent ({p.expiry})",
                path=f"{at}.expiry",
            )
        return None

    def _verify_signature(self, link: Link, k: int, leaf_id: bytes) -> None:
        tok = link.token
        self.signatures_verified += 1
        message = self._header + link.raw[1:-_SIGNATURE_ITEM]
        if not verify_signature(public_key_from_did(tok.issuer), message, tok.signature):
            raise self._static(
                leaf_id,
                SignatureError(
                    f"token {_short(link.id)}: signature does not verify against its issuer "
                    f"{tok.issuer}",
                    path=f"chain[{k}].signature",
                ),
            )

    def _insert(self, link: Link) -> None:
        if link.id in self._by_id:
            return
        ring = self._ring
        if len(ring) < self._cache_size:
            ring.append(link)
        else:
            hand = self._hand
            while ring[hand]._ref:
                ring[hand]._ref = False
                hand = (hand + 1) % self._cache_size
            victim = ring[hand]
            del self._by_id[victim.id]
            del self._by_raw[victim.raw]
            ring[hand] = link
            self._hand = (hand + 1) % self._cache_size
        self._by_id[link.id] = link
        self._by_raw[link.raw] = link

    # --- every use --------------------------------------------------------------------------------

    def _check(
        self,
        leaf: Link,
        now: float,
        request: _Request,
        anchored: bool,
    ) -> None:
        capability, topic, audience, issuer, holder, receiver = request
        tok = leaf.token
        name = f"token {_short(leaf.id)}"
        if now + self._skew < tok.not_before:
            raise NotYetValid(
                f"{name}: not valid before {tok.not_before} (clock skew allowed: {self._skew:g} s)",
                path="chain[0].not_before",
            )
        if now - self._skew >= tok.expiry:
            raise ExpiredError(
                f"{name}: expired at {tok.expiry} (clock skew allowed: {self._skew:g} s)",
                path="chain[0].expiry",
            )
        if anchored:
            root = leaf.root
            root_issuer = root.token.issuer
            if root_issuer not in self._roots and not self._required(
                root_issuer, now, capability, topic
            ):
                raise UntrustedRoot(
                    f"token {_short(root.id)}: root issuer {root_issuer} is not a trust anchor"
                    + ("" if root_issuer not in self._require else " for this request"),
                    path=f"chain[{leaf.depth - 1}].issuer",
                )
        if self._revoked:
            self._check_revoked(leaf)
        if audience is not None and tok.audience != audience:
            raise WrongAudience(
                f"{name}: addressed to {tok.audience or '(no one)'}, not {audience}",
                path="chain[0].audience",
            )
        if issuer is not None and tok.issuer != issuer:
            raise WrongIssuer(
                f"{name}: issued by {tok.issuer}, not {issuer}", path="chain[0].issuer"
            )
        if holder is not None:
            if tok.action == "delegate":
                if tok.audience != holder:
                    raise WrongAudience(
                        f"{name}: a delegation to {tok.audience}, presented by {holder}",
                        path="chain[0].audience",
                    )
            elif tok.issuer != holder:
                raise WrongIssuer(
                    f"{name}: issued by {tok.issuer}, presented by {holder}",
                    path="chain[0].issuer",
                )
        if receiver is not None and tok.action == "invoke" and tok.audience != receiver:
            raise WrongAudience(
                f"{name}: an invocation of {tok.audience}, received by {receiver}",
                path="chain[0].audience",
            )
        if capability is not None and not _covered(capability, tok.capabilities):
            raise CapabilityError(
                f"{name}: no capability covers {capability}", path="chain[0].capabilities"
            )
        if topic is not None:
            if tok.action == "invoke":
                raise CapabilityError(
                    f"{name}: an invoke token grants no topics", path="chain[0].action"
                )
            if not _covered(topic, tok.topics):
                raise CapabilityError(f"{name}: no topic covers {topic}", path="chain[0].topics")

    def _required(self, did: str, now: float, capability: str | None, topic: str | None) -> bool:
        anchors = self._require.get(did)
        if not anchors:
            return False
        for anchor_id, anchor in anchors:
            if now + self._skew < anchor.not_before or now - self._skew >= anchor.expiry:
                continue
            revokers = self._revoked.get(anchor_id)
            if revokers and anchor.issuer in revokers:
                continue
            if capability is not None and not _covered(capability, anchor.capabilities):
                continue
            if topic is not None and not _covered(topic, anchor.topics):
                continue
            return True
        return False

    def _check_revoked(self, leaf: Link) -> None:
        chain: list[Link] = []
        link: Link | None = leaf
        while link is not None:
            chain.append(link)
            link = link.parent
        issuers: list[str] = []
        for k in range(len(chain) - 1, -1, -1):
            link = chain[k]
            issuers.append(link.token.issuer)
            revokers = self._revoked.get(link.id)
            if revokers:
                for who in issuers:
                    if who in revokers:
                        raise RevokedError(
                            f"token {_short(link.id)}: revoked by {who}", path=f"chain[{k}]"
                        )
