"""UCAN-style capabilities: tokens, delegation chains, trust contexts, revocation."""

from __future__ import annotations

from nunet.ucan.chain import NATIVE, ChainVerifier, Link, decode_token, verify_chain
from nunet.ucan.store import CapabilityStore
from nunet.ucan.token import (
    ACTIONS,
    Action,
    Token,
    covers,
    encode_token,
    from_text,
    is_path,
    issue,
    revoke,
    signed_message,
    to_json,
    to_text,
    token_id,
)
from nunet.ucan.trust import TrustContext

__all__ = [
    "ACTIONS",
    "NATIVE",
    "Action",
    "CapabilityStore",
    "ChainVerifier",
    "Link",
    "Token",
    "TrustContext",
    "covers",
    "decode_token",
    "encode_token",
    "from_text",
    "is_path",
    "issue",
    "revoke",
    "signed_message",
    "to_json",
    "to_text",
    "token_id",
    "verify_chain",
]
