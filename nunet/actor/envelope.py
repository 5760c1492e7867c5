"""The actor envelope: an immutable message from one actor handle to another.

Wire form: msgpack array of the fields in declaration order, the signature last, decoded strictly
(anything that does not re-encode to the very same bytes is refused, so one envelope has one
encoding and one signature message). Handles travel as arrays `[did, inbox, host, id]` whose
trailing items are left out when they equal the DID (a node's root actor is `[did, "root"]`):
the DMS map shape repeats a 56-character DID three times per handle, which was half of a small
message's bytes. In Python (and in JSON) a handle keeps the DMS shape.

Signature: Ed25519 by the sender over `SIGNATURE_DOMAIN` + the unsigned envelope, which is the
same array without its last item. Since a msgpack array is its header followed by its items, the
unsigned bytes are the signed bytes with a one-smaller header and the signature item (`c4 LL` +
LL bytes) cut off: a receiver slices them out of what arrived (`signed_message`), never
re-encodes (the same scheme as `nunet.ucan.token`).

Replies are envelopes to the caller's reply behaviour (`options.reply_to`, DMS `cont`); their
payload is `REPLY_OK + data` or `REPLY_ERROR + msgpack [code, message]` (`reply_payload`,
`error_payload`, `reply_result`).
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from nunet.actor.handle import Address, Handle
from nunet.codec import DECODE_ERRORS
from nunet.crypto.keys import KeyPair
from nunet.errors import (
    DecodeError,
    LocalProtocolError,
    NunetError,
    RemoteActorError,
    TokenTooLarge,
)
from nunet.net.api import MAX_PAYLOAD
from nunet.ucan.token import is_path

SIGNATURE_DOMAIN = b"nunet:msg:v1:"
SIGNATURE_SIZE = 64
MAX_TOKEN_BYTES = 16 * 1024  # every capability token of one envelope together
MAX_TOKENS = 64  # tokens per envelope, however small (a chain is at most 16 links by default)
MAX_PATH = 256

# msgpack integers stop at 2**64 - 1 (and msgspec cannot say `le` beyond int64).
U64 = Annotated[int, msgspec.Meta(ge=0)]
_Path = Annotated[str, msgspec.Meta(max_length=MAX_PATH)]


_Text = Annotated[str, msgspec.Meta(max_length=128)]
_Inbox = Annotated[str, msgspec.Meta(max_length=256)]


# A handle on the wire: (did, inbox[, host[, id]]), host and id "" or left out when they equal
# the did (trailing ones are left out, so each handle has one encoding).
WireHandle = Annotated[tuple[_Inbox, ...], msgspec.Meta(min_length=2, max_length=4)]


class Options(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    expiry: U64  # Unix time in ns after which the envelope is refused
    reply_to: _Path = ""  # the sender's behaviour that takes the reply (DMS "cont")
    topic: _Path = ""  # set on broadcasts: the gossip topic it was published on


class Envelope(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """A signed (or session-authenticated) message. Field order is the wire order
    (`WireEnvelope`): never reorder. `capabilities`: the leaf token first, then its proofs."""

    to: Handle
    behavior: _Path
    sender: Handle = msgspec.field(name="from")
    nonce: U64
    options: Options
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD)]
    capabilities: tuple[bytes, ...]
    signature: Annotated[bytes, msgspec.Meta(max_length=SIGNATURE_SIZE)] = b""

    @property
    def is_broadcast(self) -> bool:
        return bool(self.options.topic)

    def encode(self) -> bytes:
        return _encoder.encode(_to_wire(self))

    def signing_bytes(self) -> bytes:
        """What the sender signs: domain + the canonical envelope without its signature."""
        return signed_message(self.encode(), len(self.signature))

    def sign(self, keypair: KeyPair) -> Envelope:
        if keypair.did != self.sender.did:
            raise LocalProtocolError(
                f"an envelope from {self.sender.did} cannot be signed by {keypair.did}"
            )
        unsigned = msgspec.structs.replace(self, signature=b"")
        return msgspec.structs.replace(self, signature=keypair.sign(unsigned.signing_bytes()))


class WireEnvelope(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """The envelope as it travels (same fields, same order, compact handles)."""

    to: WireHandle
    behavior: _Path
    sender: WireHandle = msgspec.field(name="from")
    nonce: U64
    options: Options
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD)]
    capabilities: tuple[bytes, ...]
    signature: Annotated[bytes, msgspec.Meta(max_length=SIGNATURE_SIZE)] = b""


# Handles repeat (a few peers, a few actors): convert each once. Bounded: cleared when full.
_MAX_HANDLES = 4096
_wire_of: dict[Handle, tuple[str, ...]] = {}
_handle_of: dict[tuple[str, ...], Handle] = {}


def _wire_handle(h: Handle) -> tuple[str, ...]:
    w = _wire_of.get(h)
    if w is None:
        did = h.did
        host = h.address.host_id
        if not host and did:
            raise LocalProtocolError(f"handle of {did} has no host")
        host = "" if host == did else host
        inbox = h.address.inbox_address
        if h.id != did:
            w = (did, inbox, host, h.id)
        elif host:
            w = (did, inbox, host)
        else:
            w = (did, inbox)
        if len(_wire_of) >= _MAX_HANDLES:
            _wire_of.clear()
        _wire_of[h] = w
    return w


def _handle(w: tuple[str, ...]) -> Handle:
    h = _handle_of.get(w)
    if h is None:
        did, inbox = w[0], w[1]
        host = w[2] if len(w) > 2 else ""
        ident = w[3] if len(w) > 3 else ""
        repeated = (host and host == did) or (ident and ident == did)
        if repeated or (len(w) == 3 and not host) or (len(w) == 4 and not ident):
            # Spelled out where it may be left out: a second encoding of the same handle.
            raise DecodeError("not in canonical form: a handle repeats what it may leave out",
                              path="envelope")
        h = Handle(ident or did, did, Address(host or did, inbox))
        if len(_handle_of) >= _MAX_HANDLES:
            _handle_of.clear()
        _handle_of[w] = h
    return h


def _to_wire(env: Envelope) -> WireEnvelope:
    return WireEnvelope(_wire_handle(env.to), env.behavior, _wire_handle(env.sender), env.nonce,
                        env.options, env.payload, env.capabilities, env.signature)


def _from_wire(w: WireEnvelope) -> Envelope:
    return Envelope(_handle(w.to), w.behavior, _handle(w.sender), w.nonce, w.options, w.payload,
                    w.capabilities, w.signature)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WireEnvelope)
_FIELDS = WireEnvelope.__struct_encode_fields__
_OPTION_FIELDS = Options.__struct_fields__
# A fixarray header: 0x90 | item count. Unsigned, the envelope has one item fewer.
_UNSIGNED_HEADER = SIGNATURE_DOMAIN + bytes((0x90 | (len(_FIELDS) - 1),))


def signed_message(data: bytes | memoryview, signature_size: int) -> bytes:
    """The signature message of the canonical envelope `data` whose signature is
    `signature_size` bytes long (the signature item is `c4`, the size, the bytes)."""
    return _UNSIGNED_HEADER + data[1 : len(data) - 2 - signature_size]


def decode(data: bytes | memoryview, chain: tuple[bytes, ...] | None = None) -> Envelope:
    """An envelope from bytes a peer sent: DecodeError (naming the field) unless it is a
    canonical envelope with valid paths; TokenTooLarge when its tokens exceed MAX_TOKEN_BYTES
    (before any of them is decoded). Says nothing about sender, signature or capabilities.
    `chain`: the envelope was sent by reference (`chains.py`): it must be unsigned and carry no
    tokens of its own, and gets `chain` as its capabilities."""
    # bytes, not a memoryview: comparing a memoryview with bytes is ~10x slower than memcmp.
    raw = data if type(data) is bytes else bytes(data)
    try:
        wire = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"not an envelope: {exc}", path=_path_of(str(exc))) from None
    except DECODE_ERRORS as exc:
        raise DecodeError(f"not an envelope: {exc}", path="envelope") from None
    if _encoder.encode(wire) != raw:
        raise DecodeError("not in canonical form", path="envelope")
    if chain is not None:
        if wire.signature or wire.capabilities:
            raise DecodeError("a chain frame carries an unsigned envelope without tokens",
                              path="signature" if wire.signature else "capabilities")
        wire = msgspec.structs.replace(wire, capabilities=chain)
    env = _from_wire(wire)
    check_bounds(env)
    return env


def encode_bare(env: Envelope) -> bytes:
    """The envelope without its chain (sent by reference, `chains.py`)."""
    return _encoder.encode(WireEnvelope(
        _wire_handle(env.to), env.behavior, _wire_handle(env.sender), env.nonce, env.options,
        env.payload, (), env.signature,
    ))


def check_bounds(env: Envelope) -> None:
    """The rules msgspec's schema cannot say, cheapest first."""
    caps = env.capabilities
    if len(caps) > MAX_TOKENS:
        raise TokenTooLarge(f"{len(caps)} tokens, over the limit of {MAX_TOKENS}", path="chain")
    size = 0
    for token in caps:
        size += len(token)
    if size > MAX_TOKEN_BYTES:
        raise TokenTooLarge(
            f"{size} bytes of tokens, over the limit of {MAX_TOKEN_BYTES}", path="chain"
        )
    if not _valid_path(env.behavior):
        raise DecodeError(f"{env.behavior!r} is not a behaviour path", path="behavior")
    options = env.options
    if options.reply_to and not _valid_path(options.reply_to):
        raise DecodeError(f"{options.reply_to!r} is not a behaviour path", path="options.reply_to")
    if options.topic and not _valid_path(options.topic):
        raise DecodeError(f"{options.topic!r} is not a topic", path="options.topic")
    if env.signature and len(env.signature) != SIGNATURE_SIZE:
        raise DecodeError(f"a signature is {SIGNATURE_SIZE} bytes", path="signature")


