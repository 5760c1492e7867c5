"""Capability chain verification: cold (every signature), cached (per message), against raw
libsodium and against the DMS nested-JSON scheme, all measured in the same run.

- `ucan.verify.cold.dN`: a chain of N links that the verifier has never seen (its cache cleared
  before each chain; the did:key -> public key cache stays warm, as on a running node), presented
  as leaf + list of proofs, with a capability, like a message would. Baseline
  `libsodium-verify-x-depth`: N raw PyNaCl verifications (`crypto_sign_open`) of those links'
  signed messages, i.e. the signature cost alone. Goal: ratio <= 1.2.
- `ucan.verify.cached`: per message, on a 2-link chain already verified, called as the actor
  runtime will (capability, holder = the sender, receiver = us). Each message brings a fresh
  bytes object (as a decoded envelope does, so its hash is not cached); the cost of making that
  copy is measured alongside and subtracted per round. Goal <= 2 us. `.d8`: an 8-link chain.
  No baseline: DMS verifies the whole chain per message (`ucan.dms_nested.dN` is that cost).
- `ucan.dms_nested.dN`: DMS's scheme (lib/ucan/token.go) re-implemented here: the token is JSON
  with the whole parent token nested in `chain`; each level's signature covers
  `dms:token:` + its JSON *including* the nested chain, and verifying walks every level, re-
  serialising and re-verifying it, per message (no cache). JSON through msgspec so the scheme is
  compared, not a JSON library. Baseline: our cold path at the same depth (`nunet-cold-dN`).
- `ucan.dms_nested.signed_bytes.d8`: bytes hashed by signature checks for one 8-link chain:
  DMS's grow with every level (O(d^2)); ours are one token each (O(d)).
- `ucan.dms_nested.per_message.d8`: what a message costs either way: DMS verifies the whole
  nested chain on every message; we check the cached chain (`nunet-cached-d8`).
- `ucan.native_vs_pure.*`: the compiled module against its pure-Python twin.
- `ucan.signature.direct_vs_pynacl`: one Ed25519 check of a token's signed message by the
  compiled module (libsodium's `crypto_sign_verify_detached` through a C pointer) against PyNaCl's
  `crypto_sign_open` (cffi, signature + message concatenated): what calling libsodium directly
  buys per signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import msgspec

from bench._harness import BenchContext, Metric, Sample, alone, compare, speedup

DEPTHS = (1, 2, 4, 8)
METRICS = (
    *(f"ucan.verify.cold.d{d}" for d in DEPTHS),
    "ucan.verify.cached",
    "ucan.verify.cached.d8",
    "ucan.verify.cached.pure",
    "ucan.native_vs_pure.cached",
    "ucan.native_vs_pure.cold.d4",
    *(f"ucan.dms_nested.d{d}" for d in DEPTHS),
    "ucan.dms_nested.signed_bytes.d8",
    "ucan.dms_nested.per_message.d8",
    "ucan.signature.direct_vs_pynacl",
)

T0 = 1_700_000_000
MESSAGES = 1000  # per cached sample


def _us_per(ctx: BenchContext, once: Callable[[], int]) -> Sample:
    """A sample in microseconds per unit of work, from `ctx.rate`'s units per second."""
    rate = ctx.rate(once)
    return lambda: 1e6 / rate()


def _native() -> ModuleType:
    try:
        from nunet._native import ucan_verify
    except ImportError as exc:
        raise RuntimeError(
            f"nunet._native.ucan_verify is not built ({exc}): run `make build` first"
        ) from exc
    return ucan_verify


class World:
    """Keys and chains: link i is issued by key i to key i + 1; key 0 is the trusted root."""

    def __init__(self) -> None:
        from nunet.crypto.keys import KeyPair

        self.keys = [KeyPair.from_seed(bytes([i + 1]) * 32) for i in range(12)]
        self.chains = {d: self._chain(d) for d in DEPTHS}

    def _chain(self, depth: int) -> list[bytes]:
        from nunet.ucan import issue

        links: list[bytes] = []
        for i in range(depth):
            links.append(
                issue(
                    self.keys[i],
                    action="delegate" if i < depth - 1 else "invoke",
                    subject=self.keys[0].did,
                    audience=self.keys[i + 1].did,
                    capabilities=("/dms/deployment",),
                    topics=(),
                    not_before=T0 - 100,
                    expiry=T0 + 3600 - i,
                    parent=links[-1] if links else None,
                )
            )
        return links

    def verifier(self, module: ModuleType) -> Any:
        return module.ChainVerifier({self.keys[0].did}, {}, {})


def _cold(world: World, module: ModuleType, depth: int) -> Callable[[], int]:
    verifier = world.verifier(module)
    links = world.chains[depth]
    leaf, proofs = links[-1], links[:-1]

    def once() -> int:
        verifier.clear()
        verifier.verify(leaf, proofs, T0, capability="/dms/deployment/bid")
        return 1

    return once


