"""Capability chains sent once per session, then referred to by an 8-byte id (sans-I/O).

A direct envelope over an authenticated session carries the same chain on every message (a
~290-byte token for a one-link chain, more for deeper ones): on 64-byte payloads that is most
of the bytes on the wire, and bytes are what a QUIC packet costs. So an unsigned direct envelope
may leave its chain out and name it instead, once the receiver has acknowledged holding it:

- the sender sends the chain with an id it chose (`DEFINE`) on every message until the receiver
  acknowledges (`ACK`), then only the id (`REF`);
- the receiver keeps the last `capacity` chains of each peer; a `REF` it cannot resolve (evicted,
  or a restarted process) is refused (`unknown_chain`) and answered with `NACK`, after which the
  sender defines the chain again.

Nothing here is trusted: the receiver puts the chain back into the envelope and verifies it as
if it had travelled inline, bound to the session's sender, so a peer can only refer to chains
it sent itself. Signed envelopes (children, relays, gossip) keep their chains inline: their
signature covers them. Tables are per peer and dropped when the peer disconnects.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.errors import DecodeError

# Frame tags on kind ACTOR; a plain envelope starts with a msgpack array header (0x9N).
DEFINE = 0x01  # DEFINE id(8) len(2) chain envelope
REF = 0x02  # REF id(8) envelope
ACK = 0x03  # ACK id(8): receiver -> sender
NACK = 0x04  # NACK id(8): receiver -> sender, "define it again"
ID_SIZE = 8
MAX_CHAIN_FRAME = 16 * 1024 + 256  # the chain's msgpack: tokens are at most 16 KiB together

Chain = tuple[bytes, ...]
_chain_decoder = msgspec.msgpack.Decoder(tuple[bytes, ...])
_encoder = msgspec.msgpack.Encoder()


class ChainSender:
    """One peer's view from the sending side: which chains it acknowledged."""

    __slots__ = ("_acked", "_ids", "capacity")

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[Chain, bytes] = OrderedDict()
        self._acked: set[bytes] = set()

    def frame_prefix(self, chain: Chain) -> bytes:
        """What goes before the envelope (sent without its chain): the whole chain until the
        peer acknowledged it, then its id."""
        cid = self._ids.get(chain)
        if cid is None:
            cid = secrets.token_bytes(ID_SIZE)
            self._ids[chain] = cid
            if len(self._ids) > self.capacity:
                _, old = self._ids.popitem(last=False)
                self._acked.discard(old)
        if cid in self._acked:
            return bytes((REF,)) + cid
        body = _encoder.encode(chain)
        return bytes((DEFINE,)) + cid + len(body).to_bytes(2, "big") + body

    def acked(self, cid: bytes) -> None:
        if cid in self._ids.values():
            self._acked.add(cid)

    def nacked(self, cid: bytes) -> None:
        self._acked.discard(cid)


class ChainReceiver:
    """One peer's chains on the receiving side: the last `capacity` it defined."""

    __slots__ = ("_chains", "capacity")

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._chains: OrderedDict[bytes, Chain] = OrderedDict()

    def define(self, cid: bytes, chain: Chain) -> bool:
        """Keep `chain` under `cid`; True when it is new (to be acknowledged)."""
        known = cid in self._chains
        self._chains[cid] = chain
        self._chains.move_to_end(cid)
        if len(self._chains) > self.capacity:
            self._chains.popitem(last=False)
        return not known

    def resolve(self, cid: bytes) -> Chain | None:
        return self._chains.get(cid)


def split_define(data: bytes) -> tuple[bytes, Chain, bytes]:
    """(id, chain, envelope bytes) of a DEFINE frame; DecodeError if it is not one."""
    if len(data) < 1 + ID_SIZE + 2:
        raise DecodeError("truncated chain definition", path="chain")
    cid = data[1 : 1 + ID_SIZE]
    size = int.from_bytes(data[1 + ID_SIZE : 3 + ID_SIZE], "big")
    start = 3 + ID_SIZE
    if size > MAX_CHAIN_FRAME or len(data) < start + size:
        raise DecodeError("chain definition over its bounds", path="chain")
    try:
        chain = _chain_decoder.decode(data[start : start + size])
    except DECODE_ERRORS as exc:
        raise DecodeError(f"not a chain: {exc}", path="chain") from None
    if not chain:
        raise DecodeError("an empty chain is never defined", path="chain")
    return cid, chain, data[start + size :]


def split_ref(data: bytes) -> tuple[bytes, bytes]:
    """(id, envelope bytes) of a REF frame."""
    if len(data) < 1 + ID_SIZE:
        raise DecodeError("truncated chain reference", path="chain")
    return data[1 : 1 + ID_SIZE], data[1 + ID_SIZE :]


def control(tag: int, cid: bytes) -> bytes:
    return bytes((tag,)) + cid
