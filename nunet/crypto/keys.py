"""Ed25519 key pairs (pynacl): a node's and a user's identity."""

from __future__ import annotations

import hmac
import string

import nacl.bindings
import nacl.exceptions
import nacl.signing

from nunet.crypto.did import did_from_public_key
from nunet.errors import SignatureError, ValidationError

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_HEX_DIGITS = frozenset(string.hexdigits)


class KeyPair:
    """An Ed25519 private key with its public key and DID.

    The seed is secret: `repr` and `str` show only the DID so a key that ends up in a log line
    or a traceback leaks nothing.
    """

    __slots__ = ("_did", "_public_key", "_signing_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self._public_key = bytes(signing_key.verify_key)
        self._did = did_from_public_key(self._public_key)

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """The key pair of a 32-byte RFC 8032 seed (the private key proper)."""
        if not isinstance(seed, bytes | bytearray | memoryview):
            raise ValidationError("seed must be bytes", path="seed")
        if len(seed) != SEED_SIZE:
            raise ValidationError(f"seed must be {SEED_SIZE} bytes, got {len(seed)}", path="seed")
        return cls(nacl.signing.SigningKey(bytes(seed)))

    @classmethod
    def from_hex(cls, text: str) -> KeyPair:
        """A key from 64 hex chars (the seed) or 128 (seed || public key, as libsodium and DMS
        export it; the public half must match the seed)."""
        if not isinstance(text, str):
            raise ValidationError("key must be a hex string", path="key")
        text = text.strip()
        if len(text) not in (2 * SEED_SIZE, 2 * (SEED_SIZE + PUBLIC_KEY_SIZE)):
            raise ValidationError(
                f"key must be {2 * SEED_SIZE} or {2 * (SEED_SIZE + PUBLIC_KEY_SIZE)} hex "
                f"characters, got {len(text)}",
                path="key",
            )
        # Checked by hand: bytes.fromhex would skip spaces inside the text.
        if not _HEX_DIGITS.issuperset(text):
            raise ValidationError("key is not valid hex", path="key")
        raw = bytes.fromhex(text)
        key = cls.from_seed(raw[:SEED_SIZE])
        if len(raw) > SEED_SIZE and not hmac.compare_digest(raw[SEED_SIZE:], key.public_key):
            raise ValidationError(
                "public key half does not match the seed half (corrupt key?)", path="key"
            )
        return key

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def did(self) -> str:
        return self._did

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature of `message`."""
        return self._signing_key.sign(bytes(message)).signature

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyPair):
            return NotImplemented
        return hmac.compare_digest(self.seed, other.seed)

    def __hash__(self) -> int:
        return hash(self._public_key)

    def __repr__(self) -> str:
        return f"KeyPair(did={self._did!r})"


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check a detached Ed25519 signature; SignatureError on any failure, never a return value
    to forget to check."""
    if (
        not isinstance(public_key, bytes | bytearray | memoryview)
        or len(public_key) != PUBLIC_KEY_SIZE
    ):
        raise SignatureError(f"public key must be {PUBLIC_KEY_SIZE} bytes")
    if (
        not isinstance(signature, bytes | bytearray | memoryview)
        or len(signature) != SIGNATURE_SIZE
    ):
        raise SignatureError(f"signature must be {SIGNATURE_SIZE} bytes")
    if not isinstance(message, bytes | bytearray | memoryview):
        raise SignatureError("message must be bytes")
    try:
        nacl.bindings.crypto_sign_open(bytes(signature) + bytes(message), bytes(public_key))
    except nacl.exceptions.CryptoError:
        raise SignatureError("signature does not verify") from None
