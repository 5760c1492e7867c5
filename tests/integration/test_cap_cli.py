"""`nunet cap` on real files: the DMS "join an organisation" flow end to end, checked with the
node context's own verifier, and the bad cases (each a clear error, the right exit code, no
traceback)."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest

from nunet.cli.main import main
from nunet.errors import CapabilityError, RevokedError, UntrustedRoot
from nunet.ucan import CapabilityStore, TrustContext, decode_token, from_text

PASS = "correct horse"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DMS_GENERAL_USER_DIR", "DMS_REST_PORT", "DMS_REST_ADDR", "BOOTSTRAP_PEERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DMS_PASSPHRASE", PASS)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    # No node answers here (and none that another test runs on the default port is asked).
    monkeypatch.setenv("DMS_REST_UNIX_SOCKET", str(tmp_path / "no-node.sock"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def nunet(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = nunet(capsys, *argv)
    assert code == 0, err
    return out


def new_context(capsys: pytest.CaptureFixture[str], name: str) -> str:
    doc = json.loads(ok(capsys, "cap", "new", name, "--json"))
    assert doc["context"] == name
    assert doc["node"] == {"reloaded": False,
                           "reason": "node not running: changes apply at next start"}
    return str(doc["did"])


def node_trust(home: Path, context: str = "dms") -> TrustContext:
    did = json.loads((home / ".nunet" / "key" / f"{context}.key").read_text())["did"]
    return TrustContext(did=did, store=CapabilityStore.open(home / ".nunet" / "cap", context))


def chain_of(text: str) -> list[bytes]:
    return [from_text(part) for part in text.strip().split(",")]


def test_join_an_organisation(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    org, user, node = (new_context(capsys, name) for name in ("org", "user", "dms"))
    assert (home / ".nunet" / "cap" / "dms.cap").is_file()
    assert (home / ".nunet" / "key" / "dms.key").is_file()
    assert node_trust(home).roots == {node}  # a new context trusts its own key

    # The organisation grants the user deployment rights.
    grant = json.loads(ok(capsys, "cap", "grant", "-c", "org", "--audience", user,
                          "--cap", "/dms/deployment", "--topic", "/nunet/deployment",
                          "--duration", "30d", user, "--json"))
    assert grant["token"]["issuer"] == org
    assert grant["token"]["audience"] == user
    assert grant["token"]["capabilities"] == ["/dms/deployment"]
    assert grant["token"]["proofs"] == []
    g = grant["chain"]
    assert "," not in g
    expiry = decode_token(from_text(g)).expiry
    assert abs(expiry - (time.time() + 30 * 86400)) < 120

    # The user holds it, and delegates part of it to its node.
    ok(capsys, "cap", "anchor", "-c", "user", "--provide", g)
    delegated = ok(capsys, "cap", "delegate", "-c", "user", "--audience", node,
                   "--cap", "/dms/deployment/bid", "--duration", "7d").strip()
    leaf, *proofs = chain_of(delegated)
    assert proofs == [from_text(g)]
    tok = decode_token(leaf)
    assert (tok.issuer, tok.audience, tok.subject) == (user, node, user)

    # The node context: the org (for what it granted) and the user are trusted; it holds the chain.
    out = ok(capsys, "cap", "anchor", "-c", "dms", "--require", g, "--root", user,
             "--provide", delegated)
    assert out.splitlines()[0] == f"added root {user}"
    trust = node_trust(home)
    assert trust.roots == {node, user}
    assert trust.provide_anchors() == [(leaf, tuple(proofs))]
    now = time.time()
    link = trust.verify(leaf, proofs, now, capability="/dms/deployment/bid", holder=node)
    assert link.depth == 2
    with pytest.raises(UntrustedRoot):  # the org's anchor does not reach there
        trust.verify(leaf, proofs, now, capability="/dms/node/peers", holder=node)
    with pytest.raises(CapabilityError):
        trust.verify(leaf, proofs, now, capability="/dms/deployment/commit", holder=node)

    listing = json.loads(ok(capsys, "cap", "list", "-c", "dms", "--json"))
    assert listing["did"] == node
    assert sorted(listing["roots"]) == sorted([node, user])
    assert [d["issuer"] for d in listing["require"]] == [org]
    assert [len(p["chain"]) for p in listing["provide"]] == [2]
    text = ok(capsys, "cap", "list", "-c", "dms")
    assert "require:" in text
    assert "chain of 2" in text
    assert json.loads(ok(capsys, "cap", "list", "--json")) == ["dms", "org", "user"]
    # grant and delegate keep what they issued
    assert json.loads(ok(capsys, "cap", "list", "-c", "user", "--json"))["tokens"][0][
        "audience"] == node

    # The user revokes its delegation (by the id the user context kept); the node applies it.
    leaf_id = json.loads(ok(capsys, "cap", "list", "-c", "user", "--json"))["tokens"][0]["id"]
    code, out, err = nunet(capsys, "cap", "revoke", "-c", "user", leaf_id[:12])
    assert code == 0, err
    assert "revoked" in err
    revocation = out.strip()
    assert decode_token(from_text(revocation)).proofs[0].hex() == leaf_id
    ok(capsys, "cap", "anchor", "-c", "dms", "--revoke", revocation)
    trust.reload()
    with pytest.raises(RevokedError):
        trust.verify(leaf, proofs, time.time(), capability="/dms/deployment/bid", holder=node)
    # Removing the revocation (by its text) makes the chain valid again.
    ok(capsys, "cap", "remove", "-c", "dms", "--revoke", revocation)
    trust.reload()
    trust.verify(leaf, proofs, time.time(), capability="/dms/deployment/bid", holder=node)
    # The org revokes its grant (given as text): the require anchor no longer counts.
    revocation = ok(capsys, "cap", "revoke", "-c", "org", g).strip()
    ok(capsys, "cap", "anchor", "-c", "dms", "--revoke", revocation)
    trust.reload()
    with pytest.raises(UntrustedRoot):
        trust.verify(leaf, proofs, time.time(), capability="/dms/deployment/bid", holder=node)
    ok(capsys, "cap", "remove", "-c", "dms", "--revoke", revocation)
    trust.reload()
    trust.verify(leaf, proofs, time.time(), capability="/dms/deployment/bid", holder=node)
    # Removing the require anchor (by id prefix) leaves the org untrusted.
    out = ok(capsys, "cap", "remove", "-c", "dms", "--require", grant["id"][:8], "--root", user)
    assert f"removed root {user}" in out
    trust.reload()
    assert trust.roots == {node}
    with pytest.raises(UntrustedRoot):
        trust.verify(leaf, proofs, time.time(), capability="/dms/deployment/bid", holder=node)


def test_delegate_picks_the_narrowest_anchor(capsys: pytest.CaptureFixture[str]) -> None:
    new_context(capsys, "org")
    user = new_context(capsys, "user")
    node = new_context(capsys, "dms")
    grants = {}
    for caps in (["/"], ["/dms/deployment"], ["/dms"]):
        args = [a for c in caps for a in ("--cap", c)]
        grants[caps[0]] = ok(capsys, "cap", "grant", "-c", "org", "--audience", user, *args,
                             "--duration", "1d", user).strip()
        ok(capsys, "cap", "anchor", "-c", "user", "--provide", grants[caps[0]])
    for wanted, parent in (("/dms/deployment/bid", "/dms/deployment"), ("/dms/node", "/dms"),
                           ("/public", "/")):
        chain = ok(capsys, "cap", "delegate", "-c", "user", "--audience", node, "--cap", wanted,
                   "--duration", "1h").strip()
        assert chain_of(chain)[1] == from_text(grants[parent])
    # Longer than any anchor lasts: refused, saying why for each anchor.
    code, _, err = nunet(capsys, "cap", "delegate", "-c", "user", "--audience", node,
                         "--cap", "/dms", "--duration", "2d")
    assert code == 1
    assert err.count("before the requested expiry") == 2
    assert "does not grant /dms" in err
    # Nothing granted under another subject.
    code, _, err = nunet(capsys, "cap", "delegate", "-c", "user", "--audience", node,
                         "--cap", "/dms", "--duration", "1h", node)
    assert code == 1
    assert f"about {user}" in err
    # A context with no provide anchor says how to get one.
    code, _, err = nunet(capsys, "cap", "delegate", "-c", "dms", "--audience", user,
                         "--cap", "/dms", "--duration", "1h")
    assert code == 1
    assert "cap anchor -c dms --provide" in err


def test_depth_limit_and_broadcast_and_at_file(capsys: pytest.CaptureFixture[str],
                                               home: Path) -> None:
    new_context(capsys, "org")
    user = new_context(capsys, "user")
    node = new_context(capsys, "dms")
    final = ok(capsys, "cap", "grant", "-c", "org", "--audience", user, "--cap", "/dms",
               "--topic", "/nunet", "--expiry", "2100-01-01", "--depth", "0", user).strip()
    assert decode_token(from_text(final)).expiry == 4102444800
    (home / "grant.txt").write_text(final + "\n")
    ok(capsys, "cap", "anchor", "-c", "user", "--provide", "@grant.txt")
    code, _, err = nunet(capsys, "cap", "delegate", "-c", "user", "--audience", node,
                         "--cap", "/dms", "--duration", "1h")
    assert code == 1
    assert "depth limit" in err
    # a broadcast grant needs no audience
    doc = json.loads(ok(capsys, "cap", "grant", "-c", "org", "--action", "broadcast",
                        "--topic", "/nunet/deployment", "--duration", "1h", user, "--json"))
    assert doc["token"]["action"] == "broadcast"
    assert doc["token"]["audience"] == ""


def test_bad_cases(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                   home: Path) -> None:
    user = new_context(capsys, "user")
    base = ["cap", "grant", "-c", "user", "--audience", user, "--cap", "/dms"]

    def fails(code: int, match: str, *argv: str) -> None:
        got, out, err = nunet(capsys, *argv)
        assert got == code, (argv, out, err)
        assert match in err, (argv, err)

    fails(1, "`nunet cap new nope` creates it", "cap", "list", "-c", "nope")
    fails(1, "`nunet cap new nope` creates it", *base[:2], "-c", "nope", *base[4:],
          "--duration", "1h", user)
    fails(1, "already exists", "cap", "new", "user")
    fails(1, "context name", "cap", "new", "a.b")
    fails(1, "starts with 'ucan1:'", "cap", "anchor", "-c", "user", "--require", "hello")
    fails(1, "not base64url", "cap", "anchor", "-c", "user", "--provide", "ucan1:!!!")
    fails(1, "not a token", "cap", "anchor", "-c", "user", "--require", "ucan1:AAAA")
    fails(1, "cannot read", "cap", "anchor", "-c", "user", "--require", "@missing.txt")
    fails(1, "is not a root anchor", "cap", "remove", "-c", "user", "--root",
          "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
    fails(1, "no require anchor", "cap", "remove", "-c", "user", "--require", "deadbeef")
    fails(1, "at least 8 hex digits", "cap", "remove", "-c", "user", "--token", "dead")
    fails(1, "no token", "cap", "revoke", "-c", "user", "0123456789abcdef")
    fails(2, "is in the past", *base, "--expiry", "2020-01-01T00:00:00Z", user)
    fails(2, "not an ISO 8601 time", *base, "--expiry", "next tuesday", user)
    fails(2, "expected a number and a unit", *base, "--duration", "10 years", user)
    fails(2, "give one of --expiry or --duration", *base, user)
    fails(2, "give one of --expiry or --duration", *base, "--duration", "1h",
          "--expiry", "2100-01-01", user)
    fails(2, "No such option", *base, "--duration", "1h", "--frobnicate", user)
    fails(2, "not a path", *base, "--cap", "dms", "--duration", "1h", user)
    fails(2, "--audience is required", "cap", "grant", "-c", "user", "--cap", "/dms",
          "--duration", "1h", user)
    fails(2, "Missing option", "cap", "anchor", "--root", user)
    fails(2, "nothing to anchor", "cap", "anchor", "-c", "user")
    fails(2, "0<=x<=255", *base, "--duration", "1h", "--depth", "300", user)
    fails(1, "subject", *base, "--duration", "1h", "not-a-did")

    # A chain where one token is expected; a provide chain addressed to someone else.
    other = new_context(capsys, "other")
    g = ok(capsys, "cap", "grant", "-c", "other", "--audience", other, "--cap", "/dms",
           "--duration", "1h", other).strip()
    fails(1, "one token expected", "cap", "anchor", "-c", "user", "--require", f"{g},{g}")
    fails(1, "not " + user, "cap", "anchor", "-c", "user", "--provide", g)
    assert node_trust(home, "user").provide_anchors() == []  # nothing half-applied

    # Signing needs the passphrase; without it, or with a wrong one, nothing is issued.
    monkeypatch.delenv("DMS_PASSPHRASE")
    fails(1, "DMS_PASSPHRASE", *base, "--duration", "1h", user)
    fails(1, "DMS_PASSPHRASE", "cap", "new", "fresh")  # its key would need one
    assert not (home / ".nunet" / "cap" / "fresh.cap").exists()
    monkeypatch.setenv("DMS_PASSPHRASE", "wrong")
    fails(1, "wrong passphrase", *base, "--duration", "1h", user)
    assert json.loads(ok(capsys, "cap", "list", "-c", "user", "--json"))["tokens"] == []
    # ...but anchoring and listing need none
    monkeypatch.delenv("DMS_PASSPHRASE")
    ok(capsys, "cap", "anchor", "-c", "user", "--root", other)


def test_corrupt_context_file(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    new_context(capsys, "user")
    path = home / ".nunet" / "cap" / "user.cap"
    path.write_bytes(path.read_bytes()[:10])
    code, _, err = nunet(capsys, "cap", "list", "-c", "user")
    assert code == 1
    assert str(path) in err
    assert "corrupt" in err


class _Recorder(http.server.BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, object]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.calls.append((self.path, msgspec.json.decode(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def address_string(self) -> str:
        return "local"

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_node(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, object]]]:
    sock = home / "node.sock"
    server = socketserver.UnixStreamServer(str(sock), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DMS_REST_UNIX_SOCKET", str(sock))
    _Recorder.calls = []
    try:
        yield _Recorder.calls
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_running_node_is_asked_to_reload(capsys: pytest.CaptureFixture[str],
                                           fake_node: list[tuple[str, object]]) -> None:
    code, _, err = nunet(capsys, "cap", "new", "dms", "-v")
    assert code == 0
    assert "node re-read the context" in err
    assert fake_node == [("/api/v1/cap/reload", {"context": "dms"})]
    doc = json.loads(ok(capsys, "cap", "anchor", "-c", "dms", "--json", "--root",
                        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"))
    assert doc["node"] == {"reloaded": True}
    assert len(fake_node) == 2
    ok(capsys, "cap", "list", "-c", "dms")
    assert len(fake_node) == 2  # reading changes nothing: no reload


def test_stdin_and_the_installed_entry_point() -> None:
    env = {**os.environ, "NUNET_NO_NATIVE": os.environ.get("NUNET_NO_NATIVE", "")}

    def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nunet", *argv], input=stdin,
                              capture_output=True, text=True, timeout=120, check=False,
                              env=env)

    done = run("cap", "new", "org", "--json")
    assert done.returncode == 0, done.stderr
    org = json.loads(done.stdout)["did"]
    done = run("cap", "grant", "-c", "org", "--audience", org, "--cap", "/dms",
               "--duration", "1h", org)
    assert done.returncode == 0, done.stderr
    done = run("cap", "anchor", "-c", "org", "--provide", "@-", stdin=done.stdout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("added provide ")
    done = run("cap", "anchor", "-c", "org", "--bogus")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
