"""Chain verification: every rule, the token-level attack matrix, the cache, and a differential
test holding the compiled module and its pure-Python twin to identical verdicts.

Every test that takes the `ucan_verify` fixture runs against both implementations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nunet._native._reference import ucan_verify as reference
from nunet.crypto.keys import KeyPair
from nunet.errors import (
    BrokenChain,
    CapabilityError,
    CapabilityEscalation,
    ChainTooDeep,
    ExpiredError,
    LocalProtocolError,
    MalformedToken,
    NotYetValid,
    RevokedError,
    SecurityError,
    SignatureError,
    TokenTooLarge,
    UntrustedRoot,
    ValidationError,
    WrongAudience,
    WrongIssuer,
)
from nunet.ucan import Token, issue, revoke, signed_message, token_id

T0 = 1_700_000_000
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = [KeyPair.from_seed(bytes([i + 1]) * 32) for i in range(24)]
ORG, ALICE, BOB, NODE, MALLORY = KEYS[:5]


def grant(
    issuer: KeyPair,
    audience: KeyPair | None,
    *,
    action: str = "delegate",
    caps: tuple[str, ...] = ("/dms",),
    topics: tuple[str, ...] = ("/nunet",),
    subject: KeyPair = ORG,
    nb: int = T0 - 100,
    exp: int = T0 + 3600,
    depth: int | None = None,
    parent: bytes | None = None,
) -> bytes:
    return issue(
        issuer,
        action=action,  # type: ignore[arg-type]
        subject=subject.did,
        audience="" if audience is None else audience.did,
        capabilities=caps,
        topics=topics,
        not_before=nb,
        expiry=exp,
        depth=depth,
        parent=parent,
    )


def forge(key: KeyPair, **fields: Any) -> bytes:
    """A token with any field values at all (bypassing `issue`'s checks), signed by `key`."""
    base: dict[str, Any] = {
        "action": "delegate",
        "issuer": key.did,
        "subject": ORG.did,
        "audience": ALICE.did,
        "capabilities": ("/dms",),
        "topics": (),
        "nonce": b"n" * 16,
        "not_before": T0 - 100,
        "expiry": T0 + 3600,
        "depth": None,
        "proofs": (),
        "signature": bytes(64),
    }
    base.update(fields)
    unsigned = msgspec.msgpack.encode(Token(**base))
    signature = key.sign(signed_message(unsigned))
    return msgspec.msgpack.encode(Token(**{**base, "signature": signature}))


def chain_of(
    n: int, *, caps: tuple[str, ...] = ("/dms",), leaf_action: str = "delegate"
) -> list[bytes]:
    """n links, root (issued by ORG) first; link i is issued by KEYS[i] to KEYS[i + 1]."""
    links: list[bytes] = []
    for i in range(n):
        links.append(
            grant(
                KEYS[i % len(KEYS)],
                KEYS[(i + 1) % len(KEYS)],
                action=leaf_action if i == n - 1 else "delegate",
                caps=caps,
                parent=links[-1] if links else None,
            )
        )
    return links


@dataclass
class Trust:
    roots: set[str] = field(default_factory=lambda: {ORG.did})
    require: dict[str, list[tuple[bytes, Token]]] = field(default_factory=dict)
    revoked: dict[bytes, set[str]] = field(default_factory=dict)

    def revoke(self, target: bytes, by: KeyPair) -> None:
        self.revoked.setdefault(token_id(target), set()).add(by.did)


def make(mod: ModuleType, trust: Trust | None = None, **config: Any) -> Any:
    trust = trust or Trust()
    return mod.ChainVerifier(trust.roots, trust.require, trust.revoked, **config)


def check(verifier: Any, links: list[bytes], now: float = T0, **request: Any) -> Any:
    """Verify the chain `links` (root first) presented as leaf + proofs."""
    return verifier.verify(links[-1], links[:-1], now, **request)


def refused(
    exc_type: type[SecurityError], verifier: Any, links: list[bytes], now: float = T0, **req: Any
) -> SecurityError:
    with pytest.raises(SecurityError) as info:
        check(verifier, links, now, **req)
    assert type(info.value) is exc_type, f"{type(info.value).__name__}: {info.value}"
    assert info.value.path
    assert info.value.message
    return info.value


# --- valid chains ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 8, 16])
def test_valid_chain_is_accepted(ucan_verify: ModuleType, depth: int) -> None:
    verifier = make(ucan_verify)
    links = chain_of(depth)
    leaf = check(verifier, links, capability="/dms/node", topic="/nunet/x")
    assert leaf.id == token_id(links[-1])
    assert leaf.raw == links[-1]
    assert leaf.depth == depth
    assert leaf.root.token.issuer == ORG.did
    assert leaf.root.parent is None
    assert verifier.signatures_verified == depth
    assert verifier.links_decoded == depth
    assert len(verifier) == depth
    walked = []
    link = leaf
    while link is not None:
        walked.append(link.raw)
        link = link.parent
    assert walked == links[::-1]


def test_proofs_may_be_a_mapping_a_list_or_a_tuple_in_any_order(ucan_verify: ModuleType) -> None:
    links = chain_of(4)
    for proofs in (
        {token_id(p): p for p in links[:-1]},
        list(reversed(links[:-1])),
        tuple(links[:-1]),
        [*links[:-1], grant(BOB, ALICE)],  # an unrelated extra proof is ignored
    ):
        verifier = make(ucan_verify)
        assert verifier.verify(links[-1], proofs, T0, capability="/dms").depth == 4


def test_cached_chain_is_checked_without_signatures(ucan_verify: ModuleType) -> None:
    verifier = make(ucan_verify)
    links = chain_of(3)
    check(verifier, links, capability="/dms")
    assert verifier.signatures_verified == 3
    for _ in range(5):
        check(verifier, links, capability="/dms/a")
        check(verifier, [links[-1]], capability="/dms/b")  # proofs no longer needed
    assert verifier.signatures_verified == 3
    assert verifier.links_decoded == 3
    assert verifier.cache_hits == 10
    assert verifier.cache_misses == 1


def test_new_leaf_under_a_cached_parent_costs_one_signature(ucan_verify: ModuleType) -> None:
    verifier = make(ucan_verify)
    links = chain_of(3)
    check(verifier, links)
    for _ in range(3):
        leaf = grant(KEYS[3], NODE, action="invoke", caps=("/dms/x",), parent=links[-1])
        assert verifier.verify(leaf, [], T0, capability="/dms/x").depth == 4
    assert verifier.signatures_verified == 3 + 3


def test_cache_is_bounded_and_evicted_links_verify_again(ucan_verify: ModuleType) -> None:
    verifier = make(ucan_verify, cache_size=2)
    tokens = [grant(ORG, ALICE, caps=(f"/c{i}",)) for i in range(5)]
    for tok in tokens:
        verifier.verify(tok, [], T0)
        assert len(verifier) <= 2
    assert token_id(tokens[-1]) in verifier
    assert token_id(tokens[0]) not in verifier
    before = verifier.signatures_verified
    verifier.verify(tokens[0], [], T0)
    assert verifier.signatures_verified == before + 1
    verifier.clear()
    assert len(verifier) == 0


def test_an_evicted_parent_does_not_break_its_cached_child(ucan_verify: ModuleType) -> None:
    verifier = make(ucan_verify, cache_size=1)
    links = chain_of(2)
    check(verifier, links)
    assert token_id(links[0]) not in verifier
    assert verifier.verify(links[1], [], T0).depth == 2


# --- the rules, one by one ------------------------------------------------------------------------


def test_issuer_must_be_the_parents_audience(ucan_verify: ModuleType) -> None:
    root = grant(ORG, ALICE)
    child = grant(BOB, NODE, parent=root)
    err = refused(BrokenChain, make(ucan_verify), [root, child])
    assert err.path == "chain[0].issuer"


def test_subject_stays_the_same_along_the_chain(ucan_verify: ModuleType) -> None:
    root = grant(ORG, ALICE)
    child = grant(ALICE, NODE, subject=ALICE, parent=root)
    assert refused(BrokenChain, make(ucan_verify), [root, child]).path == "chain[0].subject"


@pytest.mark.parametrize("action", ["invoke", "broadcast"])
def test_only_delegations_can_be_parents(ucan_verify: ModuleType, action: str) -> None:
    root = grant(ORG, ALICE, action=action)
    child = grant(ALICE, NODE, parent=root)
    assert refused(BrokenChain, make(ucan_verify), [root, child]).path == "chain[0].proofs"


def test_a_revocation_is_not_a_parent(ucan_verify: ModuleType) -> None:
    target = grant(ORG, ALICE)
    rev = revoke(ORG, target, not_before=T0 - 100)
    child = forge(ALICE, proofs=(token_id(rev),))
    err = refused(BrokenChain, make(ucan_verify), [rev, child])
    assert "not a delegation" in err.message


def test_a_revocation_grants_nothing(ucan_verify: ModuleType) -> None:
    rev = revoke(ORG, grant(ORG, ALICE), not_before=T0 - 100)
    err = refused(CapabilityError, make(ucan_verify), [rev])
    assert err.path == "chain[0].action"


@pytest.mark.parametrize(
    ("child_kwargs", "path"),
    [
        ({"caps": ("/dms/deployment", "/dmsx")}, "chain[0].capabilities[1]"),
        ({"caps": ("/",)}, "chain[0].capabilities[0]"),
        ({"caps": ("/dms",), "topics": ("/nunet/a", "/other")}, "chain[0].topics[1]"),
        ({"nb": T0 - 101}, "chain[0].not_before"),
        ({"exp": T0 + 3601}, "chain[0].expiry"),
    ],
)
def test_delegations_only_narrow(
    ucan_verify: ModuleType, child_kwargs: dict[str, Any], path: str
) -> None:
    root = grant(ORG, ALICE, caps=("/dms",), topics=("/nunet",))
    child = grant(ALICE, NODE, parent=root, **child_kwargs)
    assert refused(CapabilityEscalation, make(ucan_verify), [root, child]).path == path


def test_narrower_delegation_is_fine(ucan_verify: ModuleType) -> None:
    root = grant(ORG, ALICE, caps=("/dms/deployment", "/dms/node"), topics=("/nunet",))
    child = grant(
        ALICE,
        NODE,
        caps=("/dms/deployment/bid", "/dms/node"),
        topics=("/nunet/deployment",),
        nb=T0 - 50,
        exp=T0 + 50,
        parent=root,
    )
    leaf = check(make(ucan_verify), [root, child], capability="/dms/deployment/bid/x")
    assert leaf.depth == 2


def test_depth_limit_zero_forbids_delegation(ucan_verify: ModuleType) -> None:
    root = grant(ORG, ALICE, depth=0)
    check(make(ucan_verify), [root])
    child = grant(ALICE, NODE, parent=root)
    assert refused(ChainTooDeep, make(ucan_verify), [root, child]).path == "chain[0]"


def test_tightest_depth_limit_along_the_chain_wins(ucan_verify: ModuleType) -> None:
    a = grant(KEYS[0], KEYS[1], depth=5)
    b = grant(KEYS[1], KEYS[2], depth=1, parent=a)
    c = grant(KEYS[2], KEYS[3], depth=9, parent=b)  # may not widen b's limit
    check(make(ucan_verify), [a, b, c])
    d = grant(KEYS[3], KEYS[4], parent=c)
    assert refused(ChainTooDeep, make(ucan_verify), [a, b, c, d]).path == "chain[0]"


def test_global_depth_limit(ucan_verify: ModuleType) -> None:
    links = chain_of(5)
    check(make(ucan_verify, max_depth=5), links)
    verifier = make(ucan_verify, max_depth=4)
    err = refused(ChainTooDeep, verifier, links)
    assert err.path == "chain"
    assert verifier.signatures_verified == 0


def test_depth_limit_counts_cached_ancestors(ucan_verify: ModuleType) -> None:
    verifier = make(ucan_verify, max_depth=4)
    links = chain_of(5)
    check(verifier, links[:4])
    err = refused(ChainTooDeep, verifier, links)
    assert "5 links" in err.message
    assert verifier.signatures_verified == 4


def test_time_window_with_skew(ucan_verify: ModuleType) -> None:
    tok = grant(ORG, ALICE, nb=T0, exp=T0 + 100)
    verifier = make(ucan_verify, skew=30)
    for now in (T0 - 30, T0, T0 + 100, T0 + 129.999):
        check(verifier, [tok], now)
    assert refused(NotYetValid, verifier, [tok], T0 - 30.001).path == "chain[0].not_before"
    assert refused(ExpiredError, verifier, [tok], T0 + 130).path == "chain[0].expiry"
    exact = make(ucan_verify, skew=0)
    check(exact, [tok], T0)
    refused(NotYetValid, exact, [tok], T0 - 0.5)
    refused(ExpiredError, exact, [tok], T0 + 100)


def test_expired_leaf_is_refused_before_any_signature(ucan_verify: ModuleType) -> None:
    verifier = make(ucan_verify)
    refused(ExpiredError, verifier, chain_of(3), T0 + 10_000)
    assert verifier.signatures_verified == 0
    assert len(verifier) == 0


def test_root_must_be_a_trust_anchor(ucan_verify: ModuleType) -> None:
    links = chain_of(3)
    verifier = make(ucan_verify, Trust(roots={BOB.did}))
    err = refused(UntrustedRoot, verifier, links)
    assert err.path == "chain[2].issuer"
    assert ORG.did in err.message
    assert verifier.signatures_verified == 0
    assert check(verifier, links, anchored=False).depth == 3


def test_trust_changes_apply_to_cached_chains(ucan_verify: ModuleType) -> None:
    trust = Trust()
    verifier = make(ucan_verify, trust)
    links = chain_of(2)
    check(verifier, links)
    trust.roots.discard(ORG.did)
    refused(UntrustedRoot, verifier, links)
    trust.roots.add(ORG.did)
    check(verifier, links)
    assert verifier.signatures_verified == 2


def test_require_anchor_accepts_an_outside_root_for_what_it_covers(
    ucan_verify: ModuleType,
) -> None:
    trust = Trust(roots=set())
    anchor = grant(BOB, NODE, caps=("/dms/deployment",), topics=(), nb=T0 - 10, exp=T0 + 10)
    trust.require[BOB.did] = [(token_id(anchor), reference.decode_token(anchor))]
    verifier = make(ucan_verify, trust)
    root = grant(BOB, ALICE, subject=BOB, caps=("/dms",))
    leaf = grant(ALICE, MALLORY, subject=BOB, caps=("/dms",), parent=root)
    check(verifier, [root, leaf], capability="/dms/deployment/bid")
    check(verifier, [root, leaf])
    err = refused(UntrustedRoot, verifier, [root, leaf], capability="/dms/node")
    assert "for this request" in err.message
    refused(UntrustedRoot, verifier, [root, leaf], topic="/nunet/x")
    refused(UntrustedRoot, verifier, [root, leaf], T0 + 41, capability="/dms/deployment")
    trust.revoke(anchor, BOB)
    refused(UntrustedRoot, verifier, [root, leaf], capability="/dms/deployment")


def test_revoked_link_invalidates_every_token_built_on_it(ucan_verify: ModuleType) -> None:
    trust = Trust()
    verifier = make(ucan_verify, trust)
    links = chain_of(4)
    sibling = grant(KEYS[2], KEYS[9], parent=links[1])
    check(verifier, links)
    check(verifier, [*links[:2], sibling])
    trust.revoke(links[1], KEYS[1])
    assert refused(RevokedError, verifier, links).path == "chain[2]"
    assert refused(RevokedError, verifier, [*links[:2], sibling]).path == "chain[1]"
    refused(RevokedError, verifier, links[:2])
    check(verifier, links[:1])
    assert verifier.signatures_verified == 5


def test_revocation_authority(ucan_verify: ModuleType) -> None:
    links = chain_of(3)  # issuers KEYS[0], KEYS[1], KEYS[2]
    for revoker, effective in [
        (KEYS[1], True),  # the revoked link's own issuer
        (KEYS[0], True),  # an ancestor's issuer
        (KEYS[2], False),  # a descendant's issuer may not revoke its parent
        (MALLORY, False),  # a stranger
    ]:
        trust = Trust()
        trust.revoke(links[1], revoker)
        verifier = make(ucan_verify, trust)
        if effective:
            err = refused(RevokedError, verifier, links)
            assert err.path == "chain[1]"
            assert revoker.did in err.message
        else:
            check(verifier, links)


def test_revocation_nearest_the_root_is_reported(ucan_verify: ModuleType) -> None:
    trust = Trust()
    links = chain_of(3)
    trust.revoke(links[2], KEYS[2])
    trust.revoke(links[0], ORG)
    assert refused(RevokedError, make(ucan_verify, trust), links).path == "chain[2]"


def test_audience_and_issuer_of_the_leaf(ucan_verify: ModuleType) -> None:
    root = grant(ORG, ALICE)
    leaf = grant(ALICE, NODE, action="invoke", parent=root)
    verifier = make(ucan_verify)
    check(verifier, [root, leaf], audience=NODE.did, issuer=ALICE.did, capability="/dms")
    assert refused(WrongAudience, verifier, [root, leaf], audience=BOB.did).path == (
        "chain[0].audience"
    )
    assert refused(WrongIssuer, verifier, [root, leaf], issuer=BOB.did).path == "chain[0].issuer"


def test_holder_and_receiver(ucan_verify: ModuleType) -> None:
    """A message's sender (holder) presents a delegation addressed to it, or an invocation or a
    broadcast it issued; an invocation must be addressed to us (receiver)."""
    root = grant(ORG, ALICE)
    verifier = make(ucan_verify)
    check(verifier, [root], holder=ALICE.did, receiver=NODE.did, capability="/dms/x")
    err = refused(WrongAudience, verifier, [root], holder=BOB.did, receiver=NODE.did)
    assert err.path == "chain[0].audience"
    invoke = grant(ALICE, NODE, action="invoke", parent=root)
    check(verifier, [root, invoke], holder=ALICE.did, receiver=NODE.did, capability="/dms/x")
    assert refused(WrongIssuer, verifier, [root, invoke], holder=NODE.did).path == (
        "chain[0].issuer"
    )
    err = refused(WrongAudience, verifier, [root, invoke], holder=ALICE.did, receiver=BOB.did)
    assert "received by" in err.message
    broadcast = grant(ALICE, None, action="broadcast", parent=root)
    check(verifier, [root, broadcast], holder=ALICE.did, receiver=NODE.did, topic="/nunet/d")
    refused(WrongIssuer, verifier, [root, broadcast], holder=BOB.did, topic="/nunet/d")
    # An invocation addressed to the sender is not the sender's to present onwards.
    to_alice = grant(ORG, ALICE, action="invoke")
    refused(WrongIssuer, verifier, [to_alice], holder=ALICE.did, receiver=NODE.did)


def test_deny_by_default(ucan_verify: ModuleType) -> None:
    root = grant(ORG, ALICE, caps=("/dms/deployment",), topics=())
    verifier = make(ucan_verify)
    check(verifier, [root], capability="/dms/deployment/bid")
    for cap in ("/dms/dep", "/dms/deploymentx", "/dms", "/public/hello", "", "dms/deployment"):
        err = refused(CapabilityError, verifier, [root], capability=cap)
        assert err.path == "chain[0].capabilities"
    assert refused(CapabilityError, verifier, [root], topic="/nunet").path == "chain[0].topics"
    empty = grant(ORG, ALICE, caps=(), topics=())
    refused(CapabilityError, verifier, [empty], capability="/dms")


def test_topics_by_action(ucan_verify: ModuleType) -> None:
    root = grant(ORG, ALICE, caps=("/dms",), topics=("/nunet",))
    verifier = make(ucan_verify)
    broadcast = grant(
        ALICE, None, action="broadcast", caps=("/dms/x",), topics=("/nunet/d",), parent=root
    )
    check(verifier, [root, broadcast], topic="/nunet/d", capability="/dms/x", issuer=ALICE.did)
    invoke = grant(ALICE, NODE, action="invoke", topics=("/nunet/d",), parent=root)
    err = refused(CapabilityError, verifier, [root, invoke], topic="/nunet/d")
    assert err.path == "chain[0].action"
    check(verifier, [root], topic="/nunet/anything", capability="/dms/y")


def test_forged_signature_is_refused_and_remembered(ucan_verify: ModuleType) -> None:
    root = grant(ORG, ALICE)
    good = grant(ALICE, NODE, parent=root)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    verifier = make(ucan_verify)
    err = refused(SignatureError, verifier, [root, forged])
    assert err.path == "chain[0].signature"
    assert verifier.signatures_verified == 2
    assert token_id(root) in verifier  # the good parent stays cached
    again = refused(SignatureError, verifier, [root, forged])
    assert str(again) == str(err)
    assert verifier.signatures_verified == 2


def test_signature_by_someone_else_is_refused(ucan_verify: ModuleType) -> None:
    tok = forge(MALLORY, issuer=ORG.did)  # claims ORG, signed by MALLORY
    assert refused(SignatureError, make(ucan_verify), [tok]).path == "chain[0].signature"


def test_missing_or_mismatched_proof(ucan_verify: ModuleType) -> None:
    links = chain_of(3)
    verifier = make(ucan_verify)
    assert refused(BrokenChain, verifier, [links[0], links[2]]).path == "chain[0].proofs"
    assert refused(BrokenChain, verifier, [links[1], links[2]]).path == "chain[1].proofs"
    wrong = {token_id(links[1]): links[0], token_id(links[0]): links[0]}
    with pytest.raises(BrokenChain, match="does not hash"):
        verifier.verify(links[2], wrong, T0)
    # Neither is the leaf's fault: presenting the chain properly then works.
    check(verifier, links)


def test_size_limit_comes_before_decoding(ucan_verify: ModuleType) -> None:
    links = chain_of(3)
    size = sum(len(t) for t in links)
    check(make(ucan_verify, max_bytes=size), links)
    verifier = make(ucan_verify, max_bytes=size - 1)
    err = refused(TokenTooLarge, verifier, links)
    assert err.path == "chain"
    assert verifier.links_decoded == 0
    assert verifier.signatures_verified == 0


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"issuer": "did:key:z6MkBAD"}, "chain[0].issuer"),
        ({"subject": "did:web:example.com"}, "chain[0].subject"),
        ({"audience": ""}, "chain[0].audience"),
        ({"audience": "did:key:z6Mk" + "1" * 44}, "chain[0].audience"),
        ({"capabilities": ("/ok", "no")}, "chain[0].capabilities[1]"),
        ({"topics": ("/a//b",)}, "chain[0].topics[0]"),
        ({"not_before": T0 + 10, "expiry": T0}, "chain[0].not_before"),
        ({"action": "revoke", "audience": ""}, "chain[0].proofs"),
    ],
)
def test_malformed_fields(ucan_verify: ModuleType, fields: dict[str, Any], path: str) -> None:
    tok = forge(ORG, **fields)
    verifier = make(ucan_verify)
    assert refused(MalformedToken, verifier, [tok]).path == path
    assert verifier.signatures_verified == 0


