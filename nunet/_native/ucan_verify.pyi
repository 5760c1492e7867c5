"""Stub for the compiled `nunet._native.ucan_verify`; the pure-Python twin
`nunet._native._reference.ucan_verify` documents the rules and their order."""

from collections.abc import Mapping, Sequence

from nunet.ucan.token import Token

DEFAULT_SKEW: float
DEFAULT_MAX_DEPTH: int
DEFAULT_MAX_BYTES: int
DEFAULT_CACHE_SIZE: int
REJECTED_SIZE: int
MAX_DEPTH: int
MAX_BYTES: int
MAX_CACHE_SIZE: int
SIGNATURE_BACKEND: str

Anchors = Mapping[str, Sequence[tuple[bytes, Token]]]
Revoked = Mapping[bytes, set[str] | frozenset[str]]

def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool: ...
def decode_token(data: bytes, where: str = "token") -> Token: ...

class Link:
    @property
    def token(self) -> Token: ...
    @property
    def id(self) -> bytes: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def parent(self) -> Link | None: ...
    @property
    def root(self) -> Link: ...
    @property
    def depth(self) -> int: ...
    @property
    def allowance(self) -> int: ...

class ChainVerifier:
    def __init__(
        self,
        roots: set[str] | frozenset[str],
        require: Anchors,
        revoked: Revoked,
        *,
        skew: float = ...,
        max_depth: int = ...,
        max_bytes: int = ...,
        cache_size: int = ...,
    ) -> None: ...
    @property
    def skew(self) -> float: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def cache_size(self) -> int: ...
    @property
    def signatures_verified(self) -> int: ...
    @property
    def links_decoded(self) -> int: ...
    @property
    def cache_hits(self) -> int: ...
    @property
    def cache_misses(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, token_id: object) -> bool: ...
    def clear(self) -> None: ...
    def verify(
        self,
        token: bytes,
        proofs: Mapping[bytes, bytes] | Sequence[bytes],
        now: float,
        *,
        capability: str | None = None,
        topic: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        holder: str | None = None,
        receiver: str | None = None,
        anchored: bool = True,
    ) -> Link: ...
