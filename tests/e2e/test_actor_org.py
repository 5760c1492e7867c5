"""Three real nodes join an organisation with `nunet cap`, then talk through `nunet actor`:
a granted invocation succeeds, an ungranted one is refused, and after the organisation revokes a
member's grant (gossiped to every node) that member is refused everywhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nunet.testing.cluster import CliResult, NodeProcess
from nunet.testing.org import Member, organisation


def _wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Member]]:
    root: Path = tmp_path_factory.mktemp("org")
    nodes = [NodeProcess(root, name) for name in ("alice", "bob", "charlie")]
    try:
        nodes[0].start()
        nodes[0].wait_ready()
        boot = nodes[0].cli("peers", "self", "--json").json()["addresses"][0]  # type: ignore[index]
        for node in nodes[1:]:
            node.extra_env["BOOTSTRAP_PEERS"] = boot
            node.start()
        for node in nodes[1:]:
            node.wait_ready()
        yield organisation(nodes)
    finally:
        for node in nodes:
            node.kill()


def _hello(member: Member, dest: Member, behavior: str = "/public/hello") -> CliResult:
    return member.node.cli("actor", "cmd", behavior, "-d", dest.node_did, "-e", "5", "--json")


def test_granted_invocation_crosses_nodes(members: list[Member]) -> None:
    alice, bob, charlie = members
    for caller, callee in ((alice, bob), (bob, charlie), (charlie, alice)):
        result = _hello(caller, callee)
        assert result.code == 0, result.stderr
        assert result.json() == {"did": callee.node_did, "version": result.json()["version"]}


def test_local_user_is_a_root_of_its_own_node(members: list[Member]) -> None:
    alice = members[0]
    result = alice.node.cli("actor", "cmd", "/dms/node/peers/self", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["did"] == alice.node_did  # type: ignore[index]


def test_what_the_organisation_did_not_grant_is_refused(members: list[Member]) -> None:
    alice, bob, _ = members
    result = _hello(alice, bob, "/dms/node/peers/list")
    assert result.code == 1
    assert "untrusted_root" in result.stderr
    assert "Traceback" not in result.stderr
    assert _hello(alice, bob).code == 0  # and bob is still fine


def test_a_stranger_is_refused(members: list[Member], tmp_path: Path) -> None:
    """A user whose node trusts it, but whom no one else knows: deny by default."""
    bob = members[1]
    stranger = members[2].node
    assert stranger.cli("key", "new", "stranger").code == 0
    assert stranger.cli("cap", "new", "stranger").code == 0
    result = stranger.cli("actor", "cmd", "/public/hello", "-c", "stranger",
                          "-d", bob.node_did, "-e", "5")
    assert result.code == 1
    assert "untrusted_root" in result.stderr


def test_revocation_is_gossiped_to_every_node(members: list[Member]) -> None:
    alice, bob, charlie = members
    assert _hello(bob, charlie).code == 0
    revoked = alice.node.cli("cap", "revoke", "-c", "org", bob.grant, "--json")
    assert revoked.code == 0, revoked.stderr
    assert revoked.json()["broadcast"] == {"broadcast": True}  # type: ignore[index]
    # alice applied it at once; charlie hears it by gossip.
    _wait_for(lambda: _hello(bob, alice).code == 1)
    _wait_for(lambda: _hello(bob, charlie).code == 1)
    refused = _hello(bob, charlie)
    assert "revoked" in refused.stderr
    # Only bob's grant: the others still talk.
    assert _hello(charlie, alice).code == 0