_VALID_PATHS: set[str] = set()  # behaviours and topics seen valid: a few dozen in practice
_MAX_VALID_PATHS = 4096


def _valid_path(path: str) -> bool:
    if path in _VALID_PATHS:
        return True
    if not is_path(path):
        return False
    if len(_VALID_PATHS) >= _MAX_VALID_PATHS:  # reply paths are one-off: start afresh
        _VALID_PATHS.clear()
    _VALID_PATHS.add(path)
    return True


_AT = re.compile(r"at `\$\[(\d+)\](?:\[(\d+)\])?([^`]*)`")


def _path_of(message: str) -> str:
    """msgspec's `$[4][0]` location as our dotted path (`options.expiry`)."""
    m = _AT.search(message)
    if m is None:
        return "envelope"
    index = int(m.group(1))
    if index >= len(_FIELDS):
        return "envelope"
    path = _FIELDS[index]
    if m.group(2) is not None:
        sub = int(m.group(2))
        if path == "options" and sub < len(_OPTION_FIELDS):
            path += "." + _OPTION_FIELDS[sub]
        else:
            path += f"[{sub}]"
    return path + m.group(3)


# --- replies -------------------------------------------------------------------------------------

REPLY_OK = b"\x00"
REPLY_ERROR = b"\x01"
_error_decoder = msgspec.msgpack.Decoder(tuple[str, str])


