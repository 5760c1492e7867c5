"""The node's actor behaviours under their NuNet DMS names, as one table.

Each row binds a behaviour path to a Node facade method, its request type (the JSON payload) and
its reply type. The table is read three times: by `register` (the root actor's dispatch), by the
local API's OpenAPI-style listing, and by `nunet actor cmd <behavior>`, which turns the request
type's fields into command-line flags. So a behaviour, its payload and its flags cannot drift.

Payloads are JSON (msgspec), as DMS sends them: these are management calls where a person may
read the bytes; the hot protocols (gossip, bids) use msgpack.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.errors import DecodeError, ValidationError
from nunet.jobs.records import (
    AllocationsArgs,
    DeploymentRef,
    ListDeployments,
    LogsArgs,
    NewDeployment,
)
from nunet.node.onboarding import Capacity

if TYPE_CHECKING:
    from nunet.actor.runtime import Actor, Message
    from nunet.node.node import Node

Call = Callable[["Node", Any], "Awaitable[object] | object"]


class Empty(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class OffboardArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    force: bool = False


class ConnectArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    address: str


class PingArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    did: str


class Hello(msgspec.Struct, frozen=True):
    did: str
    version: str


@dataclass(frozen=True)
class Behavior:
    name: str
    summary: str
    call: Call
    request: type[msgspec.Struct] = Empty


def _hello(node: Node, _args: Empty) -> Hello:
    from nunet import __version__

    return Hello(did=node.did, version=__version__)


def _resources(kind: str) -> Call:
    return lambda node, _args: node.resources(kind)


def _deployments(operation: str) -> Call:
    """A deployment operation: a method of the node's DeploymentService."""
    return lambda node, args: getattr(node.deployment_service(), operation)(args)


def _offboard(node: Node, args: OffboardArgs) -> dict[str, bool]:
    node.offboard(args.force)
    return {"ok": True}


BEHAVIORS: tuple[Behavior, ...] = (
    Behavior("/public/hello", "Who this node is: DID and version", _hello),
    Behavior("/public/status", "Identity, version, uptime, onboarded?", lambda n, _a: n.info()),
    Behavior("/dms/node/peers/list", "Connected peers", lambda n, _a: n.peers()),
    Behavior("/dms/node/peers/self", "This node as a peer", lambda n, _a: n.peer_self()),
    Behavior(
        "/dms/node/peers/connect", "Dial a peer by multiaddr",
        lambda n, a: n.connect(a.address), ConnectArgs,
    ),
    Behavior(
        "/dms/node/peers/ping", "Round-trip time to a peer", lambda n, a: n.ping(a.did), PingArgs
    ),
    Behavior("/dms/node/peers/dht", "DHT routing table and statistics", lambda n, _a: n.dht()),
    Behavior("/dms/node/peers/score", "QoS scores of probed peers", lambda n, _a: n.scores()),
    Behavior(
        "/dms/node/onboarding/onboard", "Onboard a capacity", lambda n, a: n.onboard(a), Capacity
    ),
    Behavior("/dms/node/onboarding/offboard", "Offboard", _offboard, OffboardArgs),
    Behavior("/dms/node/onboarding/status", "Onboarding status", lambda n, _a: n.status()),
    *(
        Behavior(f"/dms/node/resources/{kind}", f"Resources: {kind}", _resources(kind))
        for kind in ("onboarded", "free", "allocated")
    ),
    Behavior("/dms/node/hardware/spec", "What the machine has", lambda n, _a: n.machine()),
    Behavior("/dms/node/hardware/usage", "What the machine uses now", lambda n, _a: n.usage()),
    Behavior(
        "/dms/node/hardware/benchmark", "Measured benchmark scores",
        lambda n, _a: n.benchmark.hardware_benchmark(),
    ),
    Behavior(
        "/dms/node/deployment/new", "Deploy an ensemble (answers at once, status Preparing)",
        _deployments("new"), NewDeployment,
    ),
    Behavior(
        "/dms/node/deployment/list", "Deployments, newest first: status filter, limit, offset",
        _deployments("list_deployments"), ListDeployments,
    ),
    Behavior(
        "/dms/node/deployment/status", "A deployment's status, reason, allocations, history",
        _deployments("status"), DeploymentRef,
    ),
    Behavior(
        "/dms/node/deployment/manifest", "Where a deployment's nodes and allocations run",
        _deployments("manifest"), DeploymentRef,
    ),
    Behavior(
        "/dms/node/deployment/logs", "A chunk of an allocation's log from an offset",
        _deployments("logs"), LogsArgs,
    ),
    Behavior(
        "/dms/node/deployment/shutdown", "Stop a deployment's allocations",
        _deployments("shutdown"), DeploymentRef,
    ),
    Behavior(
        "/dms/node/deployment/delete", "Forget a finished deployment",
        _deployments("delete"), DeploymentRef,
    ),
    Behavior(
        "/dms/node/allocations/list", "Allocations of one deployment or of all",
        _deployments("allocations"), AllocationsArgs,
    ),
)

BY_NAME = {b.name: b for b in BEHAVIORS}


def decode_args(behavior: Behavior, payload: bytes) -> Any:
    """The request of `behavior` from its JSON payload; an empty payload means no arguments."""
    try:
        return msgspec.json.decode(payload or b"{}", type=behavior.request)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"{behavior.name}: {exc}", path="payload") from None
    except DECODE_ERRORS as exc:
        raise DecodeError(f"{behavior.name}: payload is not JSON: {exc}", path="payload") from None


async def call(node: Node, behavior: Behavior, payload: bytes) -> bytes:
    result = behavior.call(node, decode_args(behavior, payload))
    if inspect.isawaitable(result):
        result = await result
    return msgspec.json.encode(result)


def register(actor: Actor, node: Node) -> None:
    """Give `actor` (the node's root actor) every behaviour of the table, and have it follow
    revocations gossiped by any node."""
    from nunet.actor.dispatch import Registration
    from nunet.node.node import REVOKE_BEHAVIOR, REVOKE_TOPIC

    for behavior in BEHAVIORS:
        actor.add_behavior(behavior.name, _handler(node, behavior))
    # No capability: a revocation proves itself (signed) and binds only chains in which its
    # issuer issued a link, so anyone may pass one on; the topic's in-flight limit bounds floods.
    actor.system.dispatcher.register(
        actor.inbox, REVOKE_BEHAVIOR, Registration(_revocation(node), capability=None)
    )
    actor.subscribe(REVOKE_TOPIC)


def _revocation(node: Node) -> Callable[[Message], None]:
    def handle(msg: Message) -> None:
        if node.trust is not None:
            node.trust.add_revocation(bytes(msg.payload), time.time())

    return handle


def _handler(node: Node, behavior: Behavior) -> Callable[[Message], Awaitable[bytes]]:
    async def handle(msg: Message) -> bytes:
        return await call(node, behavior, msg.payload)

    return handle
