"""Payment addresses (Ethereum, Cardano) from BIP-39 English mnemonics.

bip_utils is imported inside the functions: it is heavy and only wallet commands need it.
"""

from __future__ import annotations

import msgspec

from nunet.errors import ValidationError

CHAINS = ("ethereum", "cardano")
WORD_COUNTS = (12, 15, 18, 21, 24)
ETHEREUM_PATH = "m/44'/60'/0'/0/0"
# CIP-1852 payment key; the base address's delegation part is the staking key m/1852'/1815'/0'/2/0.
CARDANO_PATH = "m/1852'/1815'/0'/0/0"


class Wallet(msgspec.Struct, frozen=True):
    chain: str
    network: str  # "mainnet" | "testnet"
    address: str
    mnemonic: str
    derivation_path: str

    def __repr__(self) -> str:
        # The mnemonic is the money: keep it out of logs and tracebacks.
        return (
            f"Wallet(chain={self.chain!r}, network={self.network!r}, address={self.address!r}, "
            f"derivation_path={self.derivation_path!r}, mnemonic=<hidden>)"
        )


def new_wallet(chain: str, testnet: bool = False, words: int = 24) -> Wallet:
    """A fresh random mnemonic and its first receiving address on `chain`."""
    _check_chain(chain)
    if isinstance(words, bool) or words not in WORD_COUNTS:
        raise ValidationError(f"words must be one of {WORD_COUNTS}", path="words")
    from bip_utils import Bip39Languages, Bip39MnemonicGenerator, Bip39WordsNum

    generator = Bip39MnemonicGenerator(Bip39Languages.ENGLISH)
    mnemonic = str(generator.FromWordsNumber(Bip39WordsNum(words)).ToStr())
    return _derive(chain, mnemonic, testnet)


def wallet_from_mnemonic(chain: str, mnemonic: str, testnet: bool = False) -> Wallet:
    """The first receiving address of an existing mnemonic on `chain`."""
    _check_chain(chain)
    if not isinstance(mnemonic, str):
        raise ValidationError("mnemonic must be a string", path="mnemonic")
    normalized = " ".join(mnemonic.lower().split())
    from bip_utils import Bip39Languages, Bip39MnemonicValidator

    if not Bip39MnemonicValidator(Bip39Languages.ENGLISH).IsValid(normalized):
        raise ValidationError(
            "not a valid BIP-39 English mnemonic (unknown word, wrong word count or bad checksum)",
            path="mnemonic",
        )
    return _derive(chain, normalized, testnet)


def _check_chain(chain: str) -> None:
    if chain not in CHAINS:
        raise ValidationError(f"chain must be one of {CHAINS}, got {chain!r}", path="chain")


def _derive(chain: str, mnemonic: str, testnet: bool) -> Wallet:
    if chain == "ethereum":
        address, path = _ethereum_address(mnemonic), ETHEREUM_PATH
    else:
        address, path = _cardano_address(mnemonic, testnet), CARDANO_PATH
    return Wallet(
        chain=chain,
        network="testnet" if testnet else "mainnet",
        address=address,
        mnemonic=mnemonic,
        derivation_path=path,
    )


def _ethereum_address(mnemonic: str) -> str:
    """BIP-44 m/44'/60'/0'/0/0, EIP-55 checksummed; the same address on every Ethereum network."""
    from bip_utils import Bip39Languages, Bip39SeedGenerator, Bip44, Bip44Changes, Bip44Coins

    seed = Bip39SeedGenerator(mnemonic, Bip39Languages.ENGLISH).Generate()
    account = Bip44.FromSeed(seed, Bip44Coins.ETHEREUM).Purpose().Coin().Account(0)
    return str(account.Change(Bip44Changes.CHAIN_EXT).AddressIndex(0).PublicKey().ToAddress())


def _cardano_address(mnemonic: str, testnet: bool) -> str:
    """Shelley base address (CIP-1852, Icarus master key): payment 0/0 plus staking 2/0."""
    from bip_utils import (
        Bip39Languages,
        Bip44Changes,
        CardanoIcarusSeedGenerator,
        CardanoShelley,
        Cip1852,
        Cip1852Coins,
    )

    seed = CardanoIcarusSeedGenerator(mnemonic, Bip39Languages.ENGLISH).Generate()
    coin = Cip1852Coins.CARDANO_ICARUS_TESTNET if testnet else Cip1852Coins.CARDANO_ICARUS
    account = Cip1852.FromSeed(seed, coin).Purpose().Coin().Account(0)
    shelley = CardanoShelley.FromCip1852Object(account)
    return str(shelley.Change(Bip44Changes.CHAIN_EXT).AddressIndex(0).PublicKeys().ToAddress())
