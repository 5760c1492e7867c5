"""Signed DHT records: what they hold, how they are signed, and the one validation rule.

A record is (kind, key, value, publisher DID, seq, expires) plus an Ed25519 signature by the
publisher's key over `b"nunet:dht:v1:" + msgpack([kind, key, value, publisher, seq, expires])`
(msgspec encodes a tuple of ints, strings and bytes deterministically, so every node computes the
same bytes).

Kinds:
- PEER: key = a DID, value = its addresses; only that DID's own key may sign it.
- PROVIDER: key = a capability ("executor/docker"), value = the provider's addresses; signed by
  the provider (the publisher is the provider).
- VALUE: key = any name, value = any bytes; signed by whoever put it (one value per publisher).

Invariants:
- A record from the network is used or stored only after `check_record` accepted it; every
  refusal has a `Reason`, which the caller counts.
- Checks run cheapest first; the signature (~55 us) runs last and a verified (signature, bytes)
  pair is remembered so that the same record seen from k nodes of one lookup is verified once.
- `expires` is absolute unix time (seconds) and signed, so nobody can extend a record but its
  publisher; a node refuses an expiry further ahead than MAX_TTL (no immortal records).
"""

from __future__ import annotations

import enum
from typing import Annotated, NamedTuple

import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.crypto.did import public_key_from_did
from nunet.crypto.keys import SIGNATURE_SIZE, KeyPair, verify
from nunet.errors import ExpiredError, InvalidDID, NunetError, SignatureError, ValidationError
from nunet.net.dht.ids import hashed_id, node_id

SIGNING_DOMAIN = b"nunet:dht:v1:"
MAX_KEY_LENGTH = 256  # characters
MAX_VALUE_SIZE = 2048  # bytes
MAX_PUBLISHER_LENGTH = 64  # a did:key is 56 characters
MAX_ADDRS = 16
MAX_ADDR_LENGTH = 256
MAX_TTL = 48 * 3600  # seconds
CLOCK_SKEW = 60  # seconds of tolerance for a publisher whose clock runs ahead
MAX_SEQ = (1 << 63) - 1


class RecordKind(enum.IntEnum):
    PEER = 1
    PROVIDER = 2
    VALUE = 3


_KEY_DOMAINS: dict[int, bytes] = {
    RecordKind.PROVIDER: b"nunet:dht:provider:",
    RecordKind.VALUE: b"nunet:dht:value:",
}


class Reason(enum.StrEnum):
    """Why a record was refused (the key of the `rejected` counters)."""

    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    WRONG_SIGNER = "wrong_signer"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"
    MISMATCH = "mismatch"  # a valid record, but not for the key that was asked


class Record(msgspec.Struct, frozen=True, array_like=True):
    # `kind` is a plain int on the wire so that an unknown kind refuses one record, not the
    # whole message that carries it.
    kind: int
    key: str
    value: bytes
    publisher: str
    seq: int
    expires: int
    signature: bytes

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.kind, self.key, self.value, self.publisher, self.seq, self.expires)


class Rejection(NamedTuple):
    reason: Reason
    error: NunetError


Addresses = Annotated[
    tuple[Annotated[str, msgspec.Meta(max_length=MAX_ADDR_LENGTH)], ...],
    msgspec.Meta(max_length=MAX_ADDRS),
]
_body_encoder = msgspec.msgpack.Encoder()
_addrs_decoder = msgspec.msgpack.Decoder(Addresses)


def signed_bytes(
    kind: int, key: str, value: bytes, publisher: str, seq: int, expires: int
) -> bytes:
    return SIGNING_DOMAIN + _body_encoder.encode((kind, key, value, publisher, seq, expires))


def key_id(kind: int, key: str) -> int:
    """Where records of (kind, key) live in the id space: a peer record sits at the peer's own
    node id (so a lookup for it ends at the peer itself), other keys at a domain-separated hash.
    ValidationError for an unknown kind or (PEER) a key that is not a DID."""
    if kind == RecordKind.PEER:
        return node_id(key)
    domain = _KEY_DOMAINS.get(kind)
    if domain is None:
        raise ValidationError(f"unknown record kind {kind}", path="kind")
    return hashed_id(domain, key.encode())