def _raw(world: World, depth: int) -> Callable[[], int]:
    import nacl.bindings

    from nunet.ucan import decode_token, signed_message

    keys = [world.keys[i].public_key for i in range(depth)]
    signed = [
        (decode_token(raw).signature + signed_message(raw), key)
        for raw, key in zip(world.chains[depth], keys, strict=True)
    ]
    open_ = nacl.bindings.crypto_sign_open

    def once() -> int:
        for sm, key in signed:
            open_(sm, key)
        return 1

    return once


def _cached(
    ctx: BenchContext, world: World, module: ModuleType, depth: int
) -> tuple[Sample, Sample]:
    """(copy + verify, copy) samples in us per message; their difference is the verify cost."""
    verifier = world.verifier(module)
    links = world.chains[depth]
    proofs = links[:-1]
    # The leaf is an invocation by key depth-1 (the sender) of key depth (us).
    ask = {
        "capability": "/dms/deployment/bid",
        "holder": world.keys[depth - 1].did,
        "receiver": world.keys[depth].did,
    }
    verifier.verify(links[-1], proofs, T0, **ask)
    source = bytearray(links[-1])
    verify = verifier.verify
    capability, holder, receiver = ask["capability"], ask["holder"], ask["receiver"]

    def with_verify() -> int:
        for _ in range(MESSAGES):
            verify(
                bytes(source),
                proofs,
                T0,
                capability=capability,
                holder=holder,
                receiver=receiver,
            )
        return MESSAGES

    def copy_only() -> int:
        for _ in range(MESSAGES):
            bytes(source)
        return MESSAGES

    before = verifier.signatures_verified
    with_verify()
    if verifier.signatures_verified != before:
        raise AssertionError("the cached path verified a signature")
    return _us_per(ctx, with_verify), _us_per(ctx, copy_only)


# --- the DMS scheme -------------------------------------------------------------------------------


class DmsToken(msgspec.Struct, omit_defaults=True):
    """DMS's token (lib/ucan/token.go, `DMSToken`): JSON, the parent nested whole in `chain`."""

    act: str
    iss: str
    sub: str
    aud: str
    cap: list[str]
    nonce: bytes
    exp: int
    topic: list[str] = []
    chain: DmsToken | None = None
    sig: bytes = b""


def _dms(world: World) -> tuple[Callable[[int], Callable[[], int]], Callable[[int], int]]:
    """Builders for DMS-style chains: (verify-once factory by depth, signed bytes by depth)."""
    import nacl.bindings
    import nacl.exceptions

    from nunet.crypto.did import public_key_from_did

    encode = msgspec.json.encode
    decoder = msgspec.json.Decoder(DmsToken)
    prefix = b"dms:token:"

    def signature_data(tok: DmsToken) -> bytes:
        return prefix + encode(msgspec.structs.replace(tok, sig=b""))

    def expire_before(tok: DmsToken, deadline: int) -> bool:
        if deadline > tok.exp:
            return True
        return tok.chain is not None and expire_before(tok.chain, deadline)

    def implies(granted: str, wanted: str) -> bool:
        return wanted == granted or wanted.startswith(granted + "/")

    def verify(tok: DmsToken, now: int) -> None:
        if expire_before(tok, now):
            raise ValueError("expired")
        if tok.chain is not None:
            parent = tok.chain
            if parent.act != "delegate" or expire_before(parent, tok.exp):
                raise ValueError("not authorised")
            verify(parent, now)
            if tok.iss != parent.sub:
                raise ValueError("not authorised")
            for cap in tok.cap:
                if not any(implies(c, cap) for c in parent.cap):
                    raise ValueError("not authorised")
        try:
            nacl.bindings.crypto_sign_open(
                tok.sig + signature_data(tok), public_key_from_did(tok.iss)
            )
        except nacl.exceptions.CryptoError:
            raise ValueError("bad signature") from None

    def build(depth: int) -> DmsToken:
        tok: DmsToken | None = None
        for i in range(depth):
            key = world.keys[i]
            nxt = world.keys[i + 1].did
            unsigned = DmsToken(
                act="delegate" if i < depth - 1 else "invoke",
                iss=key.did,
                sub=nxt,
                aud=nxt if i == depth - 1 else "",
                cap=["/dms/deployment"],
                nonce=bytes([i]) * 12,
                exp=T0 + 3600 - i,
                chain=tok,
            )
            tok = msgspec.structs.replace(unsigned, sig=key.sign(signature_data(unsigned)))
        assert tok is not None
        return tok

    def factory(depth: int) -> Callable[[], int]:
        wire = encode(build(depth))
        verify(decoder.decode(wire), T0)

        def once() -> int:
            verify(decoder.decode(wire), T0)  # per message: decode, then every level again
            return 1

        return once

    def signed_bytes(depth: int) -> int:
        total = 0
        tok: DmsToken | None = build(depth)
        while tok is not None:
            total += len(signature_data(tok))
            tok = tok.chain
        return total

    return factory, signed_bytes