def test_non_canonical_encoding_is_malformed(ucan_verify: ModuleType) -> None:
    tok = grant(ORG, ALICE, depth=3)
    items = msgspec.msgpack.decode(tok)
    # depth 3 written as a uint8 (cc 03) instead of a positive fixint (03): same value. The
    # depth item starts where a 9-item array (same one-byte header) of the first fields ends.
    depth_at = len(msgspec.msgpack.encode(items[:9]))
    assert tok[depth_at] == 3
    wide = tok[:depth_at] + b"\xcc" + tok[depth_at:]
    assert msgspec.msgpack.decode(wide) == items
    err = refused(MalformedToken, make(ucan_verify), [wide])
    assert "canonical" in err.message


def test_decode_token(ucan_verify: ModuleType) -> None:
    tok = grant(ORG, ALICE)
    assert ucan_verify.decode_token(tok).issuer == ORG.did
    with pytest.raises(MalformedToken) as info:
        ucan_verify.decode_token(b"\x91\x01")
    assert info.value.path == "token"
    with pytest.raises(LocalProtocolError):
        ucan_verify.decode_token(bytearray(tok))


def test_verify_signature(ucan_verify: ModuleType) -> None:
    sig = ORG.sign(b"hello")
    assert ucan_verify.verify_signature(ORG.public_key, b"hello", sig) is True
    assert ucan_verify.verify_signature(ORG.public_key, b"hellO", sig) is False
    assert ucan_verify.verify_signature(ALICE.public_key, b"hello", sig) is False
    assert ucan_verify.verify_signature(ORG.public_key[:31], b"hello", sig) is False
    assert ucan_verify.verify_signature(ORG.public_key, b"hello", sig[:63]) is False
    with pytest.raises(LocalProtocolError):
        ucan_verify.verify_signature(ORG.public_key, "hello", sig)


