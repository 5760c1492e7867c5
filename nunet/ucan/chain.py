"""Verifying capability chains: the one import point for the verifier.

The implementation is `nunet._native.ucan_verify` (compiled) unless `NUNET_NO_NATIVE=1` is set or it
is not built, then its pure-Python twin `nunet._native._reference.ucan_verify` (with a
`NativeFallbackWarning`). The twin's docstring is the specification of every rule and its order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from nunet._native import is_native, load

if TYPE_CHECKING:
    from nunet._native._reference import ucan_verify as impl
    from nunet.ucan.token import Token
    from nunet.ucan.trust import TrustContext
else:
    impl = load("ucan_verify")

NATIVE: bool = is_native(impl)
ChainVerifier = impl.ChainVerifier
Link = impl.Link
verify_signature = impl.verify_signature
DEFAULT_SKEW: float = impl.DEFAULT_SKEW
DEFAULT_MAX_DEPTH: int = impl.DEFAULT_MAX_DEPTH
DEFAULT_MAX_BYTES: int = impl.DEFAULT_MAX_BYTES
DEFAULT_CACHE_SIZE: int = impl.DEFAULT_CACHE_SIZE


def decode_token(data: bytes) -> Token:
    """A token from bytes a peer sent: strict (canonical encoding, valid DIDs and paths), or
    `MalformedToken` naming the field. Says nothing about its signature: verify the chain."""
    return impl.decode_token(data)


def verify_chain(
    token: bytes,
    proofs: Mapping[bytes, bytes] | Sequence[bytes],
    trust: TrustContext,
    now: float,
    *,
    capability: str | None = None,
    topic: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    holder: str | None = None,
    receiver: str | None = None,
) -> Link:
    """The verified leaf `Link` if the chain `token` + `proofs` grants what is asked at `now`
    under `trust`, else the specific `SecurityError` (rules: see the module docstring of
    `nunet._native._reference.ucan_verify`). The per-message hot path: a chain verified once is
    afterwards checked from `trust`'s cache without any signature.

    Per message, pass `holder=` the sender and `receiver=` our DID: a delegation must then be
    addressed to the sender, an invocation issued by the sender to us, a broadcast issued by the
    sender. `audience=` and `issuer=` check the leaf's fields directly."""
    return trust.verifier.verify(
        token,
        proofs,
        now,
        capability=capability,
        topic=topic,
        audience=audience,
        issuer=issuer,
        holder=holder,
        receiver=receiver,
    )
