"""The capability token: its schema, canonical bytes, signing, and the human JSON form.

Wire form: a msgpack array of the fields in declaration order (`array_like`), the signature last.
The signature covers `SIGNATURE_DOMAIN + canonical bytes of the token without its signature`;
since a msgpack array is its header followed by its items, the unsigned bytes are the signed
bytes with a one-smaller array header and the 66-byte signature item (`c4 40` + 64 bytes) cut
off, so a verifier never re-encodes anything to check a signature (`signed_message`).

A token's id is blake3 of its signed bytes. Parents are referenced by id in `proofs`, never
nested, so a chain of depth d is d tokens, not d nested copies (DMS nests them: O(d^2) bytes).
Decoding is strict and lives with the verifier (`nunet.ucan.chain.decode_token`): it refuses
anything that does not re-encode to the very same bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import re
from collections.abc import Iterable
from typing import Annotated, Literal

import msgspec
from blake3 import blake3

from nunet.crypto.did import public_key_from_did
from nunet.crypto.keys import KeyPair
from nunet.errors import InvalidDID, ValidationError

Action = Literal["invoke", "delegate", "broadcast", "revoke"]
ACTIONS: tuple[Action, ...] = ("invoke", "delegate", "broadcast", "revoke")

SIGNATURE_DOMAIN = b"nunet:ucan:v1:"
ID_SIZE = 32
SIGNATURE_SIZE = 64
NONCE_SIZE = 16
MAX_PATH_LENGTH = 256
MAX_PATHS = 64
# A did:key for Ed25519 is 56 characters; room for other methods later, never for a novel.
MAX_DID_LENGTH = 128
# Seconds since the Unix epoch; 2**40 is year 36812, and keeps every time an exact float.
MAX_TIME = 1 << 40
MAX_DEPTH_LIMIT = 255

# A behaviour path or topic: "/" (everything) or "/seg/seg..." with printable ASCII segments.
_PATH = re.compile(r"/\Z|(?:/[!-.0-~]+)+\Z")

Did = Annotated[str, msgspec.Meta(max_length=MAX_DID_LENGTH)]
Path = Annotated[str, msgspec.Meta(max_length=MAX_PATH_LENGTH)]
Paths = Annotated[tuple[Path, ...], msgspec.Meta(max_length=MAX_PATHS)]
Time = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME)]
TokenId = Annotated[bytes, msgspec.Meta(min_length=ID_SIZE, max_length=ID_SIZE)]


class Token(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """A signed capability token. Field order is the wire format: never reorder."""

    action: Action
    issuer: Did
    subject: Did
    # Empty only on broadcast and revoke tokens, which are addressed to no one in particular.
    audience: Did
    capabilities: Paths
    topics: Paths
    nonce: Annotated[bytes, msgspec.Meta(min_length=8, max_length=32)]
    not_before: Time
    expiry: Time
    # How many more links may follow this one (0: it cannot be delegated); None: no own limit.
    depth: Annotated[int, msgspec.Meta(ge=0, le=MAX_DEPTH_LIMIT)] | None
    # The parent's id (at most one); for a revocation, the id of the token it revokes.
    proofs: Annotated[tuple[TokenId, ...], msgspec.Meta(max_length=1)]
    signature: Annotated[bytes, msgspec.Meta(min_length=SIGNATURE_SIZE, max_length=SIGNATURE_SIZE)]


_encoder = msgspec.msgpack.Encoder()
# The signature item at the end of a signed token: bin8 header (c4), length 64, the bytes.
_SIGNATURE_ITEM = 2 + SIGNATURE_SIZE
# A fixarray header: 0x90 | item count. Unsigned, the token has one item fewer.
_UNSIGNED_HEADER = 0x90 | (len(Token.__struct_fields__) - 1)


def encode_token(token: Token) -> bytes:
    """The canonical (signed) bytes of `token`."""
    return _encoder.encode(token)


def token_id(data: bytes) -> bytes:
    """The id of a token: blake3 of its signed bytes."""
    return blake3(data).digest()


def signed_message(data: bytes) -> bytes:
    """What the signature of the signed token `data` covers (domain + unsigned canonical bytes).
    `data` must be a canonical token, as `decode_token` guarantees."""
    return SIGNATURE_DOMAIN + bytes((_UNSIGNED_HEADER,)) + data[1:-_SIGNATURE_ITEM]


def is_path(text: str) -> bool:
    """Whether `text` is a valid capability path or topic."""
    return len(text) <= MAX_PATH_LENGTH and _PATH.match(text) is not None


def covers(granted: str, wanted: str) -> bool:
    """Whether capability `granted` grants `wanted`: the same path or one below it, by whole
    segments (`/dms/deployment` covers `/dms/deployment/bid`, not `/dms/deploymentx`)."""
    if granted == "/":
        return wanted.startswith("/")
    return wanted.startswith(granted) and (
        len(wanted) == len(granted) or wanted[len(granted)] == "/"
    )


# --- issuing --------------------------------------------------------------------------------------


def issue(
    key: KeyPair,
    *,
    action: Action,
    subject: str,
    audience: str,
    capabilities: Iterable[str] = (),
    topics: Iterable[str] = (),
    not_before: int,
    expiry: int,
    depth: int | None = None,
    parent: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """A token signed by `key` (its issuer), as canonical bytes.

    `parent` is the signed parent token this one is delegated from (its id goes into `proofs`);
    nothing here checks that the delegation is allowed: verification does. Bad arguments are
    the caller's bug: ValidationError naming the argument.
    """
    if action not in ACTIONS:
        raise ValidationError(f"action must be one of {', '.join(ACTIONS)}", path="action")
    if action == "revoke":
        raise ValidationError("use revoke() to make a revocation", path="action")
    proofs = () if parent is None else (_id_of(parent, "parent"),)
    return _sign(
        key,
        action=action,
        subject=subject,
        audience=audience,
        capabilities=_paths(capabilities, "capabilities"),
        topics=_paths(topics, "topics"),
        not_before=not_before,
        expiry=expiry,
        depth=depth,
        proofs=proofs,
        nonce=nonce,
    )


def revoke(
    key: KeyPair,
    target: bytes,
    *,
    not_before: int,
    expiry: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """A revocation of the signed token `target`, signed by `key`.

    It takes effect only if `key` is the issuer of the target or of one of its ancestors (the
    verifier checks that against the chain it sees). It is kept until `expiry`, by default the
    target's own expiry, after which the target is dead anyway.
    """
    tok = _decode_own(target, "target")
    return _sign(
        key,
        action="revoke",
        subject=tok.subject,
        audience="",
        capabilities=(),
        topics=(),
        not_before=not_before,
        expiry=tok.expiry if expiry is None else expiry,
        depth=None,
        proofs=(token_id(target),),
        nonce=nonce,
    )


def _sign(
    key: KeyPair,
    *,
    action: Action,
    subject: str,
    audience: str,
    capabilities: tuple[str, ...],
    topics: tuple[str, ...],
    not_before: int,
    expiry: int,
    depth: int | None,
    proofs: tuple[bytes, ...],
    nonce: bytes | None,
) -> bytes:
    _did(subject, "subject")
    if audience or action not in ("broadcast", "revoke"):
        _did(audience, "audience")
    _time(not_before, "not_before")
    _time(expiry, "expiry")
    if not_before > expiry:
        raise ValidationError("not_before is after expiry", path="not_before")
    if depth is not None and (
        isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH_LIMIT
    ):
        raise ValidationError(f"depth must be in 0..{MAX_DEPTH_LIMIT} or None", path="depth")
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    elif not isinstance(nonce, bytes) or not 8 <= len(nonce) <= 32:
        raise ValidationError("nonce must be 8 to 32 bytes", path="nonce")
    unsigned = Token(
        action=action,
        issuer=key.did,
        subject=subject,
        audience=audience,
        capabilities=capabilities,
        topics=topics,
        nonce=nonce,
        not_before=not_before,
        expiry=expiry,
        depth=depth,
        proofs=proofs,
        signature=bytes(SIGNATURE_SIZE),
    )
    placeholder = encode_token(unsigned)
    signature = key.sign(signed_message(placeholder))
    return encode_token(msgspec.structs.replace(unsigned, signature=signature))


def _did(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise ValidationError("must be a DID string", path=name)
    try:
        public_key_from_did(value)
    except InvalidDID as exc:
        raise ValidationError(exc.message, path=name) from None


def _time(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIME:
        raise ValidationError(f"must be whole seconds since the epoch, 0..{MAX_TIME}", path=name)


def _paths(values: Iterable[str], name: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValidationError("must be a list of paths, not one string", path=name)
    out = tuple(values)
    if len(out) > MAX_PATHS:
        raise ValidationError(f"at most {MAX_PATHS} paths", path=name)
    for i, path in enumerate(out):
        if not isinstance(path, str) or not is_path(path):
            raise ValidationError(
                f"{path!r} is not a path like /dms/deployment (printable ASCII segments)",
                path=f"{name}[{i}]",
            )
    return out


def _id_of(data: object, name: str) -> bytes:
    _decode_own(data, name)
    assert isinstance(data, bytes)
    return token_id(data)


_decoder = msgspec.msgpack.Decoder(Token)


def _decode_own(data: object, name: str) -> Token:
    """A token handed to us by our own caller (not a peer): ValidationError if it is not one."""
    if not isinstance(data, bytes):
        raise ValidationError("must be a signed token (bytes)", path=name)
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec reports bad UTF-8 in a string as UnicodeDecodeError, not DecodeError.
        raise ValidationError(f"not a token: {exc}", path=name) from None


# --- text forms -----------------------------------------------------------------------------------

TEXT_PREFIX = "ucan1:"


def to_text(data: bytes) -> str:
    """A token as one line of text (for command lines and config files): `ucan1:` + base64url."""
    return TEXT_PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_text(text: str) -> bytes:
    """The bytes of a token written by `to_text`; ValidationError if it is not one. The bytes
    still have to be decoded and verified."""
    if not isinstance(text, str) or not text.startswith(TEXT_PREFIX):
        raise ValidationError(f"a token in text starts with {TEXT_PREFIX!r}", path="token")
    body = text[len(TEXT_PREFIX) :].strip()
    try:
        # validate=True: the default silently skips characters outside the alphabet.
        return base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"not base64url: {exc}", path="token") from None


def to_json(data: bytes) -> bytes:
    """A token as indented JSON for people (`nunet cap` prints this): times as ISO UTC, bytes
    as hex, plus its id. Not a wire format."""
    tok = _decode_own(data, "token")
    doc = {
        "id": token_id(data).hex(),
        "action": tok.action,
        "issuer": tok.issuer,
        "subject": tok.subject,
        "audience": tok.audience,
        "capabilities": list(tok.capabilities),
        "topics": list(tok.topics),
        "nonce": tok.nonce.hex(),
        "not_before": iso_time(tok.not_before),
        "expiry": iso_time(tok.expiry),
        "depth": tok.depth,
        "proofs": [p.hex() for p in tok.proofs],
        "signature": tok.signature.hex(),
    }
    return msgspec.json.format(msgspec.json.encode(doc), indent=2)


def iso_time(seconds: int) -> str:
    """Unix seconds as ISO 8601 UTC (`2026-12-02T17:00:00Z`); the number itself if out of range."""
    try:
        stamp = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return str(seconds)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
