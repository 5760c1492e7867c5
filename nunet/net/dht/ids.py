"""Kademlia ids: 256-bit integers compared by XOR distance.

A node's id is blake3 of the Ed25519 public key its DID names, so an id cannot be chosen without
owning the key (a node cannot place itself next to a victim's key by picking a DID string).
Ids are Python ints: XOR and `bit_length` on them are single C calls, faster than bytes.
"""

from __future__ import annotations

import functools

import blake3

from nunet.crypto.did import public_key_from_did

ID_BITS = 256
ID_BYTES = ID_BITS // 8


@functools.lru_cache(maxsize=1 << 16)
def node_id(did: str) -> int:
    """The id of a did:key (InvalidDID when `did` is not one)."""
    return int.from_bytes(blake3.blake3(public_key_from_did(did)).digest(), "big")


def hashed_id(domain: bytes, data: bytes) -> int:
    """The id of a non-DID key, under a domain prefix so that key spaces never collide."""
    return int.from_bytes(blake3.blake3(domain + data).digest(), "big")


def id_to_bytes(ident: int) -> bytes:
    return ident.to_bytes(ID_BYTES, "big")


def id_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def bucket_index(local: int, other: int) -> int:
    """Index of the k-bucket `other` falls in, seen from `local`: the position of the highest bit
    in which they differ (255 = the far half of the space); -1 for the same id."""
    return (local ^ other).bit_length() - 1