def _signature_samples(ctx: BenchContext, world: World, native: ModuleType) -> dict[str, Sample]:
    import nacl.bindings

    from nunet.ucan import decode_token, signed_message

    raw = world.chains[1][0]
    message, signature = signed_message(raw), decode_token(raw).signature
    key = world.keys[0].public_key
    verify, open_ = native.verify_signature, nacl.bindings.crypto_sign_open

    def direct() -> int:
        verify(key, message, signature)
        return 1

    def pynacl() -> int:
        open_(signature + message, key)
        return 1

    return {"direct": ctx.rate(direct), "pynacl": ctx.rate(pynacl)}


# --- run ------------------------------------------------------------------------------------------


def run(ctx: BenchContext) -> Iterator[Metric]:
    from nunet._native._reference import ucan_verify as pure
    from nunet.ucan import signed_message

    native = _native()
    world = World()
    dms_factory, dms_signed_bytes = _dms(world)
    with ctx.pinned(0):
        for depth in DEPTHS:
            cold_name, dms_name = f"ucan.verify.cold.d{depth}", f"ucan.dms_nested.d{depth}"
            with_pure = depth == 4 and ctx.wants("ucan.native_vs_pure.cold.d4")
            with_cached = depth == 8 and (
                ctx.wants("ucan.verify.cached.d8") or ctx.wants("ucan.dms_nested.per_message.d8")
            )
            if not (ctx.wants(cold_name) or ctx.wants(dms_name) or with_pure or with_cached):
                continue
            candidates = {
                "ours": _us_per(ctx, _cold(world, native, depth)),
                "raw": _us_per(ctx, _raw(world, depth)),
            }
            if ctx.wants(dms_name) or with_cached:
                candidates["dms"] = _us_per(ctx, dms_factory(depth))
            if with_cached:
                candidates["cached"], candidates["copy"] = _cached(ctx, world, native, depth)
            if with_pure:
                candidates["pure"] = _us_per(ctx, _cold(world, pure, depth))
            s = ctx.interleave(candidates)
            yield compare(
                cold_name, "us", s["ours"], "libsodium-verify-x-depth", s["raw"], better="lower"
            )
            if "dms" in s:
                yield compare(
                    dms_name, "us", s["dms"], f"nunet-cold-d{depth}", s["ours"], better="lower"
                )
            if with_cached:
                net = [a - b for a, b in zip(s["cached"], s["copy"], strict=True)]
                yield alone("ucan.verify.cached.d8", "us", net, better="lower")
                yield compare(
                    "ucan.dms_nested.per_message.d8",
                    "us",
                    s["dms"],
                    "nunet-cached-d8",
                    net,
                    better="lower",
                )
            if "pure" in s:
                # speedup() wants rates: the twin's time over ours.
                yield speedup(
                    "ucan.native_vs_pure.cold.d4",
                    [1 / x for x in s["ours"]],
                    "pure-python-twin",
                    [1 / x for x in s["pure"]],
                )
        if any(
            ctx.wants(n)
            for n in ("ucan.verify.cached", "ucan.verify.cached.pure", "ucan.native_vs_pure.cached")
        ):
            ours, ours_copy = _cached(ctx, world, native, 2)
            twin, twin_copy = _cached(ctx, world, pure, 2)
            s = ctx.interleave({"ours": ours, "copy": ours_copy, "pure": twin, "pcopy": twin_copy})
            net = [a - b for a, b in zip(s["ours"], s["copy"], strict=True)]
            net_pure = [a - b for a, b in zip(s["pure"], s["pcopy"], strict=True)]
            yield alone("ucan.verify.cached", "us", net, better="lower")
            yield alone("ucan.verify.cached.pure", "us", net_pure, better="lower")
            yield speedup(
                "ucan.native_vs_pure.cached",
                [1 / x for x in net],
                "pure-python-twin",
                [1 / x for x in net_pure],
            )
        if ctx.wants("ucan.signature.direct_vs_pynacl"):
            s = ctx.interleave(_signature_samples(ctx, world, native))
            yield speedup(
                "ucan.signature.direct_vs_pynacl",
                s["direct"],
                "pynacl-crypto_sign_open",
                s["pynacl"],
            )
    if ctx.wants("ucan.dms_nested.signed_bytes.d8"):
        ours_bytes = sum(len(signed_message(raw)) for raw in world.chains[8])
        yield compare(
            "ucan.dms_nested.signed_bytes.d8",
            "B",
            [float(dms_signed_bytes(8))],
            "nunet-signed-bytes-d8",
            [float(ours_bytes)],
            better="lower",
        )
