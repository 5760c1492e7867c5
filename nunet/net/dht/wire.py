"""DHT messages on the wire: msgspec msgpack tagged unions, carried by `network.request(did,
kinds.DHT, ...)`.

Every request carries the sender's own addresses, so the receiver can put it in its routing table
(the transport has authenticated the sender's DID; the addresses are only a hint, which a later
dial verifies). Sizes are bounded by type where a whole message is nonsense if they are broken
(ids, contact and record counts, address lists); single records are checked one by one after
decoding (`records.check_record`) so that one bad record costs only itself.

`decode_request` and `decode_reply` take any bytes and either return a message or raise
`DecodeError`: nothing else (a hypothesis test holds them to that).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.errors import DecodeError
from nunet.net.dht.ids import ID_BYTES
from nunet.net.dht.records import Addresses, Record

MAX_CONTACTS = 32
MAX_RECORDS = 32

Did = Annotated[str, msgspec.Meta(max_length=64)]
NodeIdBytes = Annotated[bytes, msgspec.Meta(min_length=ID_BYTES, max_length=ID_BYTES)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class PeerInfo(msgspec.Struct, frozen=True, array_like=True):
    did: Did
    addrs: Addresses


Contacts = Annotated[tuple[PeerInfo, ...], msgspec.Meta(max_length=MAX_CONTACTS)]
Records = Annotated[tuple[Record, ...], msgspec.Meta(max_length=MAX_RECORDS)]


class Ping(msgspec.Struct, frozen=True, array_like=True, tag=1):
    addrs: Addresses = ()


class FindNode(msgspec.Struct, frozen=True, array_like=True, tag=2):
    target: NodeIdBytes
    addrs: Addresses = ()


class FindValue(msgspec.Struct, frozen=True, array_like=True, tag=3):
    kind: int
    key: Key
    addrs: Addresses = ()


class Store(msgspec.Struct, frozen=True, array_like=True, tag=4):
    records: Records
    addrs: Addresses = ()


class Pong(msgspec.Struct, frozen=True, array_like=True, tag=11):
    pass


class Nodes(msgspec.Struct, frozen=True, array_like=True, tag=12):
    contacts: Contacts


class Values(msgspec.Struct, frozen=True, array_like=True, tag=13):
    records: Records
    contacts: Contacts


class Stored(msgspec.Struct, frozen=True, array_like=True, tag=14):
    accepted: int


Request = Ping | FindNode | FindValue | Store
Reply = Pong | Nodes | Values | Stored

_encoder = msgspec.msgpack.Encoder()
_request_decoder: msgspec.msgpack.Decoder[Request] = msgspec.msgpack.Decoder(Request)
_reply_decoder: msgspec.msgpack.Decoder[Reply] = msgspec.msgpack.Decoder(Reply)


def encode(message: Request | Reply) -> bytes:
    return _encoder.encode(message)


def decode_request(data: bytes | memoryview) -> Request:
    try:
        return _request_decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise DecodeError(f"bad DHT request: {exc}") from None


def decode_reply(data: bytes | memoryview) -> Reply:
    try:
        return _reply_decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise DecodeError(f"bad DHT reply: {exc}") from None
