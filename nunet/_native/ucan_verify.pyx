# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Capability chain verification, compiled. Same rules, order, errors and messages as the
pure-Python twin `nunet/_native/_reference/ucan_verify.py`, which is the specification: read it
first.

Where the time goes, and why the code is shaped so:
- Cold (a link never seen): one Ed25519 verification per new link (~55-60 us) dwarfs the rest
  (strict msgspec decode + canonical re-encode + blake3 + DID lookup, ~3 us). Signatures are
  checked by calling libsodium's `crypto_sign_verify_detached` through a C function pointer, on
  the signed bytes sliced in place (domain + header copied once into one buffer): no Python call,
  no `signature + message` concatenation, no cffi marshalling. The libsodium is the one PyNaCl
  ships (`nacl/_sodium.abi3.so` exports the symbol); its address comes from ctypes once at import,
  so nothing is linked at build time and a wheel runs wherever PyNaCl does. PyNaCl's import runs
  `sodium_init`. If the symbol cannot be found the module falls back to `nacl.bindings`
  (`SIGNATURE_BACKEND` says which).
- Warm (the leaf's bytes are cached): a dict lookup on the leaf's bytes (siphash on a fresh bytes
  object, ~0.2 us; blake3 through its Python binding costs ~0.8 us, which is why the front index
  is keyed on the bytes, and equal bytes mean an equal blake3 id), then the per-use rule on
  fields copied into the `Link` as C values when it was built: time window (doubles), root in
  `roots` (a set lookup on a str with a cached hash), `revoked` (skipped when empty), audience and
  issuer (pointer-equal strs in the common case), capability coverage (tail match on the path).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY, isfinite
from libc.stdint cimport uintptr_t
from libc.string cimport memcpy

from collections.abc import Mapping

import msgspec
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
    SignatureError,
    TokenTooLarge,
    UntrustedRoot,
    ValidationError,
    WrongAudience,
    WrongIssuer,
)

DEFAULT_SKEW = 30.0
DEFAULT_MAX_DEPTH = 16
DEFAULT_MAX_BYTES = 16 * 1024
DEFAULT_CACHE_SIZE = 4096
REJECTED_SIZE = 1024
MAX_DEPTH = 1024
MAX_BYTES = 1 << 30
MAX_CACHE_SIZE = 1 << 24

cdef Py_ssize_t _SIGNATURE_ITEM = 66  # c4 40 + 64 signature bytes, the last item of a token
# A link's action as a C int, for the per-use checks.
cdef int _INVOKE = 0
cdef int _DELEGATE = 1
cdef dict _ACTION_CODES = {"invoke": _INVOKE, "delegate": _DELEGATE, "broadcast": 2, "revoke": 3}


# --- libsodium ------------------------------------------------------------------------------------

ctypedef int (*_sign_verify_fn)(
    const unsigned char *sig,
    const unsigned char *m,
    unsigned long long mlen,
    const unsigned char *pk,
) noexcept nogil

cdef _sign_verify_fn _sodium_verify = NULL


cdef void _bind_libsodium():
    global _sodium_verify
    try:
        import ctypes

        import nacl._sodium
        import nacl.bindings  # noqa: F401  (runs sodium_init)

        lib = ctypes.CDLL(nacl._sodium.__file__)
        address = ctypes.cast(lib.crypto_sign_verify_detached, ctypes.c_void_p).value
    except (ImportError, OSError, AttributeError):
        return
    if address:
        _sodium_verify = <_sign_verify_fn><uintptr_t>address


_bind_libsodium()
SIGNATURE_BACKEND = "libsodium-direct" if _sodium_verify != NULL else "pynacl"


cdef bint _verify_parts(
    bytes public_key, bytes head, const unsigned char *body, Py_ssize_t body_len, bytes signature
) except -1:
    """Ed25519 check of `head + body` (body: a slice of some bytes, not copied by the caller)."""
    if PyBytes_GET_SIZE(public_key) != 32 or PyBytes_GET_SIZE(signature) != 64:
        return False
    cdef Py_ssize_t head_len = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t total = head_len + body_len
    cdef unsigned char *buf
    cdef int rc
    if _sodium_verify == NULL:
        import nacl.bindings
        import nacl.exceptions

        try:
            nacl.bindings.crypto_sign_open(signature + head + body[:body_len], public_key)
        except nacl.exceptions.CryptoError:
            return False
        return True
    buf = <unsigned char *>PyMem_Malloc(total if total > 0 else 1)
    if buf == NULL:
        raise MemoryError()
    memcpy(buf, PyBytes_AS_STRING(head), head_len)
    memcpy(buf + head_len, body, body_len)
    rc = _sodium_verify(
        <const unsigned char *>PyBytes_AS_STRING(signature),
        buf,
        <unsigned long long>total,
        <const unsigned char *>PyBytes_AS_STRING(public_key),
    )
    PyMem_Free(buf)
    return rc == 0


