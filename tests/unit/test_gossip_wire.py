"""Gossip wire format: items, signing domain, message ids, and a pinned encoding."""

from __future__ import annotations

import blake3
import msgspec
import pytest

from nunet.crypto.keys import KeyPair, verify
from nunet.errors import DecodeError, LocalProtocolError, SignatureError, ValidationError
from nunet.net.gossip import GossipParams, ScoreParams
from nunet.net.gossip.wire import (
    DOMAIN,
    Graft,
    IHave,
    IWant,
    MessageBody,
    Prune,
    Subscribe,
    Unsubscribe,
    decode_body,
    decode_rpc,
    encode_item,
    encode_rpc,
    merge_rpcs,
    message_id,
    sign_body,
    verify_publish,
)

KEY = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(range(1, 33)))
BODY = MessageBody(KEY.did, 7, "/nunet/hello", b"hi", 1_700_000_060.0)


def test_items_round_trip() -> None:
    msg_id, publish = sign_body(KEY, BODY)
    items = [
        publish,
        Subscribe("/nunet/hello"),
        Unsubscribe("/nunet/status"),
        Graft("/nunet/hello"),
        Prune("/nunet/hello", 60.0),
        IHave("/nunet/hello", [msg_id]),
        IWant([msg_id, bytes(32)]),
    ]
    assert decode_rpc(encode_rpc(list(items))) == items
    # Pre-encoded Publish items (sent to many peers) decode the same.
    assert decode_rpc(encode_rpc([encode_item(publish), Graft("t")])) == [publish, Graft("t")]
    assert decode_rpc(memoryview(encode_rpc(items))) == items


@pytest.mark.parametrize(("n1", "n2"), [(0, 0), (1, 2), (7, 8), (15, 1), (100, 65436), (3, 70000)])
def test_merged_rpcs_hold_both_item_lists(n1: int, n2: int) -> None:
    first = [Graft(f"a{i}") for i in range(n1)]
    second = [Subscribe(f"b{i}") for i in range(n2)]
    merged = merge_rpcs(encode_rpc(list(first)), encode_rpc(list(second)))
    assert merged == encode_rpc([*first, *second])
    assert decode_rpc(merged) == [*first, *second]


def test_merging_something_else_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        merge_rpcs(b"\x80", encode_rpc([]))


def test_signature_covers_the_domain_and_the_exact_body() -> None:
    msg_id, publish = sign_body(KEY, BODY)
    assert publish.body == msgspec.msgpack.encode(BODY)
    assert msg_id == blake3.blake3(publish.body).digest() == message_id(publish.body)
    verify(KEY.public_key, DOMAIN + publish.body, publish.signature)
    with pytest.raises(SignatureError):
        verify(KEY.public_key, publish.body, publish.signature)  # no domain: not valid
    verify_publish(decode_body(publish.body), publish)


def test_pinned_encoding() -> None:
    """The wire bytes of one signed message: a change here breaks every other node.
    Body = msgpack [publisher, seqno, topic, data, expiry] (fixarray 5, str8 DID, fixint,
    fixstr, bin8, float64); Ed25519 is deterministic, so the signature is pinned too."""
    assert KEY.did == "did:key:z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcjqSJgvVd"
    msg_id, publish = sign_body(KEY, BODY)
    assert publish.body == (
        bytes.fromhex("95d938")
        + KEY.did.encode()
        + bytes.fromhex("07ac")
        + b"/nunet/hello"
        + bytes.fromhex("c4026869cb41d954fc4f000000")
    )
    assert publish.signature.hex() == (
        "48630c0ad1e37eb5b3bcd355b782819a5056942eaf3e46e577cde0eb6a8babc8"
        "6f5e724f581d42a4a90ecfc2469774d9fee273af1b3c1bb6bb79f695b9f9df07"
    )
    assert msg_id.hex() == "ae2110fcfa4b0e2342c18ac3e00edaad68c1164355de63164e7a8eb04a7672f2"
    wire = encode_rpc([publish])
    assert wire == bytes.fromhex("919300c4") + bytes([len(publish.body)]) + publish.body + (
        bytes.fromhex("c440") + publish.signature
    )


def test_wrong_signer_is_refused() -> None:
    _, forged = sign_body(OTHER, BODY)  # OTHER signs a body naming KEY as publisher
    with pytest.raises(SignatureError):
        verify_publish(BODY, forged)
    with pytest.raises(SignatureError, match="did:key"):
        verify_publish(MessageBody("did:web:example", 1, "t", b"", 1.0), forged)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00",
        b"\x91\x91\x07",  # unknown tag
        encode_rpc([IWant([bytes(31)])]),  # id too short
        encode_rpc([Subscribe("x" * 257)]),  # topic too long
        msgspec.msgpack.encode([[0, b"body", b"short signature"]]),
        msgspec.msgpack.encode([[4, "t", -1.0]]),  # negative backoff
        msgspec.msgpack.encode({"not": "a list"}),
    ],
)
def test_bad_rpc_is_a_decode_error(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_rpc(wire)


def test_bad_body_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_body(b"\x93\x01\x02\x03")
    with pytest.raises(DecodeError):
        decode_body(msgspec.msgpack.encode([KEY.did, -1, "t", b"", 1.0]))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"d": 3, "d_lo": 4}, "d"),
        ({"d": 13}, "d"),
        ({"d_score": 7}, "d_score"),
        ({"history_gossip": 6}, "history_gossip"),
        ({"max_message_ttl": 120.0}, "max_message_ttl"),
        ({"message_ttl": 111.0}, "message_ttl"),
        ({"max_message_size": 2 << 20}, "max_message_size"),
        ({"max_rpc_size": 1000}, "max_rpc_size"),
        ({"heartbeat_interval": 0.0}, "heartbeat_interval"),
        ({"prune_backoff": -1.0}, "prune_backoff"),
    ],
)
def test_bad_params(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        GossipParams(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == field


def test_bad_score_params() -> None:
    with pytest.raises(ValidationError):
        ScoreParams(gossip_threshold=-100.0, publish_threshold=-50.0)
    with pytest.raises(ValidationError):
        ScoreParams(invalid_decay=0.0)
    with pytest.raises(ValidationError):
        ScoreParams(behaviour_weight=1.0)
