"""Who is at the other end of a connection: the DID binding of both sides.

- Server → client: TLS. The node's certificate is self-signed and carries its Ed25519 node key;
  aioquic checks the CertificateVerify signature against that key even with chain verification
  off, so the key in the certificate is proven and the client takes the peer's DID from it.
- Client → server: the AUTH frame. The server's first frame is CHALLENGE (32 fresh random bytes,
  sent in its first flight, so it costs no round trip); the client answers with its public key and
  a signature over `AUTH_DOMAIN + server key + client key + challenge + client instance`. Bound to
  the server's key and to this connection's challenge, a proof cannot be replayed on another
  connection or to another node.

The instance id (16 random bytes per process start) lets a node tell a restarted peer (new
instance: the old connection is stale) from a simultaneous dial (same instance).
"""

from __future__ import annotations

import datetime
import hashlib
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from nunet.crypto.did import did_from_public_key
from nunet.crypto.keys import KeyPair, verify
from nunet.errors import DecodeError, SecurityError, SignatureError

AUTH_DOMAIN = b"nunet:quic-auth:v1:"
CHALLENGE_SIZE = 32
INSTANCE_SIZE = 16
KEY_SIZE = 32
SIG_SIZE = 64
CHALLENGE_PAYLOAD_SIZE = CHALLENGE_SIZE + INSTANCE_SIZE
AUTH_PAYLOAD_SIZE = KEY_SIZE + SIG_SIZE + INSTANCE_SIZE

# Fixed validity and a serial derived from the key make the certificate a pure function of the
# key (Ed25519 signatures are deterministic): nothing checks dates on a self-signed node cert.
_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


class NodeIdentity:
    """A node's key as the transport uses it: TLS certificate and private key, AUTH proofs."""

    __slots__ = ("certificate", "did", "instance", "keypair", "private_key", "public_key")

    def __init__(self, keypair: KeyPair, instance: bytes | None = None) -> None:
        self.keypair = keypair
        self.did = keypair.did
        self.public_key = keypair.public_key
        self.instance = instance if instance is not None else os.urandom(INSTANCE_SIZE)
        self.private_key = ed25519.Ed25519PrivateKey.from_private_bytes(keypair.seed)
        self.certificate = self_signed_certificate(self.private_key, self.did)

    def auth_payload(self, server_key: bytes, challenge: bytes) -> bytes:
        signature = self.keypair.sign(
            _auth_message(server_key, self.public_key, challenge, self.instance)
        )
        return self.public_key + signature + self.instance


def self_signed_certificate(key: ed25519.Ed25519PrivateKey, did: str) -> x509.Certificate:
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, did)])
    serial = int.from_bytes(hashlib.sha256(public).digest()[:16], "big") >> 1 or 1
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .sign(key, None)
    )


def certificate_key(certificate: x509.Certificate) -> bytes:
    """The raw Ed25519 key of a peer's certificate; SecurityError for any other key type."""
    try:
        key = certificate.public_key()
    except ValueError as exc:  # cryptography: unsupported or malformed key
        raise SecurityError(f"peer certificate has an unusable key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SecurityError(
            f"peer certificate key is {type(key).__name__}, not Ed25519: no DID can be bound"
        )
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def split_challenge(payload: memoryview) -> tuple[bytes, bytes]:
    """(challenge, server instance) of a CHALLENGE frame."""
    if len(payload) != CHALLENGE_PAYLOAD_SIZE:
        raise DecodeError(f"CHALLENGE must be {CHALLENGE_PAYLOAD_SIZE} bytes, got {len(payload)}")
    raw = bytes(payload)
    return raw[:CHALLENGE_SIZE], raw[CHALLENGE_SIZE:]


def verify_auth(payload: memoryview, server_key: bytes, challenge: bytes) -> tuple[str, bytes]:
    """(client DID, client instance) of an AUTH frame that proves its key for this connection;
    DecodeError for a malformed frame, SignatureError for a proof that does not verify."""
    if len(payload) != AUTH_PAYLOAD_SIZE:
        raise DecodeError(f"AUTH must be {AUTH_PAYLOAD_SIZE} bytes, got {len(payload)}")
    raw = bytes(payload)
    client_key = raw[:KEY_SIZE]
    signature = raw[KEY_SIZE : KEY_SIZE + SIG_SIZE]
    instance = raw[KEY_SIZE + SIG_SIZE :]
    verify(client_key, _auth_message(server_key, client_key, challenge, instance), signature)
    if client_key == server_key:
        raise SignatureError("AUTH names the server's own key")
    return did_from_public_key(client_key), instance


def _auth_message(server_key: bytes, client_key: bytes, challenge: bytes, instance: bytes) -> bytes:
    return AUTH_DOMAIN + server_key + client_key + challenge + instance