# --- the caller's mistakes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "proofs", "now", "request_"),
    [
        ("text", [], T0, {}),
        (bytearray(b"x"), [], T0, {}),
        (b"x", [], "now", {}),
        (b"x", [], True, {}),
        (b"x", [], math.nan, {}),
        (b"x", [], math.inf, {}),
        (b"x", [], 10**400, {}),
        (b"x", "proofs", T0, {}),
        (b"x", b"proofs", T0, {}),
        (b"x", [bytearray(b"p")], T0, {}),
        (b"x", {b"k": "v"}, T0, {}),
        (b"x", None, T0, {}),
        (b"x", [], T0, {"capability": 1}),
        (b"x", [], T0, {"topic": b"/t"}),
        (b"x", [], T0, {"audience": 1}),
        (b"x", [], T0, {"issuer": []}),
        (b"x", [], T0, {"holder": 1}),
        (b"x", [], T0, {"receiver": 1}),
    ],
)
def test_bad_arguments_are_local_errors(
    ucan_verify: ModuleType, token: Any, proofs: Any, now: Any, request_: dict[str, Any]
) -> None:
    with pytest.raises(LocalProtocolError):
        make(ucan_verify).verify(token, proofs, now, **request_)


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"skew": -1}, "skew"),
        ({"skew": math.nan}, "skew"),
        ({"skew": True}, "skew"),
        ({"skew": "30"}, "skew"),
        ({"skew": 10**400}, "skew"),
        ({"max_depth": 0}, "max_depth"),
        ({"max_depth": 10**30}, "max_depth"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"cache_size": 0}, "cache_size"),
        ({"cache_size": 2.0}, "cache_size"),
    ],
)
def test_bad_config(ucan_verify: ModuleType, config: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as info:
        make(ucan_verify, **config)
    assert info.value.path == path


def test_config_is_readable(ucan_verify: ModuleType) -> None:
    verifier = make(ucan_verify, skew=5, max_depth=3, max_bytes=100, cache_size=7)
    assert (verifier.skew, verifier.max_depth, verifier.max_bytes, verifier.cache_size) == (
        5.0,
        3,
        100,
        7,
    )
    default = make(ucan_verify)
    assert default.skew == 30.0
    assert default.max_depth == 16
    assert default.max_bytes == 16 * 1024


# --- the attack matrix (token level) --------------------------------------------------------------


@dataclass
class Attack:
    error: type[SecurityError]
    links: list[bytes]
    trust: Trust = field(default_factory=Trust)
    now: float = T0
    request: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    max_signatures: int | None = None
    max_decodes: int | None = None


@pytest.fixture(scope="module")
def deep_chain() -> list[bytes]:
    """1,000 links, each correctly signed: a DoS chain must not cost 1,000 signatures."""
    return chain_of(1000)


def _forged_token_signature(_: list[bytes]) -> Attack:
    root = grant(ORG, ALICE)
    leaf = grant(ALICE, NODE, parent=root)
    return Attack(SignatureError, [root, leaf[:-5] + bytes(5)])


def _forged_root_signature(_: list[bytes]) -> Attack:
    return Attack(SignatureError, [forge(MALLORY, issuer=ORG.did)])


def _expired(_: list[bytes]) -> Attack:
    return Attack(ExpiredError, chain_of(2), now=T0 + 7200, max_signatures=0)


def _not_yet_valid(_: list[bytes]) -> Attack:
    return Attack(NotYetValid, chain_of(2), now=T0 - 1000, max_signatures=0)


def _wrong_audience(_: list[bytes]) -> Attack:
    root = grant(ORG, ALICE)
    leaf = grant(ALICE, BOB, action="invoke", parent=root)
    return Attack(WrongAudience, [root, leaf], request={"audience": NODE.did}, max_signatures=0)


def _capability_escalation(_: list[bytes]) -> Attack:
    root = grant(ORG, ALICE, caps=("/dms/deployment/bid",))
    leaf = grant(ALICE, NODE, caps=("/dms",), parent=root)
    return Attack(CapabilityEscalation, [root, leaf], request={"capability": "/dms/node"})


def _broken_chain(_: list[bytes]) -> Attack:
    root = grant(ORG, ALICE)
    leaf = grant(MALLORY, NODE, parent=root)  # MALLORY is not ALICE
    return Attack(BrokenChain, [root, leaf], max_signatures=0)


def _untrusted_root(_: list[bytes]) -> Attack:
    root = grant(MALLORY, ALICE, subject=MALLORY)
    leaf = grant(ALICE, NODE, subject=MALLORY, parent=root)
    return Attack(UntrustedRoot, [root, leaf], max_signatures=0)


def _revoked_parent(_: list[bytes]) -> Attack:
    links = chain_of(3)
    trust = Trust()
    trust.revoke(links[1], KEYS[1])
    return Attack(RevokedError, links, trust=trust, max_signatures=0)


def _oversize_token_list(_: list[bytes]) -> Attack:
    root = grant(ORG, ALICE)
    padding = [grant(ORG, BOB, caps=(f"/pad/{'x' * 200}/{i}",)) for i in range(40)]
    links = [*padding, root]
    assert sum(len(t) for t in links) > 16 * 1024
    return Attack(TokenTooLarge, links, max_signatures=0, max_decodes=0)


def _deeper_than_limit(_: list[bytes]) -> Attack:
    return Attack(ChainTooDeep, chain_of(17), max_signatures=0, max_decodes=16)


def _dos_1000_deep(deep: list[bytes]) -> Attack:
    return Attack(TokenTooLarge, deep, max_signatures=0, max_decodes=0)


def _dos_1000_deep_within_size_limit(deep: list[bytes]) -> Attack:
    return Attack(
        ChainTooDeep, deep, config={"max_bytes": 1 << 30}, max_signatures=0, max_decodes=16
    )


def _malformed_did(_: list[bytes]) -> Attack:
    return Attack(MalformedToken, [forge(ORG, audience="did:key:z6MkNOTAKEY")], max_signatures=0)


def _deny_by_default(_: list[bytes]) -> Attack:
    return Attack(
        CapabilityError,
        [grant(ORG, ALICE, caps=("/dms/deployment",))],
        request={"capability": "/dms/node/onboarding/onboard"},
        max_signatures=0,
    )


ATTACKS: dict[str, Callable[[list[bytes]], Attack]] = {
    "forged token signature": _forged_token_signature,
    "forged root signature": _forged_root_signature,
    "expired token": _expired,
    "not-yet-valid token": _not_yet_valid,
    "wrong audience": _wrong_audience,
    "capability escalation in a delegation": _capability_escalation,
    "broken chain (issuer is not the parent's audience)": _broken_chain,
    "chain rooted at an untrusted DID": _untrusted_root,
    "revoked parent": _revoked_parent,
    "oversize token list (> 16 KiB)": _oversize_token_list,
    "chain deeper than the limit": _deeper_than_limit,
    "1,000-deep DoS chain": _dos_1000_deep,
    "1,000-deep DoS chain within the size limit": _dos_1000_deep_within_size_limit,
    "malformed DID": _malformed_did,
    "deny by default": _deny_by_default,
    "garbage bytes where a token should be": lambda _: Attack(MalformedToken, []),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_matrix(ucan_verify: ModuleType, name: str, deep_chain: list[bytes]) -> None:
    """Each attack is refused with its own error, cheaply where it can be, and the verifier
    keeps working: a good chain verifies right after."""
    attack = ATTACKS[name](deep_chain)
    verifier = make(ucan_verify, attack.trust, **attack.config)
    if attack.links:
        for _ in range(2):  # and again: a remembered verdict is the same verdict
            err = refused(attack.error, verifier, attack.links, attack.now, **attack.request)
            assert err.path is not None
            assert err.path.startswith("chain")
    else:
        _garbage_is_only_malformed(verifier)
    if attack.max_signatures is not None:
        assert verifier.signatures_verified <= attack.max_signatures
    if attack.max_decodes is not None:
        assert verifier.links_decoded <= attack.max_decodes
    good = chain_of(2)
    assert check(verifier, good, T0, capability="/dms/x").depth == 2


def _garbage_is_only_malformed(verifier: Any) -> None:
    @given(data=st.binary(max_size=2048))
    @settings(max_examples=200, deadline=None)
    def garbage(data: bytes) -> None:
        with pytest.raises(MalformedToken) as info:
            verifier.verify(data, [], T0, capability="/dms")
        assert info.value.path is not None
        assert info.value.path.startswith("chain[0]")

    garbage()
    assert verifier.signatures_verified == 0


# --- fuzz: any bytes, and any mutation of a real token, give only typed errors --------------------


@FUZZ
@given(
    leaf=st.binary(max_size=600),
    proofs=st.lists(st.binary(max_size=600), max_size=4),
)
def test_garbage_anywhere_gives_security_errors(
    ucan_verify: ModuleType, leaf: bytes, proofs: list[bytes]
) -> None:
    verifier = make(ucan_verify)
    with pytest.raises(SecurityError):
        verifier.verify(leaf, proofs, T0)


@FUZZ
@given(data=st.data())
def test_mutated_chains_give_only_typed_errors(
    ucan_verify: ModuleType, data: st.DataObject
) -> None:
    links = chain_of(2)
    k = data.draw(st.integers(0, 1), label="link")
    raw = links[k]
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    op = data.draw(st.sampled_from(["flip", "cut", "insert"]), label="op")
    if op == "flip":
        bit = data.draw(st.integers(0, 7))
        raw = raw[:pos] + bytes([raw[pos] ^ (1 << bit)]) + raw[pos + 1 :]
    elif op == "cut":
        raw = raw[:pos] + raw[pos + 1 :]
    else:
        raw = raw[:pos] + data.draw(st.binary(min_size=1, max_size=3)) + raw[pos:]
    mutated = list(links)
    mutated[k] = raw
    try:
        check(make(ucan_verify), mutated, capability="/dms")
    except SecurityError:
        return
    # Only a mutation that leaves an equivalent valid token may pass: never here, since the
    # encoding is canonical and the signature covers every other byte.
    pytest.fail(f"mutated chain accepted ({op} at {pos} of link {k})")


# --- differential: the compiled module and the twin agree on everything ---------------------------


def outcome(verifier: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        link = verifier.verify(*args, **kwargs)
    except SecurityError as exc:
        return ("error", type(exc).__name__, str(exc))
    except LocalProtocolError as exc:
        return ("local", str(exc))
    return ("ok", link.id, link.depth, link.allowance, link.root.id)


def counters(verifier: Any) -> tuple[int, ...]:
    return (
        verifier.signatures_verified,
        verifier.links_decoded,
        verifier.cache_hits,
        verifier.cache_misses,
        len(verifier),
    )


@st.composite
def chains(draw: st.DrawFn) -> list[bytes]:
    """A chain of 1-5 links, each possibly broken in one of many ways."""
    n = draw(st.integers(1, 5))
    links: list[bytes] = []
    nb, exp = T0 - 100, T0 + 3600
    caps: tuple[str, ...] = ("/dms",)
    for i in range(n):
        fault = draw(
            st.sampled_from(
                ["none"] * 6 + ["issuer", "subject", "escalate", "time", "forge", "action", "depth"]
            )
        )
        issuer, audience = KEYS[i], KEYS[i + 1]
        subject = ORG
        action = (
            draw(st.sampled_from(["delegate", "invoke", "broadcast"])) if i == n - 1 else "delegate"
        )
        depth = draw(st.none() | st.integers(0, 4))
        child_caps = draw(
            st.sampled_from([caps, ("/dms/deployment",), ("/dms/node", "/dms/deployment/bid")])
        )
        if not all(any(c == p or c.startswith(p + "/") for p in caps) for c in child_caps):
            child_caps = caps
        c_nb = nb + draw(st.integers(0, 50))
        c_exp = exp - draw(st.integers(0, 50))
        if fault == "issuer":
            issuer = MALLORY
        elif fault == "subject":
            subject = BOB
        elif fault == "escalate":
            child_caps = ("/",)
        elif fault == "time":
            c_exp = exp + 1
        elif fault == "action" and links:
            action = "invoke"
        if fault == "depth":
            depth = 0
        raw = grant(
            issuer,
            None if action == "broadcast" else audience,
            action=action,
            caps=child_caps,
            subject=subject,
            nb=c_nb,
            exp=c_exp,
            depth=depth,
            parent=links[-1] if links else None,
        )
        if fault == "forge":
            raw = raw[:-1] + bytes([raw[-1] ^ 0x80])
        links.append(raw)
        caps, nb, exp = child_caps, c_nb, c_exp
    return links


@FUZZ
@given(data=st.data())
def test_native_and_twin_agree(native: Callable[[str], ModuleType], data: st.DataObject) -> None:
    compiled = native("ucan_verify")
    trusts = [Trust(), Trust()]
    roots = data.draw(st.sampled_from([{ORG.did}, {ORG.did, BOB.did}, set()]))
    for trust in trusts:
        trust.roots.clear()
        trust.roots.update(roots)
    config = {
        "cache_size": data.draw(st.integers(1, 8)),
        "max_depth": data.draw(st.integers(1, 6)),
        "skew": data.draw(st.sampled_from([0, 30])),
    }
    pair = [make(compiled, trusts[0], **config), make(reference, trusts[1], **config)]
    for _ in range(data.draw(st.integers(1, 4))):
        links = data.draw(chains())
        if data.draw(st.booleans()) and len(links) > 1:
            victim = data.draw(st.sampled_from(links))
            who = data.draw(st.sampled_from(KEYS[:6]))
            for trust in trusts:
                trust.revoke(victim, who)
        shape = data.draw(st.sampled_from(["list", "dict", "partial", "garbage"]))
        proofs: Any = links[:-1]
        if shape == "dict":
            proofs = {token_id(p): p for p in links[:-1]}
        elif shape == "partial":
            proofs = links[1:-1]
        elif shape == "garbage":
            proofs = [*links[:-1], data.draw(st.binary(max_size=64))]
        request = {
            "capability": data.draw(st.sampled_from([None, "/dms", "/dms/deployment/bid", "/x"])),
            "topic": data.draw(st.sampled_from([None, "/nunet", "/nunet/a", "/other"])),
            "audience": data.draw(st.sampled_from([None, KEYS[len(links)].did, NODE.did])),
            "issuer": data.draw(st.sampled_from([None, KEYS[len(links) - 1].did])),
            "holder": data.draw(
                st.sampled_from([None, KEYS[len(links) - 1].did, KEYS[len(links)].did])
            ),
            "receiver": data.draw(st.sampled_from([None, KEYS[len(links)].did, NODE.did])),
            "anchored": data.draw(st.booleans()),
        }
        now = T0 + data.draw(st.sampled_from([-200, -130, -100, 0, 3500, 3600, 3640]))
        leaf = links[-1] if data.draw(st.integers(0, 9)) else data.draw(st.binary(max_size=80))
        results = [outcome(v, leaf, proofs, now, **request) for v in pair]
        assert results[0] == results[1]
        assert counters(pair[0]) == counters(pair[1])
        for link in links:
            assert (token_id(link) in pair[0]) == (token_id(link) in pair[1])


def iter_links(leaf: Any) -> Iterator[Any]:
    while leaf is not None:
        yield leaf
        leaf = leaf.parent


def test_link_objects_look_alike(native: Callable[[str], ModuleType]) -> None:
    links = chain_of(3)
    pair = [make(native("ucan_verify")), make(reference)]
    leaves = [check(v, links) for v in pair]
    for a, b in zip(iter_links(leaves[0]), iter_links(leaves[1]), strict=True):
        assert (a.id, a.raw, a.depth, a.allowance, a.token) == (
            b.id,
            b.raw,
            b.depth,
            b.allowance,
            b.token,
        )
        assert repr(a) == repr(b)
        assert a.root.id == b.root.id
