"""Trust contexts: roots, require and provide anchors, revocations, upkeep (in memory; the
persisted form is tested in tests/integration/test_ucan_store.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import (
    ExpiredError,
    MalformedToken,
    NotFound,
    RevokedError,
    SignatureError,
    UntrustedRoot,
    ValidationError,
    WrongAudience,
)
from nunet.ucan import TrustContext, issue, revoke, token_id, verify_chain

T0 = 1_700_000_000
ORG, ALICE, BOB, NODE, MALLORY = (KeyPair.from_seed(bytes([i]) * 32) for i in range(1, 6))


def grant(
    issuer: KeyPair,
    audience: KeyPair,
    *,
    subject: KeyPair = ORG,
    caps: tuple[str, ...] = ("/dms",),
    action: str = "delegate",
    exp: int = T0 + 3600,
    parent: bytes | None = None,
) -> bytes:
    return issue(
        issuer,
        action=action,  # type: ignore[arg-type]
        subject=subject.did,
        audience=audience.did,
        capabilities=caps,
        not_before=T0 - 100,
        expiry=exp,
        parent=parent,
    )


def test_roots() -> None:
    trust = TrustContext([ORG.did])
    root = grant(ORG, ALICE)
    assert verify_chain(root, [], trust, T0, capability="/dms/x").depth == 1
    trust.add_root(ORG.did)  # idempotent
    assert trust.roots == frozenset({ORG.did})
    trust.remove_root(ORG.did)
    with pytest.raises(UntrustedRoot):
        verify_chain(root, [], trust, T0)
    with pytest.raises(NotFound):
        trust.remove_root(ORG.did)
    with pytest.raises(ValidationError) as info:
        trust.add_root("did:key:zNope")
    assert info.value.path == "root"
    with pytest.raises(ValidationError):
        TrustContext(did="not a did")


def test_require_anchor() -> None:
    trust = TrustContext([ORG.did], did=NODE.did)
    anchor = grant(BOB, NODE, subject=BOB, caps=("/dms/deployment",))
    root = grant(BOB, ALICE, subject=BOB, caps=("/dms",))
    leaf = grant(ALICE, NODE, subject=BOB, action="invoke", parent=root)
    with pytest.raises(UntrustedRoot):
        trust.verify(leaf, [root], T0, capability="/dms/deployment/bid")
    tid = trust.add_require(anchor, T0)
    assert trust.add_require(anchor, T0) == tid
    assert trust.require_anchors() == [anchor]
    trust.verify(leaf, [root], T0, capability="/dms/deployment/bid", audience=NODE.did)
    with pytest.raises(UntrustedRoot):
        trust.verify(leaf, [root], T0, capability="/dms/node")
    trust.remove_require(tid)
    with pytest.raises(UntrustedRoot):
        trust.verify(leaf, [root], T0, capability="/dms/deployment/bid")
    with pytest.raises(NotFound):
        trust.remove_require(tid)


def test_require_anchor_must_be_a_valid_root_delegation() -> None:
    trust = TrustContext()
    root = grant(BOB, ALICE, subject=BOB)
    with pytest.raises(ValidationError):
        trust.add_require(grant(ALICE, NODE, subject=BOB, parent=root), T0)
    with pytest.raises(ValidationError):
        trust.add_require(grant(BOB, NODE, subject=BOB, action="invoke"), T0)
    forged = root[:-1] + bytes([root[-1] ^ 1])
    with pytest.raises(SignatureError):
        trust.add_require(forged, T0)
    with pytest.raises(ExpiredError):
        trust.add_require(root, T0 + 7200)
    with pytest.raises(MalformedToken):
        trust.add_require(b"garbage", T0)
    assert trust.require_anchors() == []


def test_provide_anchor() -> None:
    trust = TrustContext(did=ALICE.did)
    root = grant(BOB, ALICE, subject=BOB)  # rooted elsewhere: we are not BOB's verifier
    tid = trust.add_provide(root, [], T0)
    assert tid == token_id(root)
    assert trust.provide_anchors() == [(root, ())]
    with pytest.raises(WrongAudience):
        trust.add_provide(grant(BOB, NODE, subject=BOB), [], T0)
    trust.remove_provide(tid)
    assert trust.provide_anchors() == []
    with pytest.raises(NotFound):
        trust.remove_provide(tid)


def test_revocation_applies_to_cached_chains_at_once() -> None:
    trust = TrustContext([ORG.did])
    root = grant(ORG, ALICE)
    leaf = grant(ALICE, NODE, action="invoke", parent=root)
    trust.verify(leaf, [root], T0, capability="/dms")
    signatures = trust.verifier.signatures_verified
    rev = revoke(ORG, root, not_before=T0)
    assert trust.add_revocation(rev, T0) == token_id(root)
    assert trust.add_revocation(rev, T0) == token_id(root)  # idempotent
    assert trust.is_revoked(token_id(root))
    assert trust.revocations() == [rev]
    with pytest.raises(RevokedError) as info:
        trust.verify(leaf, [root], T0, capability="/dms")
    assert info.value.path == "chain[1]"
    assert trust.verifier.signatures_verified == signatures


def test_revocation_by_someone_without_authority_has_no_effect() -> None:
    trust = TrustContext([ORG.did])
    root = grant(ORG, ALICE)
    trust.add_revocation(revoke(MALLORY, root, not_before=T0), T0)
    assert trust.is_revoked(token_id(root))  # named, but not by its issuer or an ancestor's
    assert trust.verify(root, [], T0).depth == 1


def test_bad_revocations() -> None:
    trust = TrustContext([ORG.did])
    root = grant(ORG, ALICE)
    with pytest.raises(MalformedToken) as info:
        trust.add_revocation(root, T0)
    assert info.value.path == "token.action"
    rev = revoke(ORG, root, not_before=T0)
    with pytest.raises(SignatureError):
        trust.add_revocation(rev[:-1] + bytes([rev[-1] ^ 1]), T0)
    with pytest.raises(ExpiredError):
        trust.add_revocation(rev, T0 + 3600 + 30)
    with pytest.raises(MalformedToken):
        trust.add_revocation(b"\xff" * 10, T0)
    assert trust.revocations() == []


def test_gc_drops_what_expired() -> None:
    trust = TrustContext([ORG.did], did=ALICE.did)
    short = grant(ORG, ALICE, exp=T0 + 10)
    long = grant(ORG, ALICE, exp=T0 + 1000)
    trust.add_revocation(revoke(ORG, short, not_before=T0), T0)
    trust.add_revocation(revoke(ORG, long, not_before=T0), T0)
    trust.add_require(grant(BOB, NODE, subject=BOB, exp=T0 + 10), T0)
    trust.add_provide(grant(BOB, ALICE, subject=BOB, exp=T0 + 10), [], T0)
    assert trust.gc(T0) == 0
    assert trust.gc(T0 + 10 + 30) == 3
    assert not trust.is_revoked(token_id(short))
    assert trust.is_revoked(token_id(long))
    assert trust.require_anchors() == []
    assert trust.provide_anchors() == []


def test_config_reaches_the_verifier() -> None:
    trust = TrustContext(skew=5, max_depth=4, max_bytes=2048, cache_size=10)
    v = trust.verifier
    assert (v.skew, v.max_depth, v.max_bytes, v.cache_size) == (5.0, 4, 2048, 10)
    assert "roots=0" in repr(trust)


@pytest.mark.parametrize(
    "first", ["nunet._native.ucan_verify", "nunet._native._reference.ucan_verify"]
)
def test_importing_the_native_module_first_is_fine(first: str) -> None:
    """The verifier imports the token schema lazily; `nunet.ucan` imports the verifier."""
    code = f"import {first}, nunet.ucan; print(nunet.ucan.ChainVerifier.__module__)"
    env = {**os.environ, "NUNET_NO_NATIVE": "1" if "_reference" in first else "0"}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    if done.returncode and "is not built" in done.stderr:
        pytest.skip("native module not built")
    assert done.returncode == 0, done.stderr
