"""Payment addresses from mnemonics, checked against published vectors and decoded by hand."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from Crypto.Hash import keccak

from nunet.crypto.wallet import Wallet, new_wallet, wallet_from_mnemonic
from nunet.errors import ValidationError

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "wallet.json").read_text())
ABANDON = "abandon " * 11 + "about"

# --- independent decoders: written from the specs, sharing no code with bip_utils -------------

BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_decode(text: str) -> tuple[str, bytes]:
    """BIP-173 bech32 without the 90-character limit (Cardano addresses are longer)."""
    hrp, _, data = text.rpartition("1")
    values = [BECH32_CHARSET.index(char) for char in data]
    checksum = 1
    generators = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values
    for value in expanded:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(generators):
            if (top >> i) & 1:
                checksum ^= generator
    assert checksum == 1, f"bad bech32 checksum in {text}"
    accumulator, bits, out = 0, 0, bytearray()
    for value in values[:-6]:
        accumulator = (accumulator << 5) | value
        bits += 5
        while bits >= 8:
            bits -= 8
            out.append((accumulator >> bits) & 0xFF)
    return hrp, bytes(out)


def is_eip55(address: str) -> bool:
    body = address.removeprefix("0x")
    if len(body) != 40 or not address.startswith("0x"):
        return False
    digest = keccak.new(digest_bits=256, data=body.lower().encode()).hexdigest()
    return all(
        char == (char.upper() if int(nibble, 16) >= 8 else char.lower())
        for char, nibble in zip(body, digest[:40], strict=True)
    )


@pytest.mark.parametrize(
    "address",
    [  # the examples in EIP-55 itself
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ],
)
def test_eip55_checker_accepts_spec_examples(address: str) -> None:
    assert is_eip55(address)
    assert not is_eip55(address.lower())
    assert not is_eip55(address[:2] + address[2:].swapcase())


# --- Ethereum ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["ethereum"], ids=lambda v: v["address"][:10])
@pytest.mark.parametrize("testnet", [False, True])
def test_ethereum_vectors(vector: dict[str, str], testnet: bool) -> None:
    wallet = wallet_from_mnemonic("ethereum", vector["mnemonic"], testnet=testnet)
    assert wallet.address == vector["address"]
    assert is_eip55(wallet.address)
    assert wallet.chain == "ethereum"
    assert wallet.network == ("testnet" if testnet else "mainnet")
    assert wallet.derivation_path == "m/44'/60'/0'/0/0"
    assert wallet.mnemonic == vector["mnemonic"]


# --- Cardano ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["cardano"], ids=lambda v: v["mnemonic"][:12])
def test_cardano_vectors(vector: dict[str, str]) -> None:
    mainnet = wallet_from_mnemonic("cardano", vector["mnemonic"])
    testnet = wallet_from_mnemonic("cardano", vector["mnemonic"], testnet=True)
    assert mainnet.address == vector["mainnet"]
    assert testnet.address == vector["testnet"]
    assert (mainnet.network, testnet.network) == ("mainnet", "testnet")
    assert mainnet.chain == testnet.chain == "cardano"
    assert mainnet.derivation_path == "m/1852'/1815'/0'/0/0"


@pytest.mark.parametrize("vector", VECTORS["cardano"], ids=lambda v: v["mnemonic"][:12])
def test_cardano_addresses_decode_as_shelley_base_addresses(vector: dict[str, str]) -> None:
    main_hrp, main = bech32_decode(wallet_from_mnemonic("cardano", vector["mnemonic"]).address)
    test_hrp, test = bech32_decode(
        wallet_from_mnemonic("cardano", vector["mnemonic"], testnet=True).address
    )
    assert (main_hrp, test_hrp) == ("addr", "addr_test")
    # CIP-19: header type 0 (payment key hash + stake key hash), network tag 1 main / 0 test,
    # then two 28-byte blake2b-224 hashes that do not depend on the network.
    assert main[0] == 0x01
    assert test[0] == 0x00
    assert len(main) == len(test) == 1 + 28 + 28
    assert main[1:] == test[1:]
    assert main[1:29] != main[29:]


def test_cardano_payment_key_matches_cip19() -> None:
    vector = VECTORS["cip19_payment_key"]
    _, payment_key = bech32_decode(vector["addr_vk"])
    assert len(payment_key) == 32
    _, address = bech32_decode(wallet_from_mnemonic("cardano", vector["mnemonic"]).address)
    assert address[1:29] == hashlib.blake2b(payment_key, digest_size=28).digest()


# --- input handling ---------------------------------------------------------------------------


@pytest.mark.parametrize("chain", ["ethereum", "cardano"])
def test_mnemonic_whitespace_and_case_normalized(chain: str) -> None:
    messy = "  " + ABANDON.upper().replace(" ", " \t\n ") + "\n"
    wallet = wallet_from_mnemonic(chain, messy)
    assert wallet.address == wallet_from_mnemonic(chain, ABANDON).address
    assert wallet.mnemonic == ABANDON


@pytest.mark.parametrize("chain", ["bitcoin", "Ethereum", "ETH", "ada", "", " cardano", None, 1])
def test_bad_chain(chain: Any) -> None:
    with pytest.raises(ValidationError) as info:
        wallet_from_mnemonic(chain, ABANDON)
    assert info.value.path == "chain"
    with pytest.raises(ValidationError) as info:
        new_wallet(chain)
    assert info.value.path == "chain"


@pytest.mark.parametrize(
    "mnemonic",
    [
        "",
        "   ",
        "abandon " * 11 + "abandon",  # bad checksum
        "abandon " * 11 + "zebra",  # bad checksum
        "abandon " * 11 + "notaword",
        "abandon " * 10 + "about",  # 11 words
        "abandon " * 12 + "about",  # 13 words
        ABANDON + " about",
        # a valid Spanish mnemonic: we only take English
        "ábaco ábaco ábaco ábaco ábaco ábaco ábaco ábaco ábaco ábaco ábaco abierto",
        None,
        b"abandon",
        ["abandon"] * 12,
    ],
)
@pytest.mark.parametrize("chain", ["ethereum", "cardano"])
def test_bad_mnemonic(chain: str, mnemonic: Any) -> None:
    with pytest.raises(ValidationError) as info:
        wallet_from_mnemonic(chain, mnemonic)
    assert info.value.path == "mnemonic"


@pytest.mark.parametrize("chain", ["ethereum", "cardano"])
def test_new_wallet_is_a_24_word_mnemonic_that_rederives(chain: str) -> None:
    wallet = new_wallet(chain)
    words = wallet.mnemonic.split(" ")
    assert len(words) == 24
    assert all(word.isascii() and word.isalpha() and word.islower() for word in words)
    assert wallet_from_mnemonic(chain, wallet.mnemonic) == wallet
    assert wallet.network == "mainnet"


@pytest.mark.parametrize("words", [12, 15, 18, 21, 24])
def test_new_wallet_word_counts(words: int) -> None:
    wallet = new_wallet("ethereum", words=words)
    assert len(wallet.mnemonic.split()) == words
    assert wallet_from_mnemonic("ethereum", wallet.mnemonic).address == wallet.address


@pytest.mark.parametrize("words", [0, 11, 13, 23, 25, 48, True, "24"])
def test_new_wallet_bad_word_count(words: Any) -> None:
    with pytest.raises(ValidationError) as info:
        new_wallet("ethereum", words=words)
    assert info.value.path == "words"


def test_new_wallet_testnet_prefixes() -> None:
    cardano = new_wallet("cardano", testnet=True)
    assert cardano.address.startswith("addr_test1")
    assert cardano.network == "testnet"
    assert wallet_from_mnemonic("cardano", cardano.mnemonic, testnet=True) == cardano
    mainnet = wallet_from_mnemonic("cardano", cardano.mnemonic)
    assert mainnet.address.startswith("addr1")
    ethereum = new_wallet("ethereum", testnet=True)
    assert ethereum.network == "testnet"
    assert ethereum.address.startswith("0x")
    assert is_eip55(ethereum.address)


def test_new_wallets_differ() -> None:
    assert new_wallet("cardano", words=12).mnemonic != new_wallet("cardano", words=12).mnemonic


def test_repr_hides_mnemonic() -> None:
    wallet = wallet_from_mnemonic("ethereum", ABANDON)
    for text in (repr(wallet), str(wallet), f"{wallet}"):
        assert "abandon" not in text
        assert wallet.address in text


def test_wallet_is_a_frozen_value() -> None:
    wallet = wallet_from_mnemonic("cardano", ABANDON)
    assert isinstance(wallet, Wallet)
    with pytest.raises(AttributeError):
        wallet.address = "addr1..."  # type: ignore[misc]


def test_importing_crypto_does_not_import_bip_utils() -> None:
    code = "import sys, nunet.crypto; print('bip_utils' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
