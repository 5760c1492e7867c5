"""The NuNet "join an organisation" flow, run through the real `nunet cap` commands.

An organisation key (kept in one node's home) grants each member's user what the organisation
allows; each member's node trusts the organisation for exactly that (`--require`), trusts its own
user as a root, and holds a delegation from its user (`--provide`), which it presents to others.
Used by the e2e tests and `make demo`, so both run what a user types.
"""

from __future__ import annotations

from collections.abc import Sequence

from nunet.testing.cluster import CliResult, NodeProcess

ORG_CAPS = ("/dms/deployment", "/public", "/broadcast")
ORG_TOPICS = ("/nunet",)


class Member:
    def __init__(self, node: NodeProcess, user_did: str, node_did: str, grant: str) -> None:
        self.node = node
        self.user_did = user_did
        self.node_did = node_did
        self.grant = grant  # the organisation's token to this member's user (text)


def run_ok(node: NodeProcess, *args: str) -> CliResult:
    result = node.cli(*args)
    if result.code != 0:
        raise AssertionError(
            f"`nunet {' '.join(args)}` on {node.name} exited {result.code}:\n{result.stderr}"
        )
    return result


def _json(node: NodeProcess, *args: str) -> dict[str, object]:
    data = run_ok(node, *args, "--json").json()
    assert isinstance(data, dict)
    return data


def new_org(holder: NodeProcess, name: str = "org") -> str:
    """An organisation context (and key) in `holder`'s home; returns its DID."""
    return str(_json(holder, "cap", "new", name)["did"])


def join(
    holder: NodeProcess,
    node: NodeProcess,
    *,
    org: str = "org",
    caps: Sequence[str] = ORG_CAPS,
    topics: Sequence[str] = ORG_TOPICS,
    duration: str = "2h",
    delegation: str = "1h",
) -> Member:
    """Make `node` (running) a member of `org`, whose key lives in `holder`'s home."""
    user_did = str(_json(node, "cap", "new", "user")["did"])
    node_did = str(_json(node, "peers", "self")["did"])
    cap_flags = [flag for cap in caps for flag in ("--cap", cap)]
    topic_flags = [flag for topic in topics for flag in ("--topic", topic)]
    grant = str(_json(holder, "cap", "grant", "-c", org, "--audience", user_did, *cap_flags,
                      *topic_flags, "--duration", duration, user_did)["chain"])
    run_ok(node, "cap", "anchor", "-c", "user", "--provide", grant)
    run_ok(node, "cap", "anchor", "-c", "dms", "--require", grant, "--root", user_did)
    delegation = str(_json(node, "cap", "delegate", "-c", "user", "--audience", node_did,
                           *cap_flags, *topic_flags, "--duration", delegation)["chain"])
    run_ok(node, "cap", "anchor", "-c", "dms", "--provide", delegation)
    return Member(node, user_did, node_did, grant)


def organisation(nodes: Sequence[NodeProcess]) -> list[Member]:
    """An organisation held by the first node, with every node a member (grants for 2 h, each
    user's delegation to its node for 1 h: a delegation cannot outlive its grant)."""
    new_org(nodes[0])
    return [join(nodes[0], node) for node in nodes]