def reply_payload(data: bytes | None) -> bytes:
    return REPLY_OK + (data or b"")


def error_payload(code: str, message: str) -> bytes:
    return REPLY_ERROR + _encoder.encode((code, message))


def error_of(exc: NunetError) -> bytes:
    return error_payload(exc.code, str(exc))


def reply_result(payload: bytes) -> bytes:
    """The data of a reply payload, or the remote error it carries as RemoteActorError."""
    if payload[:1] == REPLY_OK:
        return payload[1:]
    if payload[:1] == REPLY_ERROR:
        try:
            code, message = _error_decoder.decode(payload[1:])
        except DECODE_ERRORS as exc:
            raise DecodeError(f"not an error reply: {exc}", path="payload") from None
        raise RemoteActorError(message, remote_code=code)
    raise DecodeError("not a reply payload", path="payload")


# --- JSON, for people and the local API ----------------------------------------------------------


class OptionsDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    expiry: U64
    reply_to: _Path = ""
    topic: _Path = ""


class EnvelopeDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    to: Handle
    behavior: _Path
    sender: Handle = msgspec.field(name="from")
    nonce: U64
    options: OptionsDoc
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD)]
    capabilities: tuple[bytes, ...] = ()
    signature: Annotated[bytes, msgspec.Meta(max_length=SIGNATURE_SIZE)] = b""


_json_decoder = msgspec.json.Decoder(EnvelopeDoc)


def to_doc(env: Envelope) -> EnvelopeDoc:
    """The envelope in its JSON shape (`from` for the sender, bytes as base64)."""
    o = env.options
    return EnvelopeDoc(
        to=env.to,
        behavior=env.behavior,
        sender=env.sender,
        nonce=env.nonce,
        options=OptionsDoc(expiry=o.expiry, reply_to=o.reply_to, topic=o.topic),
        payload=env.payload,
        capabilities=env.capabilities,
        signature=env.signature,
    )


def from_doc(doc: EnvelopeDoc) -> Envelope:
    """The envelope a JSON document describes; TokenTooLarge or DecodeError as `decode`."""
    o = doc.options
    env = Envelope(
        to=doc.to,
        behavior=doc.behavior,
        sender=doc.sender,
        nonce=doc.nonce,
        options=Options(expiry=o.expiry, reply_to=o.reply_to, topic=o.topic),
        payload=doc.payload,
        capabilities=doc.capabilities,
        signature=doc.signature,
    )
    check_bounds(env)
    return env


def to_json(env: Envelope) -> bytes:
    return msgspec.json.encode(to_doc(env))


def from_json(data: bytes | str) -> Envelope:
    """An envelope from `to_json`'s form; DecodeError or TokenTooLarge as `decode`."""
    try:
        doc = _json_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"not an envelope: {exc}", path="envelope") from None
    except DECODE_ERRORS as exc:
        raise DecodeError(f"not an envelope: {exc}", path="envelope") from None
    return from_doc(doc)
