"""Ed25519 key pairs, signatures and did:key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import base58
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nunet.crypto.did import did_from_public_key, is_did, public_key_from_did
from nunet.crypto.keys import KeyPair, verify
from nunet.errors import InvalidDID, SignatureError, ValidationError

VECTORS = Path(__file__).parent.parent / "vectors"
DID_VECTORS: list[dict[str, str]] = json.loads((VECTORS / "did_key.json").read_text())["vectors"]
BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
SPEC_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"

# RFC 8032 section 7.1, TEST 1 and TEST 2: (secret key, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


def did_of(raw: bytes) -> str:
    return "did:key:z" + base58.b58encode(raw).decode()


# --- did:key vectors --------------------------------------------------------------------------


@pytest.mark.parametrize("vector", DID_VECTORS, ids=lambda v: v["did"][-8:])
def test_w3c_vector_seed_to_did(vector: dict[str, str]) -> None:
    key = KeyPair.from_seed(bytes.fromhex(vector["seed_hex"]))
    assert key.public_key.hex() == vector["public_key_hex"]
    assert base58.b58encode(key.public_key).decode() == vector["public_key_base58"]
    assert key.did == vector["did"]


@pytest.mark.parametrize("vector", DID_VECTORS, ids=lambda v: v["did"][-8:])
def test_w3c_vector_did_to_public_key(vector: dict[str, str]) -> None:
    public_key = bytes.fromhex(vector["public_key_hex"])
    assert public_key_from_did(vector["did"]) == public_key
    assert did_from_public_key(public_key) == vector["did"]
    assert is_did(vector["did"])


def test_spec_example_is_the_all_zero_seed() -> None:
    assert KeyPair.from_seed(bytes(32)).did == SPEC_DID


@given(st.binary(min_size=32, max_size=32))
def test_round_trip_any_public_key(public_key: bytes) -> None:
    did = did_from_public_key(public_key)
    assert did.startswith("did:key:z6Mk")
    assert public_key_from_did(did) == public_key
    assert is_did(did)


@given(st.binary(min_size=32, max_size=32))
def test_round_trip_keypair(seed: bytes) -> None:
    key = KeyPair.from_seed(seed)
    assert public_key_from_did(key.did) == key.public_key


def test_did_accepts_bytes_like() -> None:
    public_key = bytes(range(32))
    did = did_from_public_key(public_key)
    assert did_from_public_key(bytearray(public_key)) == did  # type: ignore[arg-type]
    assert did_from_public_key(memoryview(public_key)) == did  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_did_from_public_key_wrong_length(size: int) -> None:
    with pytest.raises(ValidationError) as info:
        did_from_public_key(bytes(size))
    assert info.value.path == "public_key"
    assert not isinstance(info.value, InvalidDID)


def test_did_from_public_key_not_bytes() -> None:
    with pytest.raises(ValidationError) as info:
        did_from_public_key("ab" * 16)  # type: ignore[arg-type]
    assert info.value.path == "public_key"


# --- malformed DIDs ---------------------------------------------------------------------------

_KEY = bytes(range(32))
MALFORMED = [
    ("", "must start with 'did:'"),
    ("did", "must start with 'did:'"),
    ("DID:key:" + SPEC_DID[8:], "must start with 'did:'"),
    (" " + SPEC_DID, "must start with 'did:'"),
    ("did:web:example.com", "unsupported DID method"),
    ("did:KEY:" + SPEC_DID[8:], "unsupported DID method"),
    ("did:keys:" + SPEC_DID[8:], "unsupported DID method"),
    ("did:key:", "multibase base58btc"),
    ("did:key:" + SPEC_DID[9:], "multibase base58btc"),  # the 'z' is missing
    ("did:key:Z" + SPEC_DID[9:], "multibase base58btc"),
    ("did:key:f" + (b"\xed\x01" + _KEY).hex(), "multibase base58btc"),  # base16 multibase
    ("did:key:z", "no key material"),
    (SPEC_DID[:-1] + "0", "not valid base58btc"),
    (SPEC_DID[:-1] + "O", "not valid base58btc"),
    (SPEC_DID[:-1] + "I", "not valid base58btc"),
    (SPEC_DID[:-1] + "l", "not valid base58btc"),
    (SPEC_DID + " ", "not valid base58btc"),
    (SPEC_DID + "\n", "not valid base58btc"),
    (SPEC_DID + "#" + SPEC_DID[9:], "too long"),
    (SPEC_DID[:20] + "é" + SPEC_DID[21:], "not valid base58btc"),
    ("did:key:z" + "1" * 100, "too long"),
    ("did:key:z" + "z" * 49, "too long"),
    # multicodec: secp256k1-pub (0xe7), x25519-pub (0xec), a missing varint, a leading zero byte
    ("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "not an Ed25519 key"),
    (did_of(b"\xec\x01" + _KEY), "not an Ed25519 key"),
    (did_of(_KEY + b"\x00\x00"), "not an Ed25519 key"),
    (did_of(b"\xed" + _KEY), "not an Ed25519 key"),
    ("did:key:z1" + SPEC_DID[9:], "not an Ed25519 key"),
    # right multicodec, wrong key length
    (did_of(b"\xed\x01"), "got 0"),
    (did_of(b"\xed\x01" + _KEY[:31]), "got 31"),
    (did_of(b"\xed\x01" + _KEY + b"\x00"), "got 33"),
]


@pytest.mark.parametrize(("did", "message"), MALFORMED)
def test_malformed_did_rejected(did: str, message: str) -> None:
    with pytest.raises(InvalidDID) as info:
        public_key_from_did(did)
    assert message in info.value.message
    assert info.value.path == "did"
    assert not is_did(did)


@pytest.mark.parametrize("value", [None, 42, b"did:key:z6Mk", ["did:key:z6Mk"], SPEC_DID.encode()])
def test_non_string_did_rejected(value: Any) -> None:
    with pytest.raises(InvalidDID, match="must be a string"):
        public_key_from_did(value)
    assert not is_did(value)


@given(st.text())
def test_random_text_only_ever_raises_invalid_did(text: str) -> None:
    try:
        public_key = public_key_from_did(text)
    except InvalidDID:
        assert not is_did(text)
    else:
        assert did_from_public_key(public_key) == text


@given(st.text(alphabet=BASE58_ALPHABET, max_size=60))
def test_random_base58_only_ever_raises_invalid_did(body: str) -> None:
    did = "did:key:z" + body
    try:
        public_key = public_key_from_did(did)
    except InvalidDID:
        assert not is_did(did)
    else:
        # one string per key: what we accept is exactly what we would have written
        assert len(public_key) == 32
        assert did_from_public_key(public_key) == did


@given(st.binary(max_size=40))
def test_random_multicodec_bytes_only_ever_raise_invalid_did(raw: bytes) -> None:
    did = did_of(raw)
    try:
        public_key = public_key_from_did(did)
    except InvalidDID:
        assert not (raw.startswith(b"\xed\x01") and len(raw) == 34)
    else:
        assert raw == b"\xed\x01" + public_key


# --- key pairs --------------------------------------------------------------------------------


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    key = KeyPair.from_seed(bytes.fromhex(secret))
    assert key.public_key.hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))


def test_sign_verify() -> None:
    key = KeyPair.generate()
    signature = key.sign(b"hello")
    assert len(signature) == 64
    assert key.sign(b"hello") == signature  # Ed25519 is deterministic
    verify(key.public_key, b"hello", signature)
    # zero-copy callers hand over views of a receive buffer
    public_key, view = bytearray(key.public_key), memoryview(b"hello")
    verify(public_key, view, bytearray(signature))  # type: ignore[arg-type]


def test_generate_makes_distinct_keys() -> None:
    keys = {KeyPair.generate().did for _ in range(20)}
    assert len(keys) == 20


def test_seed_round_trip() -> None:
    key = KeyPair.generate()
    assert len(key.seed) == 32
    assert len(key.public_key) == 32
    again = KeyPair.from_seed(key.seed)
    assert again == key
    assert hash(again) == hash(key)
    assert again.did == key.did
    assert KeyPair.generate() != key
    assert key != key.seed


def test_tampered_message_rejected() -> None:
    key = KeyPair.generate()
    signature = key.sign(b"pay 10")
    with pytest.raises(SignatureError):
        verify(key.public_key, b"pay 11", signature)
    with pytest.raises(SignatureError):
        verify(key.public_key, b"pay 10 ", signature)
    with pytest.raises(SignatureError):
        verify(key.public_key, b"", signature)


@pytest.mark.parametrize("position", [0, 1, 31, 32, 33, 62, 63])
def test_tampered_signature_rejected(position: int) -> None:
    key = KeyPair.generate()
    signature = bytearray(key.sign(b"message"))
    signature[position] ^= 0x01
    with pytest.raises(SignatureError):
        verify(key.public_key, b"message", bytes(signature))


def test_wrong_key_rejected() -> None:
    signer, other = KeyPair.generate(), KeyPair.generate()
    with pytest.raises(SignatureError):
        verify(other.public_key, b"message", signer.sign(b"message"))


@given(st.binary(max_size=256), st.integers(min_value=0, max_value=64 * 8 - 1))
def test_any_signature_bit_flip_rejected(message: bytes, bit: int) -> None:
    key = KeyPair.from_seed(bytes(range(32)))
    signature = bytearray(key.sign(message))
    signature[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SignatureError):
        verify(key.public_key, message, bytes(signature))


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (bytes(31), bytes(64)),
        (bytes(33), bytes(64)),
        (b"", bytes(64)),
        (bytes(32), bytes(63)),
        (bytes(32), bytes(65)),
        (bytes(32), b""),
        ("00" * 32, bytes(64)),
        (bytes(32), "00" * 64),
        (None, None),
    ],
)
def test_verify_bad_shapes_raise_signature_error(public_key: Any, signature: Any) -> None:
    with pytest.raises(SignatureError):
        verify(public_key, b"message", signature)


def test_verify_message_not_bytes() -> None:
    key = KeyPair.generate()
    with pytest.raises(SignatureError):
        verify(key.public_key, "message", key.sign(b"message"))  # type: ignore[arg-type]


def test_verify_all_zero_key_and_signature() -> None:
    with pytest.raises(SignatureError):
        verify(bytes(32), b"message", bytes(64))


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_from_seed_wrong_length(size: int) -> None:
    with pytest.raises(ValidationError) as info:
        KeyPair.from_seed(bytes(size))
    assert info.value.path == "seed"


def test_from_seed_not_bytes() -> None:
    with pytest.raises(ValidationError):
        KeyPair.from_seed("00" * 32)  # type: ignore[arg-type]


def test_from_hex_seed_form() -> None:
    key = KeyPair.generate()
    assert KeyPair.from_hex(key.seed.hex()) == key
    assert KeyPair.from_hex(key.seed.hex().upper()) == key
    assert KeyPair.from_hex("  " + key.seed.hex() + "\n") == key


def test_from_hex_libsodium_form() -> None:
    key = KeyPair.generate()
    assert KeyPair.from_hex((key.seed + key.public_key).hex()) == key


def test_from_hex_mismatched_public_half() -> None:
    key, other = KeyPair.generate(), KeyPair.generate()
    with pytest.raises(ValidationError, match="does not match") as info:
        KeyPair.from_hex((key.seed + other.public_key).hex())
    assert info.value.path == "key"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00" * 31,
        "00" * 33,
        "00" * 63,
        "00" * 65,
        "0x" + "00" * 32,
        "0" * 63,
        "zz" * 32,
        "00 " * 21 + "0",  # 64 characters, but not 64 hex digits
        "0" * 62 + "é1",
    ],
)
def test_from_hex_bad_text(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        KeyPair.from_hex(text)
    assert info.value.path == "key"


def test_from_hex_not_str() -> None:
    with pytest.raises(ValidationError):
        KeyPair.from_hex(bytes(32))  # type: ignore[arg-type]


def test_repr_shows_did_not_seed() -> None:
    key = KeyPair.generate()
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert key.did in text
        assert key.seed.hex() not in text
        assert key.seed.hex().upper() not in text
        assert base58.b58encode(key.seed).decode() not in text
