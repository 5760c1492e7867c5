"""Gossip wire format: one network message (kind GOSSIP) = a msgpack array of tagged items.

An item is an array-like msgspec struct `[tag, field, ...]`, so a batch for one peer mixes data
and control freely (gossipsub piggybacks control on RPCs in the same way):

| tag | item | meaning |
|---|---|---|
| 0 | `Publish(body, signature)` | a message; `body` is the canonical `MessageBody` bytes |
| 1 | `Subscribe(topic)` / 2 `Unsubscribe(topic)` | the sender's interest in a topic |
| 3 | `Graft(topic)` / 4 `Prune(topic, backoff)` | join / leave each other's mesh |
| 5 | `IHave(topic, ids)` / 6 `IWant(ids)` | gossip: "I have these ids" / "send me these" |

A message leaves the authenticated session it arrived on, so the publisher signs it: Ed25519 over
`b"nunet:gossip:v1:" + body`. The body travels as the exact bytes that were signed: receivers hash
and verify what they got, never a re-encoding. The message id is `blake3(body)`: content
addressed, independent of who relays it or of the signature bytes.
"""

from __future__ import annotations

from typing import Annotated

import blake3
import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.crypto.did import public_key_from_did
from nunet.crypto.keys import KeyPair, verify
from nunet.errors import DecodeError, InvalidDID, LocalProtocolError, SignatureError

DOMAIN = b"nunet:gossip:v1:"
ID_SIZE = 32
MAX_TOPIC_LENGTH = 256

MsgId = Annotated[bytes, msgspec.Meta(min_length=ID_SIZE, max_length=ID_SIZE)]
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC_LENGTH)]
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


class MessageBody(msgspec.Struct, frozen=True, array_like=True):
    """What the publisher signs. `expiry` is unix time (seconds): it is compared across nodes."""

    publisher: Annotated[str, msgspec.Meta(max_length=128)]
    seqno: Annotated[int, msgspec.Meta(ge=0)]
    topic: Topic
    data: bytes
    expiry: float


class Publish(msgspec.Struct, frozen=True, array_like=True, tag=0):
    body: bytes
    signature: Signature


class Subscribe(msgspec.Struct, frozen=True, array_like=True, tag=1):
    topic: Topic


class Unsubscribe(msgspec.Struct, frozen=True, array_like=True, tag=2):
    topic: Topic


class Graft(msgspec.Struct, frozen=True, array_like=True, tag=3):
    topic: Topic


class Prune(msgspec.Struct, frozen=True, array_like=True, tag=4):
    topic: Topic
    backoff: Annotated[float, msgspec.Meta(ge=0)]


class IHave(msgspec.Struct, frozen=True, array_like=True, tag=5):
    topic: Topic
    ids: list[MsgId]


class IWant(msgspec.Struct, frozen=True, array_like=True, tag=6):
    ids: list[MsgId]


Item = Publish | Subscribe | Unsubscribe | Graft | Prune | IHave | IWant

_rpc_decoder = msgspec.msgpack.Decoder(list[Item])
_body_decoder = msgspec.msgpack.Decoder(MessageBody)
_encoder = msgspec.msgpack.Encoder()


def decode_rpc(data: bytes | memoryview) -> list[Item]:
    """The items of one network message; DecodeError for anything else."""
    try:
        return _rpc_decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise DecodeError(f"bad gossip rpc: {exc}") from None


def encode_rpc(items: list[Item | msgspec.Raw]) -> bytes:
    """One network message; `Raw` items are Publish items encoded once and sent to many peers."""
    return _encoder.encode(items)


def _array_header(rpc: bytes) -> tuple[int, int]:
    """(item count, header size) of an RPC this module encoded."""
    first = rpc[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, 1
    if first == 0xDC:
        return int.from_bytes(rpc[1:3], "big"), 3
    if first == 0xDD:
        return int.from_bytes(rpc[1:5], "big"), 5
    raise LocalProtocolError("not an RPC encoded by encode_rpc")


def merge_rpcs(first: bytes, second: bytes) -> bytes:
    """One RPC with the items of both (msgpack arrays concatenate once their headers are
    merged): batches queued for a slow peer leave as one message."""
    n1, h1 = _array_header(first)
    n2, h2 = _array_header(second)
    n = n1 + n2
    if n < 16:
        header = bytes((0x90 | n,))
    elif n < 1 << 16:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    return b"".join((header, memoryview(first)[h1:], memoryview(second)[h2:]))


def encode_item(item: Item) -> msgspec.Raw:
    return msgspec.Raw(_encoder.encode(item))


def decode_body(body: bytes) -> MessageBody:
    try:
        return _body_decoder.decode(body)
    except DECODE_ERRORS as exc:
        raise DecodeError(f"bad message body: {exc}") from None


def message_id(body: bytes) -> bytes:
    return blake3.blake3(body).digest()


def sign_body(keypair: KeyPair, body: MessageBody) -> tuple[bytes, Publish]:
    """The message id and the signed Publish item of a body `keypair` publishes."""
    raw = _encoder.encode(body)
    return message_id(raw), Publish(raw, keypair.sign(DOMAIN + raw))


def verify_publish(body: MessageBody, item: Publish) -> None:
    """SignatureError unless `item` is signed by the key `body.publisher` names."""
    try:
        key = public_key_from_did(body.publisher)
    except InvalidDID as exc:
        raise SignatureError(f"publisher is not a usable did:key: {exc.message}") from None
    verify(key, DOMAIN + item.body, item.signature)
