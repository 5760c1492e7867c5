"""did:key identifiers for Ed25519 public keys.

A did:key is `did:key:` + multibase base58btc (`z`) of the multicodec `ed25519-pub` varint
(0xed 0x01) followed by the 32 public key bytes; ours always start `did:key:z6Mk`.
"""

from __future__ import annotations

import functools

import base58

from nunet.errors import InvalidDID, ValidationError

DID_KEY_PREFIX = "did:key:"
MULTIBASE_BASE58BTC = "z"
ED25519_PUB_MULTICODEC = b"\xed\x01"
PUBLIC_KEY_SIZE = 32

# base58 decoding is quadratic in the input length: refuse anything longer than an Ed25519 key
# could encode to before decoding it, so a hostile peer cannot make us burn CPU.
_MAX_ENCODED_LEN = 48
# Checked by us because base58.b58decode forgives trailing whitespace, which would let two
# different strings name the same key.
_BASE58BTC_ALPHABET = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


def did_from_public_key(public_key: bytes) -> str:
    """The did:key of a 32-byte Ed25519 public key."""
    if not isinstance(public_key, bytes | bytearray | memoryview):
        raise ValidationError("public key must be bytes", path="public_key")
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValidationError(
            f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}", path="public_key"
        )
    encoded = base58.b58encode(ED25519_PUB_MULTICODEC + bytes(public_key)).decode("ascii")
    return DID_KEY_PREFIX + MULTIBASE_BASE58BTC + encoded


def public_key_from_did(did: str) -> bytes:
    """The 32-byte Ed25519 public key a did:key names; InvalidDID says what is wrong."""
    if not isinstance(did, str):
        raise InvalidDID(f"a DID must be a string, got {type(did).__name__}", path="did")
    return _decode(did)


# Verifying a delegation chain resolves the same few DIDs over and over.
@functools.lru_cache(maxsize=1024)
def _decode(did: str) -> bytes:
    if not did.startswith("did:"):
        raise InvalidDID("not a DID: must start with 'did:'", path="did")
    if not did.startswith(DID_KEY_PREFIX):
        raise InvalidDID("unsupported DID method: only did:key is supported", path="did")
    multibase = did[len(DID_KEY_PREFIX) :]
    if not multibase.startswith(MULTIBASE_BASE58BTC):
        raise InvalidDID("did:key must be multibase base58btc (start with 'z')", path="did")
    encoded = multibase[1:]
    if not encoded:
        raise InvalidDID("did:key has no key material", path="did")
    if len(encoded) > _MAX_ENCODED_LEN:
        raise InvalidDID("did:key is too long for an Ed25519 key", path="did")
    if not _BASE58BTC_ALPHABET.issuperset(encoded):
        raise InvalidDID("did:key is not valid base58btc", path="did")
    raw = base58.b58decode(encoded)
    if not raw.startswith(ED25519_PUB_MULTICODEC):
        raise InvalidDID("did:key is not an Ed25519 key (multicodec is not 0xed01)", path="did")
    key = raw[len(ED25519_PUB_MULTICODEC) :]
    if len(key) != PUBLIC_KEY_SIZE:
        raise InvalidDID(
            f"Ed25519 did:key must hold {PUBLIC_KEY_SIZE} key bytes, got {len(key)}", path="did"
        )
    return key


def is_did(text: str) -> bool:
    """Whether `text` is a did:key naming an Ed25519 public key."""
    try:
        public_key_from_did(text)
    except InvalidDID:
        return False
    return True