def verify_signature(public_key, message, signature):
    """Whether `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if type(public_key) is not bytes or type(message) is not bytes or type(signature) is not bytes:
        raise LocalProtocolError("public_key, message and signature must be bytes")
    return _verify_parts(
        public_key, b"", <const unsigned char *>PyBytes_AS_STRING(message),
        PyBytes_GET_SIZE(message), signature,
    )


# --- decoding -------------------------------------------------------------------------------------

cdef object _decoder = None
cdef object _encoder = None
cdef object _is_path = None
cdef bytes _header = None


cdef void _load_schema() except *:
    # On first use, not at import time: `nunet.ucan` imports this module (through the
    # selector), so importing `nunet.ucan.token` from here at load time would be circular.
    global _decoder, _encoder, _is_path, _header
    if _decoder is not None:
        return
    from nunet.ucan import token

    _encoder = msgspec.msgpack.Encoder()
    _is_path = token.is_path
    # The unsigned token's array has one item fewer (fixarray header 0x90 | n).
    _header = token.SIGNATURE_DOMAIN + bytes((0x90 | (len(token.Token.__struct_fields__) - 1),))
    _decoder = msgspec.msgpack.Decoder(token.Token)


def decode_token(data, where="token"):
    """A token from its canonical bytes, or `MalformedToken` naming the field (under `where`)."""
    if type(data) is not bytes:
        raise LocalProtocolError(f"a token must be bytes, not {type(data).__name__}")
    _load_schema()
    try:
        tok = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec reports bad UTF-8 in a string as UnicodeDecodeError, not DecodeError.
        raise MalformedToken(f"not a token: {exc}", path=where) from None
    if _encoder.encode(tok) != data:
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


cdef _check_did(did, where, field):
    try:
        public_key_from_did(did)
    except InvalidDID as exc:
        raise MalformedToken(exc.message, path=f"{where}.{field}") from None


cdef _check_paths(tuple paths, where, field):
    cdef Py_ssize_t i
    for i in range(len(paths)):
        if not _is_path(paths[i]):
            raise MalformedToken(
                f"{paths[i]!r} is not a capability path", path=f"{where}.{field}[{i}]"
            )


cdef inline bint _covered(str wanted, tuple granted):
    cdef str g
    cdef Py_ssize_t n
    for g in granted:
        n = len(g)
        if n == 1 and g[0] == u"/":
            if len(wanted) >= 1 and wanted[0] == u"/":
                return True
        elif len(wanted) >= n and wanted.startswith(g) and (len(wanted) == n or wanted[n] == u"/"):
            return True
    return False


cdef inline str _short(bytes token_id):
    return token_id[:8].hex()


# --- links ----------------------------------------------------------------------------------------

cdef class Link:
    """A verified link: the decoded token, its id and bytes, and its place in the chain.
    Holding a leaf keeps its whole chain (`parent` ... `root`)."""

    cdef readonly object token
    cdef readonly bytes id
    cdef readonly bytes raw
    cdef readonly Link parent
    # None on a root link: a link naming itself would be a reference cycle for the GC.
    cdef Link _root
    cdef readonly int depth  # links from the root down to this one, both counted
    cdef readonly int allowance  # how many more links may follow this one
    # What every use reads, copied out of the token once.
    cdef int action
    cdef str issuer
    cdef str audience
    cdef tuple capabilities
    cdef tuple topics
    cdef double not_before
    cdef double expiry
    cdef bint ref

    @property
    def root(self):
        return self if self._root is None else self._root

    def __repr__(self):
        return f"<Link {_short(self.id)} {self.token.action} depth={self.depth}>"


cdef Link _new_link(object tok, bytes tid, bytes raw, Link parent, int depth, int allowance):
    cdef Link link = Link.__new__(Link)
    link.token = tok
    link.id = tid
    link.raw = raw
    link.parent = parent
    link._root = None if parent is None else (parent if parent._root is None else parent._root)
    link.depth = depth
    link.allowance = allowance
    link.action = _ACTION_CODES[tok.action]
    link.issuer = tok.issuer
    link.audience = tok.audience
    link.capabilities = tok.capabilities
    link.topics = tok.topics
    link.not_before = tok.not_before
    link.expiry = tok.expiry
    link.ref = True
    return link


# --- argument checks ------------------------------------------------------------------------------

cdef inline double _seconds(object now) except? -1.0:
    cdef double value
    if type(now) is float:
        value = <double>now
    elif isinstance(now, (int, float)) and not isinstance(now, bool):
        try:
            value = float(now)
        except OverflowError:
            value = INFINITY
    else:
        raise LocalProtocolError(f"now must be a number of seconds, not {type(now).__name__}")
    if not isfinite(value):
        raise LocalProtocolError("now must be a finite number of seconds")
    return value


cdef inline int _optional_text(object value, str name) except -1:
    if value is not None and type(value) is not str:
        raise LocalProtocolError(f"{name} must be a string or None, not {type(value).__name__}")
    return 0


cdef Py_ssize_t _proofs_size(object proofs) except -1:
    cdef Py_ssize_t total = 0
    if isinstance(proofs, (list, tuple)):
        values = proofs
    elif type(proofs) is dict or isinstance(proofs, Mapping):
        values = proofs.values()
    else:
        raise LocalProtocolError(
            "proofs must be a mapping of token id to token bytes, or a list of token bytes"
        )
    for value in values:
        if type(value) is not bytes:
            raise LocalProtocolError(f"a proof must be bytes, not {type(value).__name__}")
        total += PyBytes_GET_SIZE(value)
    return total


cdef Py_ssize_t _config(object value, str name, Py_ssize_t low, Py_ssize_t high) except -1:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"must be an integer in {low}..{high}", path=name)
    return value


# --- the verifier ---------------------------------------------------------------------------------

cdef class ChainVerifier:
    """Verifies capability chains against a trust context's containers, caching verified links.

    `roots`: DIDs trusted as root issuers. `require`: DID -> [(anchor id, anchor token)], outside
    issuers accepted as roots for what their anchor covers while it is valid. `revoked`: token
    id -> DIDs that revoked it (authority is checked against each chain).
    """

    cdef object _roots
    cdef object _require
    cdef object _revoked
    cdef double _skew
    cdef Py_ssize_t _max_depth
    cdef Py_ssize_t _max_bytes
    cdef Py_ssize_t _cache_size
    cdef dict _by_id
    cdef dict _by_raw
    cdef list _ring
    cdef Py_ssize_t _hand
    cdef dict _rejected
    cdef readonly Py_ssize_t signatures_verified
    cdef readonly Py_ssize_t links_decoded
    cdef readonly Py_ssize_t cache_hits
    cdef readonly Py_ssize_t cache_misses

    def __init__(
        self,
        roots,
        require,
        revoked,
        *,
        skew=DEFAULT_SKEW,
        max_depth=DEFAULT_MAX_DEPTH,
        max_bytes=DEFAULT_MAX_BYTES,
        cache_size=DEFAULT_CACHE_SIZE,
    ):
        cdef double seconds
        if isinstance(skew, bool) or not isinstance(skew, (int, float)):
            raise ValidationError("must be a number of seconds", path="skew")
        try:
            seconds = float(skew)
        except OverflowError:
            seconds = INFINITY
        if not (isfinite(seconds) and seconds >= 0):
            raise ValidationError("must be a finite number of seconds >= 0", path="skew")
        self._roots = roots
        self._require = require
        self._revoked = revoked
        self._skew = seconds
        self._max_depth = _config(max_depth, "max_depth", 1, MAX_DEPTH)
        self._max_bytes = _config(max_bytes, "max_bytes", 1, MAX_BYTES)
        self._cache_size = _config(cache_size, "cache_size", 1, MAX_CACHE_SIZE)
        _load_schema()
        self._by_id = {}
        self._by_raw = {}
        self._ring = []
        self._hand = 0
        self._rejected = {}

    @property
    def skew(self):
        return self._skew

    @property
    def max_depth(self):
        return self._max_depth

    @property
    def max_bytes(self):
        return self._max_bytes

    @property
    def cache_size(self):
        return self._cache_size

    def __len__(self):
        return len(self._by_id)

    def __contains__(self, token_id):
        return token_id in self._by_id

    def clear(self):
        """Forget every verified and rejected link (the counters stay)."""
        self._by_id.clear()
        self._by_raw.clear()
        self._ring.clear()
        self._hand = 0
        self._rejected.clear()

    def verify(
        self,
        token,
        proofs,
        now,
        *,
        capability=None,
        topic=None,
        audience=None,
        issuer=None,
        holder=None,
        receiver=None,
        anchored=True,
    ):
        """The leaf's verified `Link` if the chain grants what is asked at time `now`, else the
        specific `SecurityError`.

        `audience`, `issuer`: the leaf's fields must be these. `holder`: the DID presenting the
        chain (a message's sender): a delegation must be addressed to it, an invocation or a
        broadcast issued by it. `receiver`: the DID verifying (us): an invocation must be
        addressed to it. `anchored=False` skips the trust-anchor rule only (for checking tokens
        we hold that are rooted elsewhere)."""
        cdef double t
        cdef Py_ssize_t size
        cdef Link link
        if type(token) is not bytes:
            raise LocalProtocolError(f"a token must be bytes, not {type(token).__name__}")
        t = _seconds(now)
        _optional_text(capability, "capability")
        _optional_text(topic, "topic")
        _optional_text(audience, "audience")
        _optional_text(issuer, "issuer")
        _optional_text(holder, "holder")
        _optional_text(receiver, "receiver")
        size = PyBytes_GET_SIZE(token) + _proofs_size(proofs)
        if size > self._max_bytes:
            raise TokenTooLarge(
                f"{size} bytes of tokens, over the limit of {self._max_bytes}", path="chain"
            )
        found = self._by_raw.get(token)
        if found is None:
            return self._cold(
                <bytes>token, proofs, t, capability, topic, audience, issuer, holder, receiver,
                bool(anchored),
            )
        link = <Link>found
        link.ref = True
        self.cache_hits += 1
        self._check(
            link, t, capability, topic, audience, issuer, holder, receiver, bool(anchored)
        )
        return link

    # --- cold path --------------------------------------------------------------------------------

    cdef Link _cold(
        self, bytes token, object proofs, double now, object capability, object topic,
        object audience, object issuer, object holder, object receiver, bint anchored,
    ):
        cdef list new = []
        cdef bytes raw = token
        cdef bytes tid
        cdef Link parent = None
        cdef Link cached
        cdef Link leaf
        cdef Link link
        cdef object index = None
        cdef Py_ssize_t k, total
        cdef list pending
        self.cache_misses += 1
        leaf_id = blake3(token).digest()
        rejected = self._rejected.get(leaf_id)
        if rejected is not None:
            cls, message, path = rejected
            raise cls(message, path=path)
        tid = leaf_id
        while True:
            tok = self._decode(raw, len(new), leaf_id)
            new.append((tok, tid, raw))
            if not tok.proofs or tok.action == "revoke":
                break
            tid = tok.proofs[0]
            found = self._by_id.get(tid)
            if found is not None:
                cached = <Link>found
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
                    leaf_id, ChainTooDeep(f"more than {self._max_depth} links", path="chain")
                )
            if index is None:
                index = self._index(proofs)
            raw = self._proof(index, tid, len(new) - 1, index is not proofs)
        for k in range(len(new) - 1, -1, -1):
            tok, tid, raw = new[k]
            parent = self._link(tok, tid, raw, parent, k, leaf_id)
        leaf = parent
        self._check(leaf, now, capability, topic, audience, issuer, holder, receiver, anchored)
        pending = []
        link = leaf
        for k in range(len(new)):
            pending.append(link)
            link = link.parent
        for k in range(len(pending) - 1, -1, -1):
            link = <Link>pending[k]
            self._verify_link_signature(link, k, leaf_id)
            self._insert(link)
        return leaf

    cdef object _static(self, bytes leaf_id, object exc):
        """Remembers a verdict that depends on the leaf's bytes alone, so it costs a hash next
        time; returns `exc` to raise."""
        if len(self._rejected) >= REJECTED_SIZE:
            del self._rejected[next(iter(self._rejected))]
        self._rejected[leaf_id] = (type(exc), exc.message, exc.path)
        return exc

    cdef object _decode(self, bytes raw, Py_ssize_t k, bytes leaf_id):
        self.links_decoded += 1
        try:
            return decode_token(raw, f"chain[{k}]")
        except MalformedToken as exc:
            raise self._static(leaf_id, exc) from None

    cdef object _index(self, object proofs):
        if isinstance(proofs, (list, tuple)):
            return {blake3(p).digest(): p for p in proofs}
        return proofs

    cdef bytes _proof(self, object index, bytes tid, Py_ssize_t k, bint hashed):
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

    cdef Link _link(
        self, object tok, bytes tid, bytes raw, Link parent, Py_ssize_t k, bytes leaf_id
    ):
        """Link `chain[k]` under `parent`, checking every rule that depends on bytes alone."""
        cdef Py_ssize_t limit, allowance
        if k == 0 and tok.action == "revoke":
            raise self._static(
                leaf_id,
                CapabilityError(
                    f"token {_short(tid)}: a revocation grants nothing", path="chain[0].action"
                ),
            )
        if parent is None:
            limit = self._max_depth if tok.depth is None else min(tok.depth, self._max_depth)
            return _new_link(tok, tid, raw, None, 1, limit)
        error = _join_error(tok, tid, parent, k)
        if error is not None:
            raise self._static(leaf_id, error)
        allowance = parent.allowance - 1
        if tok.depth is not None and tok.depth < allowance:
            allowance = tok.depth
        return _new_link(tok, tid, raw, parent, parent.depth + 1, allowance)

    cdef int _verify_link_signature(self, Link link, Py_ssize_t k, bytes leaf_id) except -1:
        cdef bytes raw = link.raw
        tok = link.token
        self.signatures_verified += 1
        if not _verify_parts(
            public_key_from_did(link.issuer),
            _header,
            <const unsigned char *>PyBytes_AS_STRING(raw) + 1,
            PyBytes_GET_SIZE(raw) - 1 - _SIGNATURE_ITEM,
            tok.signature,
        ):
            raise self._static(
                leaf_id,
                SignatureError(
                    f"token {_short(link.id)}: signature does not verify against its issuer "
                    f"{link.issuer}",
                    path=f"chain[{k}].signature",
                ),
            )
        return 0

    cdef int _insert(self, Link link) except -1:
        cdef list ring = self._ring
        cdef Py_ssize_t hand
        cdef Link victim
        if link.id in self._by_id:
            return 0
        if len(ring) < self._cache_size:
            ring.append(link)
        else:
            hand = self._hand
            while (<Link>ring[hand]).ref:
                (<Link>ring[hand]).ref = False
                hand = (hand + 1) % self._cache_size
            victim = <Link>ring[hand]
            del self._by_id[victim.id]
            del self._by_raw[victim.raw]
            ring[hand] = link
            self._hand = (hand + 1) % self._cache_size
        self._by_id[link.id] = link
        self._by_raw[link.raw] = link
        return 0

    # --- every use --------------------------------------------------------------------------------

    cdef int _check(
        self, Link leaf, double now, object capability, object topic, object audience,
        object issuer, object holder, object receiver, bint anchored,
    ) except -1:
        cdef Link root
        if now + self._skew < leaf.not_before:
            raise NotYetValid(
                f"token {_short(leaf.id)}: not valid before {leaf.token.not_before} (clock skew "
                f"allowed: {self._skew:g} s)",
                path="chain[0].not_before",
            )
        if now - self._skew >= leaf.expiry:
            raise ExpiredError(
                f"token {_short(leaf.id)}: expired at {leaf.token.expiry} (clock skew allowed: "
                f"{self._skew:g} s)",
                path="chain[0].expiry",
            )
        if anchored:
            root = leaf if leaf._root is None else leaf._root
            if root.issuer not in self._roots and not self._required(
                root.issuer, now, capability, topic
            ):
                raise UntrustedRoot(
                    f"token {_short(root.id)}: root issuer {root.issuer} is not a trust anchor"
                    + ("" if root.issuer not in self._require else " for this request"),
                    path=f"chain[{leaf.depth - 1}].issuer",
                )
        if self._revoked:
            self._check_revoked(leaf)
        if audience is not None and leaf.audience != <str>audience:
            raise WrongAudience(
                f"token {_short(leaf.id)}: addressed to {leaf.audience or '(no one)'}, "
                f"not {audience}",
                path="chain[0].audience",
            )
        if issuer is not None and leaf.issuer != <str>issuer:
            raise WrongIssuer(
                f"token {_short(leaf.id)}: issued by {leaf.issuer}, not {issuer}",
                path="chain[0].issuer",
            )
        if holder is not None:
            if leaf.action == _DELEGATE:
                if leaf.audience != <str>holder:
                    raise WrongAudience(
                        f"token {_short(leaf.id)}: a delegation to {leaf.audience}, presented "
                        f"by {holder}",
                        path="chain[0].audience",
                    )
            elif leaf.issuer != <str>holder:
                raise WrongIssuer(
                    f"token {_short(leaf.id)}: issued by {leaf.issuer}, presented by {holder}",
                    path="chain[0].issuer",
                )
        if receiver is not None and leaf.action == _INVOKE and leaf.audience != <str>receiver:
            raise WrongAudience(
                f"token {_short(leaf.id)}: an invocation of {leaf.audience}, received by "
                f"{receiver}",
                path="chain[0].audience",
            )
        if capability is not None and not _covered(<str>capability, leaf.capabilities):
            raise CapabilityError(
                f"token {_short(leaf.id)}: no capability covers {capability}",
                path="chain[0].capabilities",
            )
        if topic is not None:
            if leaf.action == _INVOKE:
                raise CapabilityError(
                    f"token {_short(leaf.id)}: an invoke token grants no topics",
                    path="chain[0].action",
                )
            if not _covered(<str>topic, leaf.topics):
                raise CapabilityError(
                    f"token {_short(leaf.id)}: no topic covers {topic}", path="chain[0].topics"
                )
        return 0

    cdef bint _required(
        self, str did, double now, object capability, object topic
    ) except -1:
        anchors = self._require.get(did)
        if not anchors:
            return False
        for anchor_id, anchor in anchors:
            if now + self._skew < anchor.not_before or now - self._skew >= anchor.expiry:
                continue
            revokers = self._revoked.get(anchor_id)
            if revokers and anchor.issuer in revokers:
                continue
            if capability is not None and not _covered(<str>capability, anchor.capabilities):
                continue
            if topic is not None and not _covered(<str>topic, anchor.topics):
                continue
            return True
        return False

    cdef int _check_revoked(self, Link leaf) except -1:
        cdef list chain = []
        cdef list issuers = []
        cdef Link link = leaf
        cdef Py_ssize_t k
        while link is not None:
            chain.append(link)
            link = link.parent
        for k in range(len(chain) - 1, -1, -1):
            link = <Link>chain[k]
            issuers.append(link.issuer)
            revokers = self._revoked.get(link.id)
            if revokers:
                for who in issuers:
                    if who in revokers:
                        raise RevokedError(
                            f"token {_short(link.id)}: revoked by {who}", path=f"chain[{k}]"
                        )
        return 0


cdef object _join_error(object tok, bytes tid, Link parent, Py_ssize_t k):
    p = parent.token
    at = f"chain[{k}]"
    name = f"token {_short(tid)}"
    cdef Py_ssize_t i
    if parent.action != _DELEGATE:
        return BrokenChain(
            f"{name}: its parent {_short(parent.id)} is a {p.action} token, not a delegation",
            path=f"{at}.proofs",
        )
    if tok.issuer != parent.audience:
        return BrokenChain(
            f"{name}: issuer {tok.issuer} is not its parent's audience {parent.audience}",
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
    caps = tok.capabilities
    for i in range(len(caps)):
        if not _covered(caps[i], parent.capabilities):
            return CapabilityEscalation(
                f"{name}: capability {caps[i]} is not granted by its parent",
                path=f"{at}.capabilities[{i}]",
            )
    topics = tok.topics
    for i in range(len(topics)):
        if not _covered(topics[i], parent.topics):
            return CapabilityEscalation(
                f"{name}: topic {topics[i]} is not granted by its parent",
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
