"""Identity and money: Ed25519 keys, did:key, the encrypted keystore, payment addresses."""

from __future__ import annotations

from nunet.crypto.did import did_from_public_key, is_did, public_key_from_did
from nunet.crypto.keys import KeyPair, verify
from nunet.crypto.keystore import KeyInfo, KeyStore, passphrase_from_env_or_prompt
from nunet.crypto.wallet import Wallet, new_wallet, wallet_from_mnemonic

__all__ = [
    "KeyInfo",
    "KeyPair",
    "KeyStore",
    "Wallet",
    "did_from_public_key",
    "is_did",
    "new_wallet",
    "passphrase_from_env_or_prompt",
    "public_key_from_did",
    "verify",
    "wallet_from_mnemonic",
]
