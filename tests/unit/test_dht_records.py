"""DHT records: signing, the one validation rule and every way a record can be refused."""

from __future__ import annotations

import msgspec
import pytest

from nunet.crypto import keys
from nunet.crypto.keys import KeyPair
from nunet.errors import ExpiredError, SignatureError, ValidationError
from nunet.net.dht.records import (
    MAX_KEY_LENGTH,
    MAX_TTL,
    MAX_VALUE_SIZE,
    Reason,
    Record,
    RecordKind,
    VerifiedCache,
    check_record,
    encode_addrs,
    key_id,
    record_addrs,
    sign_record,
    signed_bytes,
    validate_record,
)

NOW = 1_800_000_000.0
ALICE = KeyPair.from_seed(bytes(range(32)))
MALLORY = KeyPair.from_seed(bytes(range(1, 33)))
ADDRS = ("/ip4/10.0.0.1/udp/9000/quic-v1", "/ip4/10.0.0.2/udp/9000/quic-v1")


def peer_record(kp: KeyPair = ALICE, key: str | None = None, **changes: object) -> Record:
    key = kp.did if key is None else key
    record = sign_record(kp, RecordKind.PEER, key, encode_addrs(ADDRS), 7, int(NOW) + 3600)
    return msgspec.structs.replace(record, **changes) if changes else record


def reason(record: Record, now: float = NOW) -> Reason | None:
    rejection = check_record(record, now)
    return None if rejection is None else rejection.reason


# --- good records ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RecordKind))
def test_signed_records_of_every_kind_pass(kind: RecordKind) -> None:
    key = ALICE.did if kind is RecordKind.PEER else "executor/docker"
    value = b"\x00anything" if kind is RecordKind.VALUE else encode_addrs(ADDRS)
    record = sign_record(ALICE, kind, key, value, 1, int(NOW) + 60)
    assert check_record(record, NOW) is None
    validate_record(record, NOW)
    if kind is not RecordKind.VALUE:
        assert record_addrs(record) == ADDRS


def test_provider_records_may_be_signed_by_any_provider() -> None:
    record = sign_record(MALLORY, RecordKind.PROVIDER, "executor/docker", encode_addrs(()), 1,
                         int(NOW) + 60)
    assert check_record(record, NOW) is None


def test_signed_bytes_are_pinned() -> None:
    """The signed encoding is the wire contract between nodes of different versions."""
    body = signed_bytes(1, "k", b"v", "did:key:z6Mk", 2, 3)
    assert body == b"nunet:dht:v1:" + bytes.fromhex("9601a16bc40176ac6469643a6b65793a7a364d6b0203")


def test_record_round_trips_through_msgpack() -> None:
    record = peer_record()
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(record), type=Record) == record


# --- every refusal --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"signature": bytes(64)}, Reason.BAD_SIGNATURE),
        ({"value": encode_addrs(("/ip4/6.6.6.6/udp/1/quic-v1",))}, Reason.BAD_SIGNATURE),
        ({"seq": 8}, Reason.BAD_SIGNATURE),
        ({"expires": int(NOW) + 7200}, Reason.BAD_SIGNATURE),
        ({"expires": int(NOW)}, Reason.EXPIRED),
        ({"expires": int(NOW) - 1}, Reason.EXPIRED),
        ({"expires": int(NOW) + MAX_TTL + 3600}, Reason.MALFORMED),
        ({"key": ""}, Reason.MALFORMED),
        ({"key": "k" * (MAX_KEY_LENGTH + 1)}, Reason.OVERSIZE),
        ({"value": bytes(MAX_VALUE_SIZE + 1)}, Reason.OVERSIZE),
        ({"publisher": "did:key:z" + "a" * 100}, Reason.OVERSIZE),
        ({"publisher": "did:web:example.com"}, Reason.MALFORMED),
        ({"kind": 9}, Reason.MALFORMED),
        ({"signature": bytes(10)}, Reason.MALFORMED),
        ({"seq": -1}, Reason.MALFORMED),
        ({"seq": 1 << 64}, Reason.MALFORMED),
        ({"value": b"\xc1"}, Reason.MALFORMED),  # not msgpack
        ({"value": msgspec.msgpack.encode([1, 2])}, Reason.MALFORMED),  # not strings
        ({"value": encode_addrs(("a",) * 17)}, Reason.MALFORMED),  # too many addresses
        ({"value": encode_addrs(("a" * 257,))}, Reason.MALFORMED),  # address too long
    ],
)
def test_bad_records_are_refused_with_their_reason(
    changes: dict[str, object], expected: Reason
) -> None:
    assert reason(peer_record(**changes)) is expected


def test_peer_record_signed_by_someone_else_is_wrong_signer() -> None:
    # Mallory signs, correctly, a record claiming Alice's DID maps to Mallory's addresses.
    forged = sign_record(MALLORY, RecordKind.PEER, ALICE.did, encode_addrs(ADDRS), 9,
                         int(NOW) + 60)
    assert reason(forged) is Reason.WRONG_SIGNER
    # ... and with the publisher field rewritten to Alice the signature no longer verifies.
    assert reason(msgspec.structs.replace(forged, publisher=ALICE.did)) is Reason.BAD_SIGNATURE


def test_validate_record_raises_the_typed_error_with_the_field() -> None:
    cases: list[tuple[Record, type[Exception], str]] = [
        (peer_record(signature=bytes(64)), SignatureError, "signature"),
        (peer_record(MALLORY, key=ALICE.did), SignatureError, "publisher"),
        (peer_record(expires=int(NOW) - 5), ExpiredError, "expires"),
        (peer_record(value=bytes(MAX_VALUE_SIZE + 1)), ValidationError, "value"),
        (peer_record(kind=0), ValidationError, "kind"),
    ]
    for record, error, path in cases:
        with pytest.raises(error) as caught:
            validate_record(record, NOW)
        assert caught.value.path == path


def test_verified_cache_skips_a_second_verify_but_not_a_forgery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real_verify = keys.verify

    def counting_verify(public_key: bytes, message: bytes, signature: bytes) -> None:
        calls.append(message)
        real_verify(public_key, message, signature)

    monkeypatch.setattr("nunet.net.dht.records.verify", counting_verify)
    cache = VerifiedCache(capacity=2)
    good = peer_record()
    assert check_record(good, NOW, cache) is None
    assert check_record(good, NOW, cache) is None
    assert len(calls) == 1
    # The cached signature pasted onto other content must be verified (and fail).
    tampered = peer_record(value=encode_addrs(("/ip4/6.6.6.6/udp/1/quic-v1",)))
    rejection = check_record(tampered, NOW, cache)
    assert rejection is not None
    assert rejection.reason is Reason.BAD_SIGNATURE
    assert len(calls) == 2
    # Bounded: the oldest entry goes first.
    others = [sign_record(ALICE, RecordKind.VALUE, f"k{i}", b"", 1, int(NOW) + 9) for i in range(2)]
    for record in others:
        assert check_record(record, NOW, cache) is None
    assert len(cache) == 2
    assert not cache.hit(good.signature, good.signed_bytes())


def test_key_ids_are_domain_separated() -> None:
    assert key_id(RecordKind.PROVIDER, "x") != key_id(RecordKind.VALUE, "x")
    assert key_id(RecordKind.PEER, ALICE.did) != key_id(RecordKind.VALUE, ALICE.did)
    with pytest.raises(ValidationError):
        key_id(RecordKind.PEER, "not-a-did")
    with pytest.raises(ValidationError):
        key_id(42, "x")
