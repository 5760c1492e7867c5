"""Capability state on a real RocksDB: anchors, tokens and revocations survive a restart, also one
by SIGKILL, and a reload sees another writer's changes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nunet.crypto.keys import KeyPair
from nunet.db import Store
from nunet.errors import LocalProtocolError, RevokedError, StoreError, UntrustedRoot
from nunet.ucan import CapabilityStore, TrustContext, issue, revoke, token_id

T0 = 1_700_000_000
ORG, ALICE, BOB, NODE = (KeyPair.from_seed(bytes([i]) * 32) for i in range(1, 5))


def grant(issuer: KeyPair, audience: KeyPair, subject: KeyPair = ORG, **kw: object) -> bytes:
    return issue(
        issuer,
        action="delegate",
        subject=subject.did,
        audience=audience.did,
        capabilities=("/dms",),
        not_before=T0 - 100,
        expiry=T0 + 3600,
        **kw,  # type: ignore[arg-type]
    )


def test_trust_context_survives_a_restart(tmp_path: Path) -> None:
    root = grant(ORG, ALICE)
    leaf = grant(ALICE, NODE, parent=root)
    anchor = grant(BOB, NODE, subject=BOB)
    provided = grant(BOB, NODE, subject=BOB)
    outsider_root = grant(BOB, ALICE, subject=BOB)
    with Store.open(tmp_path / "db") as store:
        caps = CapabilityStore(store)
        trust = TrustContext([ORG.did], did=NODE.did, store=caps)
        trust.add_require(anchor, T0)
        trust.add_provide(provided, [], T0)
        trust.add_revocation(revoke(ALICE, leaf, not_before=T0), T0)
        assert caps.put_token(leaf) == token_id(leaf)
    with Store.open(tmp_path / "db") as store:
        caps = CapabilityStore(store)
        trust = TrustContext(store=caps)
        assert trust.roots == {ORG.did}
        assert trust.require_anchors() == [anchor]
        assert trust.provide_anchors() == [(provided, ())]
        assert trust.is_revoked(token_id(leaf))
        assert caps.tokens() == [leaf]
        assert caps.get_token(token_id(leaf)) == leaf
        with pytest.raises(RevokedError):
            trust.verify(leaf, [root], T0)
        assert trust.verify(root, [], T0).depth == 1
        assert trust.verify(outsider_root, [], T0, capability="/dms/x").depth == 1
        trust.remove_root(ORG.did)
        caps.delete_token(token_id(leaf))
    with Store.open(tmp_path / "db") as store:
        trust = TrustContext(store=CapabilityStore(store))
        with pytest.raises(UntrustedRoot):
            trust.verify(root, [], T0)
        assert CapabilityStore(store).tokens() == []


def test_contexts_are_separate(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        TrustContext([ORG.did], store=CapabilityStore(store, "dms"))
        TrustContext([BOB.did], store=CapabilityStore(store, "user"))
        assert CapabilityStore.contexts(store) == ["dms", "user"]
        assert TrustContext(store=CapabilityStore(store, "user")).roots == {BOB.did}
        with pytest.raises(LocalProtocolError):
            CapabilityStore(store, "a/b")


def test_reload_sees_another_writer(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        mine = TrustContext([ORG.did], store=CapabilityStore(store))
        theirs = TrustContext(store=CapabilityStore(store))
        root = grant(ORG, ALICE)
        mine.verify(root, [], T0)
        theirs.add_revocation(revoke(ORG, root, not_before=T0), T0)
        theirs.remove_root(ORG.did)
        theirs.add_root(BOB.did)
        mine.verify(root, [], T0)  # not yet re-read
        mine.reload()
        assert mine.roots == {BOB.did}
        assert mine.is_revoked(token_id(root))
        with pytest.raises(UntrustedRoot):
            mine.verify(root, [], T0)


def test_gc_deletes_from_disk(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        caps = CapabilityStore(store)
        trust = TrustContext([ORG.did], store=caps)
        trust.add_revocation(revoke(ORG, grant(ORG, ALICE), not_before=T0), T0)
        assert len(caps.revocations()) == 1
        assert trust.gc(T0 + 3600 + 30) == 1
        assert caps.revocations() == []


def test_corrupt_record_is_a_store_error(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        store.put(b"cap/dms/revoke/" + b"00" * 32, b"\x00garbage")
        with pytest.raises(StoreError, match="does not decode"):
            TrustContext(store=CapabilityStore(store))
        store.put(b"cap/dms/revoke/" + b"00" * 32, grant(ORG, ALICE))
        with pytest.raises(StoreError, match="stored as a revocation"):
            TrustContext(store=CapabilityStore(store))
        store.delete(b"cap/dms/revoke/" + b"00" * 32)
        store.put(b"cap/dms/provide/" + b"00" * 32, b"\x93")
        with pytest.raises(StoreError, match="not a token chain"):
            TrustContext(store=CapabilityStore(store))


def test_revocation_survives_sigkill(tmp_path: Path) -> None:
    """A revocation that `add_revocation` returned from is on disk, even if the node dies."""
    db = tmp_path / "db"
    root = grant(ORG, ALICE)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from nunet.crypto.keys import KeyPair
        from nunet.db import Store
        from nunet.ucan import CapabilityStore, TrustContext, revoke
        org = KeyPair.from_seed(bytes([1]) * 32)
        store = Store.open({str(db)!r})
        trust = TrustContext([org.did], store=CapabilityStore(store))
        trust.add_revocation(revoke(org, bytes.fromhex({root.hex()!r}), not_before={T0}), {T0})
        print("revoked", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NUNET_NO_NATIVE": os.environ.get("NUNET_NO_NATIVE", "")},
    )
    assert "revoked" in done.stdout, done.stderr
    assert done.returncode == -9
    with Store.open(db) as store:
        trust = TrustContext(store=CapabilityStore(store))
        with pytest.raises(RevokedError):
            trust.verify(root, [], T0)
