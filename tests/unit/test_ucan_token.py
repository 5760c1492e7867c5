"""Capability tokens: the pinned wire format, issuing, paths and coverage, the human forms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import nacl.bindings
import pytest
from blake3 import blake3

from nunet.crypto.keys import KeyPair
from nunet.errors import ValidationError
from nunet.ucan import (
    Token,
    covers,
    decode_token,
    from_text,
    is_path,
    issue,
    revoke,
    signed_message,
    to_json,
    to_text,
    token_id,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "ucan_tokens.json").read_text())
KEYS = {name: KeyPair.from_hex(k["seed_hex"]) for name, k in VECTORS["keys"].items()}
BY_NAME = {v["name"]: v for v in VECTORS["vectors"]}
T0 = 1_700_000_000
DOMAIN = b"nunet:ucan:v1:"


def rebuild(vector: dict[str, Any]) -> bytes:
    args = dict(vector["args"])
    args["nonce"] = bytes.fromhex(args["nonce"])
    key = KEYS[vector["issuer"]]
    if "target" in args:
        target = bytes.fromhex(BY_NAME[args.pop("target")]["signed_hex"])
        return revoke(key, target, **args)
    parent = vector["parent"]
    if parent is not None:
        args["parent"] = bytes.fromhex(BY_NAME[parent]["signed_hex"])
    return issue(key, **args)


# --- the pinned wire format -----------------------------------------------------------------------


def test_vector_keys_match_their_dids() -> None:
    for name, key in VECTORS["keys"].items():
        assert KEYS[name].did == key["did"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vectors_rebuild_to_the_same_bytes(vector: dict[str, Any]) -> None:
    raw = rebuild(vector)
    assert raw.hex() == vector["signed_hex"]
    assert token_id(raw).hex() == vector["id_hex"] == blake3(raw).hexdigest()
    assert signed_message(raw).hex() == vector["message_hex"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vectors_decode_and_their_signatures_verify(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["signed_hex"])
    tok = decode_token(raw)
    key = KEYS[vector["issuer"]]
    assert tok.issuer == key.did
    assert tok.signature.hex() == vector["signature_hex"]
    message = bytes.fromhex(vector["message_hex"])
    nacl.bindings.crypto_sign_open(tok.signature + message, key.public_key)
    if "target" not in vector["args"]:
        assert list(tok.capabilities) == vector["args"]["capabilities"]
        assert tok.expiry == vector["args"]["expiry"]


def test_wire_layout_is_an_array_with_the_signature_last() -> None:
    raw = bytes.fromhex(BY_NAME["invoke_child"]["signed_hex"])
    tok = decode_token(raw)
    fields = len(Token.__struct_fields__)
    assert raw[0] == 0x90 | fields
    assert raw[-66:] == b"\xc4\x40" + tok.signature
    message = signed_message(raw)
    assert message == DOMAIN + bytes([0x90 | (fields - 1)]) + raw[1:-66]
    unsigned = msgspec.structs.replace(tok, signature=b"")
    # The unsigned form is the same array without its last item.
    items = msgspec.msgpack.decode(raw)
    assert msgspec.msgpack.encode(items[:-1]) == message[len(DOMAIN) :]
    assert unsigned.signature == b""


def test_child_references_its_parent_by_id_not_by_copy() -> None:
    root = bytes.fromhex(BY_NAME["root_delegate"]["signed_hex"])
    child = bytes.fromhex(BY_NAME["invoke_child"]["signed_hex"])
    assert decode_token(child).proofs == (token_id(root),)
    assert root not in child
    assert len(child) < 400


def test_revocation_names_its_target_and_inherits_its_expiry() -> None:
    root = bytes.fromhex(BY_NAME["root_delegate"]["signed_hex"])
    rev = decode_token(bytes.fromhex(BY_NAME["revoke_root"]["signed_hex"]))
    assert rev.action == "revoke"
    assert rev.proofs == (token_id(root),)
    assert rev.expiry == decode_token(root).expiry
    assert rev.audience == ""


# --- issuing --------------------------------------------------------------------------------------


def good_args(**over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "action": "delegate",
        "subject": KEYS["org"].did,
        "audience": KEYS["user"].did,
        "capabilities": ["/dms"],
        "not_before": T0,
        "expiry": T0 + 60,
    }
    args.update(over)
    return args


def test_issue_makes_fresh_nonces() -> None:
    a = issue(KEYS["org"], **good_args())
    b = issue(KEYS["org"], **good_args())
    assert a != b
    assert decode_token(a).nonce != decode_token(b).nonce
    assert len(decode_token(a).nonce) == 16


@pytest.mark.parametrize(
    ("over", "path"),
    [
        ({"action": "grant"}, "action"),
        ({"action": "revoke"}, "action"),
        ({"subject": "did:key:nope"}, "subject"),
        ({"subject": 7}, "subject"),
        ({"audience": ""}, "audience"),
        ({"capabilities": "/dms"}, "capabilities"),
        ({"capabilities": ["dms"]}, "capabilities[0]"),
        ({"capabilities": ["/dms/"]}, "capabilities[0]"),
        ({"capabilities": ["/dms//x"]}, "capabilities[0]"),
        ({"capabilities": ["/dms x"]}, "capabilities[0]"),
        ({"capabilities": ["/" + "a" * 300]}, "capabilities[0]"),
        ({"capabilities": [f"/c{i}" for i in range(65)]}, "capabilities"),
        ({"topics": ["/ok", "nope"]}, "topics[1]"),
        ({"not_before": -1}, "not_before"),
        ({"not_before": True}, "not_before"),
        ({"expiry": 1 << 41}, "expiry"),
        ({"not_before": T0 + 61}, "not_before"),
        ({"depth": -1}, "depth"),
        ({"depth": 256}, "depth"),
        ({"depth": 1.5}, "depth"),
        ({"nonce": b"short"}, "nonce"),
        ({"nonce": b"x" * 33}, "nonce"),
        ({"parent": b"not a token"}, "parent"),
        ({"parent": "text"}, "parent"),
    ],
)
def test_issue_refuses_bad_arguments(over: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as info:
        issue(KEYS["org"], **good_args(**over))
    assert info.value.path == path


def test_broadcast_and_revoke_may_have_no_audience() -> None:
    raw = issue(KEYS["org"], **good_args(action="broadcast", audience="", topics=["/nunet/x"]))
    assert decode_token(raw).audience == ""
    rev = revoke(KEYS["org"], raw, not_before=T0)
    assert decode_token(rev).audience == ""


def test_revoke_checks_its_target() -> None:
    with pytest.raises(ValidationError) as info:
        revoke(KEYS["org"], b"\x00garbage", not_before=T0)
    assert info.value.path == "target"


# --- paths and coverage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "wanted", "expected"),
    [
        ("/dms/deployment", "/dms/deployment", True),
        ("/dms/deployment", "/dms/deployment/bid", True),
        ("/dms/deployment", "/dms/deployment/bid/x", True),
        ("/dms", "/dms/deployment/bid", True),
        ("/dms/dep", "/dms/deployment", False),
        ("/dms/deployment", "/dms/deploymentx", False),
        ("/dms/deployment/bid", "/dms/deployment", False),
        ("/dms/deployment", "/dms", False),
        ("/dms", "/dmsx/a", False),
        ("/", "/anything/at/all", True),
        ("/", "/", True),
        ("/", "relative", False),
        ("/dms", "", False),
        ("/a", "/b", False),
    ],
)
def test_covers_matches_whole_segments(granted: str, wanted: str, expected: bool) -> None:
    assert covers(granted, wanted) is expected


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("/", True),
        ("/dms", True),
        ("/dms/node/peers/list", True),
        ("/dms/actor/replyto/0x1f-a_b.c", True),
        ("/nunet/deployment", True),
        ("", False),
        ("dms", False),
        ("/dms/", False),
        ("//", False),
        ("/dms//x", False),
        ("/d ms", False),
        ("/dms\n", False),
        ("/d\u00e9ploiement", False),
        ("/" + "a" * 255, True),
        ("/" + "a" * 256, False),
    ],
)
def test_is_path(text: str, ok: bool) -> None:
    assert is_path(text) is ok


# --- human forms ----------------------------------------------------------------------------------


def test_to_json_is_readable() -> None:
    raw = bytes.fromhex(BY_NAME["root_delegate"]["signed_hex"])
    doc = json.loads(to_json(raw))
    assert doc["id"] == BY_NAME["root_delegate"]["id_hex"]
    assert doc["action"] == "delegate"
    assert doc["issuer"] == KEYS["org"].did
    assert doc["capabilities"] == ["/dms/deployment", "/dms/node/resources"]
    assert doc["not_before"] == "2023-11-14T22:13:20Z"
    assert doc["expiry"] == "2023-11-15T22:13:20Z"
    assert doc["depth"] == 3
    assert doc["proofs"] == []
    assert len(bytes.fromhex(doc["signature"])) == 64
    assert to_json(raw).startswith(b"{\n  ")


def test_to_json_refuses_garbage() -> None:
    with pytest.raises(ValidationError):
        to_json(b"\x93\x01\x02")


def test_text_form_round_trips() -> None:
    raw = bytes.fromhex(BY_NAME["invoke_child"]["signed_hex"])
    text = to_text(raw)
    assert text.startswith("ucan1:")
    assert "=" not in text
    assert "\n" not in text
    assert from_text(text) == raw
    assert from_text(text + "\n") == raw


@pytest.mark.parametrize("text", ["", "ucan2:AAAA", "ucan1:***", "ucan1:A"])
def test_text_form_refuses_garbage(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        from_text(text)
    assert info.value.path == "token"
