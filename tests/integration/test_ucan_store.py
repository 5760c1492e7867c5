"""Capability contexts in files (`<cap_dir>/<context>.cap`): anchors, tokens and revocations survive
a restart, also one by SIGKILL; a reload sees another writer's changes; concurrent writers (threads
and processes) never lose each other's records; a damaged file is a StoreError naming it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import msgspec
import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import NotFound, RevokedError, StoreError, UntrustedRoot, ValidationError
from nunet.ucan import CapabilityStore, TrustContext, issue, revoke, token_id
from nunet.ucan.store import FORMAT_VERSION

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


def open_dms(cap_dir: Path, create: bool = False) -> CapabilityStore:
    return CapabilityStore.open(cap_dir, "dms", create=create)


def test_trust_context_survives_a_restart(tmp_path: Path) -> None:
    root = grant(ORG, ALICE)
    leaf = grant(ALICE, NODE, parent=root)
    anchor = grant(BOB, NODE, subject=BOB)
    provided = grant(BOB, NODE, subject=BOB)
    outsider_root = grant(BOB, ALICE, subject=BOB)
    caps = open_dms(tmp_path, create=True)
    assert caps.path == tmp_path / "dms.cap"
    trust = TrustContext([ORG.did], did=NODE.did, store=caps)
    trust.add_require(anchor, T0)
    trust.add_provide(provided, [root], T0)
    trust.add_revocation(revoke(ALICE, leaf, not_before=T0), T0)
    assert caps.put_token(leaf) == token_id(leaf)
    assert caps.path.stat().st_mode & 0o777 == 0o600

    caps = open_dms(tmp_path)
    trust = TrustContext(store=caps)
    assert trust.roots == {ORG.did}
    assert trust.require_anchors() == [anchor]
    assert trust.provide_anchors() == [(provided, (root,))]
    assert trust.is_revoked(token_id(leaf))
    assert caps.tokens() == [leaf]
    assert caps.get_token(token_id(leaf)) == leaf
    assert caps.get_token(token_id(root)) is None
    with pytest.raises(RevokedError):
        trust.verify(leaf, [root], T0)
    assert trust.verify(root, [], T0).depth == 1
    assert trust.verify(outsider_root, [], T0, capability="/dms/x").depth == 1
    trust.remove_root(ORG.did)
    caps.delete_token(token_id(leaf))

    trust = TrustContext(store=open_dms(tmp_path))
    with pytest.raises(UntrustedRoot):
        trust.verify(root, [], T0)
    assert open_dms(tmp_path).tokens() == []


def test_open_create_exists_and_contexts(tmp_path: Path) -> None:
    cap_dir = tmp_path / "cap"
    assert CapabilityStore.contexts(cap_dir) == []
    with pytest.raises(NotFound, match=r"`nunet cap new user` creates it"):
        CapabilityStore.open(cap_dir, "user")
    assert not CapabilityStore.exists(cap_dir, "user")
    TrustContext([ORG.did], store=CapabilityStore.open(cap_dir, "dms", create=True))
    TrustContext([BOB.did], store=CapabilityStore.open(cap_dir, "user", create=True))
    empty = CapabilityStore.open(cap_dir, "empty", create=True)
    assert empty.roots() == []
    assert (cap_dir / "empty.cap").is_file()  # created even with nothing in it
    (cap_dir / "not-a-context.txt").write_text("x")
    (cap_dir / "_hidden.cap").write_text("x")
    assert CapabilityStore.contexts(cap_dir) == ["dms", "empty", "user"]
    assert CapabilityStore.exists(cap_dir, "user")
    # create=True on an existing context opens it, keeping what it holds
    assert CapabilityStore.open(cap_dir, "user", create=True).roots() == [BOB.did]
    assert TrustContext(store=CapabilityStore.open(cap_dir, "user")).roots == {BOB.did}
    for bad in ("a/b", "../x", "", "-x", "x" * 65, "a.b", "é"):
        with pytest.raises(ValidationError) as info:
            CapabilityStore.open(cap_dir, bad, create=True)
        assert info.value.path == "context"
    assert not (tmp_path / "x.cap").exists()


def test_reload_sees_another_writer(tmp_path: Path) -> None:
    mine = TrustContext([ORG.did], store=open_dms(tmp_path, create=True))
    theirs = TrustContext(store=open_dms(tmp_path))
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


def test_a_write_keeps_what_another_writer_added(tmp_path: Path) -> None:
    """A mutation re-reads the file under the lock: a stale snapshot never overwrites."""
    first = open_dms(tmp_path, create=True)
    second = open_dms(tmp_path)
    first.put_root(ORG.did)
    second.put_root(BOB.did)  # its snapshot predates ORG
    assert second.roots() == [ORG.did, BOB.did]
    assert first.roots() == [ORG.did]  # a snapshot, until reloaded
    first.reload()
    assert first.roots() == [ORG.did, BOB.did]
    first.delete_root(ORG.did)
    second.reload()
    assert second.roots() == [BOB.did]


def test_concurrent_writers_in_threads_lose_nothing(tmp_path: Path) -> None:
    open_dms(tmp_path, create=True)
    dids = [[KeyPair.from_seed(bytes([t, i]) * 16).did for i in range(30)] for t in range(4)]

    def writer(mine: list[str]) -> None:
        store = open_dms(tmp_path)
        for did in mine:
            store.put_root(did)

    threads = [threading.Thread(target=writer, args=(mine,)) for mine in dids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(open_dms(tmp_path).roots()) == sorted(d for mine in dids for d in mine)


def test_concurrent_writers_in_processes_lose_nothing(tmp_path: Path) -> None:
    open_dms(tmp_path, create=True)
    script = textwrap.dedent(
        f"""
        import sys
        from nunet.ucan import CapabilityStore
        store = CapabilityStore.open({str(tmp_path)!r}, "dms")
        start = sys.stdin.readline()  # all writers begin together
        for i in range(40):
            store.put_root(f"{{sys.argv[1]}}-{{i}}")
        print("done", flush=True)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p0", "p1", "p2")
    ]
    outs = [proc.communicate("go\n", timeout=120) for proc in procs]
    for (out, err), proc in zip(outs, procs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    roots = open_dms(tmp_path).roots()
    assert sorted(roots) == sorted(f"p{p}-{i}" for p in range(3) for i in range(40))
    # each writer's records stay in its own order: appends, never reorders
    for p in range(3):
        assert [r for r in roots if r.startswith(f"p{p}-")] == [f"p{p}-{i}" for i in range(40)]


def test_gc_deletes_from_disk_in_one_write(tmp_path: Path) -> None:
    caps = open_dms(tmp_path, create=True)
    trust = TrustContext([ORG.did], store=caps)
    for _ in range(3):
        trust.add_revocation(revoke(ORG, grant(ORG, ALICE), not_before=T0), T0)
    trust.add_require(grant(BOB, NODE, subject=BOB), T0)
    assert len(caps.revocations()) == 3
    inode = caps.path.stat().st_ino
    assert trust.gc(T0) == 0
    assert caps.path.stat().st_ino == inode  # nothing dropped: the file is not rewritten
    assert trust.gc(T0 + 3600 + 30) == 4
    assert caps.revocations() == []
    assert open_dms(tmp_path).requires() == []
    assert open_dms(tmp_path).roots() == [ORG.did]


def _write(path: Path, doc: object) -> None:
    path.write_bytes(msgspec.msgpack.encode(doc))


def test_corrupt_file_is_a_store_error_naming_it(tmp_path: Path) -> None:
    caps = open_dms(tmp_path, create=True)
    TrustContext([ORG.did], store=caps).add_require(grant(BOB, NODE, subject=BOB), T0)
    path = caps.path
    good = path.read_bytes()
    cases: list[tuple[bytes, str]] = [
        (good[: len(good) // 2], "corrupt"),  # truncated
        (b"", "corrupt"),
        (b"\xc1garbage", "corrupt"),
        (msgspec.msgpack.encode([1, 2, 3]), "corrupt"),
        (msgspec.msgpack.encode({"version": FORMAT_VERSION + 1}), "format 2"),
        (msgspec.msgpack.encode({"version": FORMAT_VERSION, "roots": [1]}), "corrupt"),
        (msgspec.msgpack.encode({"version": FORMAT_VERSION, "require": ["text"]}), "corrupt"),
    ]
    for data, match in cases:
        path.write_bytes(data)
        with pytest.raises(StoreError, match=match) as info:
            open_dms(tmp_path)
        assert str(path) in str(info.value)
        with pytest.raises(StoreError):
            caps.put_root(ALICE.did)  # a write never replaces a file it cannot read
        assert path.read_bytes() == data


def test_corrupt_records_are_store_errors_and_reload_keeps_state(tmp_path: Path) -> None:
    caps = open_dms(tmp_path, create=True)
    trust = TrustContext([ORG.did], store=caps)
    root = grant(ORG, ALICE)
    rev = revoke(ORG, root, not_before=T0)
    trust.add_revocation(rev, T0)
    good = caps.path.read_bytes()
    _write(caps.path, {"version": FORMAT_VERSION, "revocations": [b"\x00garbage"]})
    with pytest.raises(StoreError, match="does not decode") as info:
        trust.reload()
    assert str(caps.path) in str(info.value)
    # the failed reload left the context as it was
    assert trust.roots == {ORG.did}
    assert trust.revocations() == [rev]
    _write(caps.path, {"version": FORMAT_VERSION, "revocations": [root]})
    with pytest.raises(StoreError, match="stored as a revocation"):
        TrustContext(store=open_dms(tmp_path))
    _write(caps.path, {"version": FORMAT_VERSION, "provide": [[b"\x93", []]]})
    with pytest.raises(StoreError, match="does not decode"):
        TrustContext(store=open_dms(tmp_path))
    caps.path.write_bytes(good)
    trust.reload()
    assert trust.is_revoked(token_id(root))
    caps.path.unlink()
    with pytest.raises(NotFound, match="removed"):
        trust.reload()


def test_revocation_survives_sigkill(tmp_path: Path) -> None:
    """A revocation that `add_revocation` returned from is on disk, even if the node dies."""
    root = grant(ORG, ALICE)
    script = textwrap.dedent(
        f"""
        import os, signal
        from nunet.crypto.keys import KeyPair
        from nunet.ucan import CapabilityStore, TrustContext, revoke
        org = KeyPair.from_seed(bytes([1]) * 32)
        store = CapabilityStore.open({str(tmp_path)!r}, "dms", create=True)
        trust = TrustContext([org.did], store=store)
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
    trust = TrustContext(store=open_dms(tmp_path))
    with pytest.raises(RevokedError):
        trust.verify(root, [], T0)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