def encode_addrs(addrs: tuple[str, ...]) -> bytes:
    return _body_encoder.encode(addrs)


def record_addrs(record: Record) -> tuple[str, ...]:
    """The addresses a PEER or PROVIDER record carries (the record must have been checked)."""
    return _addrs_decoder.decode(record.value)


def sign_record(
    keypair: KeyPair, kind: RecordKind, key: str, value: bytes, seq: int, expires: int
) -> Record:
    body = signed_bytes(int(kind), key, value, keypair.did, seq, expires)
    return Record(int(kind), key, value, keypair.did, seq, expires, keypair.sign(body))


class VerifiedCache:
    """Signatures already verified, with the exact bytes they cover. Bounded; oldest out first.
    Keyed by signature, compared on bytes: a cached signature pasted onto other bytes misses."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._entries: dict[bytes, bytes] = {}

    def hit(self, signature: bytes, body: bytes) -> bool:
        return self._entries.get(signature) == body

    def add(self, signature: bytes, body: bytes) -> None:
        if len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[signature] = body

    def __len__(self) -> int:
        return len(self._entries)


def check_record(
    record: Record, now: float, cache: VerifiedCache | None = None
) -> Rejection | None:
    """None when `record` may be stored and used at time `now` (unix seconds), else why not."""
    if not record.key:
        return _malformed("record key is empty", "key")
    if len(record.key) > MAX_KEY_LENGTH:
        return Rejection(
            Reason.OVERSIZE, ValidationError(f"key over {MAX_KEY_LENGTH} characters", path="key")
        )
    if len(record.value) > MAX_VALUE_SIZE:
        return Rejection(
            Reason.OVERSIZE, ValidationError(f"value over {MAX_VALUE_SIZE} bytes", path="value")
        )
    if len(record.publisher) > MAX_PUBLISHER_LENGTH:
        return Rejection(
            Reason.OVERSIZE, ValidationError("publisher is too long for a DID", path="publisher")
        )
    if record.kind not in _KINDS:
        return _malformed(f"unknown record kind {record.kind}", "kind")
    if len(record.signature) != SIGNATURE_SIZE:
        return _malformed(f"signature must be {SIGNATURE_SIZE} bytes", "signature")
    if not 0 <= record.seq <= MAX_SEQ:
        return _malformed("seq out of range", "seq")
    if record.expires <= now:
        return Rejection(
            Reason.EXPIRED, ExpiredError(f"record expired at {record.expires}", path="expires")
        )
    if record.expires > now + MAX_TTL + CLOCK_SKEW:
        return _malformed(f"expiry more than {MAX_TTL} s ahead", "expires")
    if record.kind != RecordKind.VALUE:
        try:
            _addrs_decoder.decode(record.value)
        except DECODE_ERRORS as exc:
            return _malformed(f"value is not a list of addresses: {exc}", "value")
    try:
        public_key = public_key_from_did(record.publisher)
    except InvalidDID as exc:
        return _malformed(exc.message, "publisher")
    if record.kind == RecordKind.PEER and record.key != record.publisher:
        # Checked after the publisher is known to be a DID and before the signature: a peer record
        # signed by anyone but the peer is refused whatever its signature says.
        return Rejection(
            Reason.WRONG_SIGNER,
            SignatureError(
                "a peer record must be signed by the peer it names", path="publisher"
            ),
        )
    body = record.signed_bytes()
    if cache is not None and cache.hit(record.signature, body):
        return None
    try:
        verify(public_key, body, record.signature)
    except SignatureError as exc:
        return Rejection(Reason.BAD_SIGNATURE, SignatureError(exc.message, path="signature"))
    if cache is not None:
        cache.add(record.signature, body)
    return None


def validate_record(record: Record, now: float, cache: VerifiedCache | None = None) -> None:
    """`check_record` for callers that want an exception: the refusal's error, with its path."""
    rejection = check_record(record, now, cache)
    if rejection is not None:
        raise rejection.error


_KINDS = frozenset(int(k) for k in RecordKind)


def _malformed(message: str, path: str) -> Rejection:
    return Rejection(Reason.MALFORMED, ValidationError(message, path=path))
