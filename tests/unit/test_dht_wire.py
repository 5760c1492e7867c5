"""DHT wire messages: round trips, and the decoder rule: any bytes give a message or a
DecodeError, nothing else."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nunet.errors import DecodeError
from nunet.net.dht.records import Record
from nunet.net.dht.wire import (
    MAX_CONTACTS,
    FindNode,
    FindValue,
    Nodes,
    PeerInfo,
    Ping,
    Pong,
    Store,
    Stored,
    Values,
    decode_reply,
    decode_request,
    encode,
)

RECORD = Record(1, "did:key:z6Mk", b"\x90", "did:key:z6Mk", 3, 100, bytes(64))
FUZZ = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    "message",
    [
        Ping(),
        Ping(("/mem/a", "/ip4/1.2.3.4/udp/9000/quic-v1")),
        FindNode(bytes(range(32)), ("/mem/a",)),
        FindValue(2, "executor/docker"),
        Store((RECORD, RECORD)),
    ],
)
def test_requests_round_trip(message: object) -> None:
    assert decode_request(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [Pong(), Nodes((PeerInfo("did:key:a", ("/mem/a",)),)), Values((RECORD,), ()), Stored(2)],
)
def test_replies_round_trip(message: object) -> None:
    assert decode_reply(memoryview(encode(message))) == message  # type: ignore[arg-type]


def test_a_reply_is_not_a_request() -> None:
    with pytest.raises(DecodeError):
        decode_request(encode(Stored(1)))
    with pytest.raises(DecodeError):
        decode_reply(encode(Ping()))


@pytest.mark.parametrize(
    "raw",
    [
        encode(FindNode(bytes(31))),  # an id of the wrong size
        msgspec.msgpack.encode([2, b"\x00" * 33]),
        msgspec.msgpack.encode([3, 2, ""]),  # empty key
        msgspec.msgpack.encode([3, 2, "k" * 300]),
        msgspec.msgpack.encode([1, ["a"] * 17]),  # too many addresses
        msgspec.msgpack.encode([4, [list(msgspec.msgpack.decode(encode(RECORD)))] * 33]),
        msgspec.msgpack.encode([99]),  # unknown tag
        b"",
        b"\xc1",
    ],
)
def test_structurally_bad_requests_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(raw)


def test_too_many_contacts_is_a_decode_error() -> None:
    contacts = [["did:key:a", []]] * (MAX_CONTACTS + 1)
    with pytest.raises(DecodeError):
        decode_reply(msgspec.msgpack.encode([12, contacts]))


REQUESTS = (Ping, FindNode, FindValue, Store)
REPLIES = (Pong, Nodes, Values, Stored)


def decodes_or_refuses(decode: Callable[[bytes], object], data: bytes, types: tuple[type, ...]
                       ) -> None:
    """The decoder rule: a message of the expected types, or DecodeError (any other exception
    fails the test by propagating)."""
    try:
        message = decode(data)
    except DecodeError:
        return
    assert isinstance(message, types)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_give_a_request_or_a_decode_error(data: bytes) -> None:
    decodes_or_refuses(decode_request, data, REQUESTS)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_give_a_reply_or_a_decode_error(data: bytes) -> None:
    decodes_or_refuses(decode_reply, data, REPLIES)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=40)
    | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=30,
)


@FUZZ
@given(st.integers(0, 20), st.lists(msgpack_values, max_size=4))
def test_well_formed_msgpack_of_the_wrong_shape_gives_a_decode_error(
    tag: int, fields: list[object]
) -> None:
    """Random bytes rarely get past the first byte; arrays that start with a real tag do."""
    try:
        raw = msgspec.msgpack.encode([tag, *fields])
    except (OverflowError, TypeError):
        return
    decodes_or_refuses(decode_request, raw, REQUESTS)
    decodes_or_refuses(decode_reply, raw, REPLIES)


@FUZZ
@given(st.binary(min_size=1, max_size=300), st.data())
def test_truncated_valid_messages_give_a_decode_error(extra: bytes, data: st.DataObject) -> None:
    raw = encode(Store((RECORD,), ("/mem/" + extra.hex(),)))
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        decode_request(raw[:cut])
