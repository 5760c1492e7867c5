"""The local API's routes: one table that both the server and the OpenAPI document read.

A route's handler takes the Node facade, the decoded JSON body (typed by `body`) and the path
parameters, and returns a msgspec-encodable value. Keeping the table as data means the OpenAPI
document cannot drift from what is served (a test checks both directions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from nunet import __version__
from nunet.actor.envelope import EnvelopeDoc, from_doc, to_doc
from nunet.benchmark.service import routes as benchmark_routes
from nunet.errors import ValidationError
from nunet.jobs.records import (
    AllocationsArgs,
    AllocationView,
    DeploymentPage,
    DeploymentRef,
    DeploymentSummary,
    DeploymentView,
    ListDeployments,
    LogsArgs,
    LogsView,
    Manifest,
    NewDeployment,
    ResultsArgs,
    ResultsView,
)
from nunet.net.hello import HeardPeer
from nunet.net.qos.core import PeerScore
from nunet.node.machine import MachineInfo
from nunet.node.node import (
    RESOURCE_KINDS,
    Announced,
    CapReload,
    DhtInfo,
    Handle,
    Node,
    NodeInfo,
    PeerInfo,
    PingReply,
    Revoked,
)
from nunet.node.onboarding import Capacity, Metadata, Status
from nunet.node.resources import Resources

API_PREFIX = "/api/v1"

Handler = Callable[[Node, Any, Mapping[str, str]], Awaitable[object] | object]


class Health(msgspec.Struct, frozen=True):
    status: str
    did: str
    version: str


class OffboardRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    force: bool = False


class WalletRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    chain: str
    testnet: bool = False


class WalletReply(msgspec.Struct, frozen=True):
    chain: str
    network: str
    address: str
    mnemonic: str
    derivation_path: str


class ConnectRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    address: str


class PingRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    did: str


class CapReloadRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    context: str


class RevokeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str  # the revocation's text form (`ucan1:...`)


async def _revoke(node: Node, body: RevokeRequest, _params: Mapping[str, str]) -> Revoked:
    from nunet.ucan import from_text

    return await node.broadcast_revocation(from_text(body.token))


class Done(msgspec.Struct, frozen=True):
    ok: bool = True


class ErrorBody(msgspec.Struct, frozen=True):
    code: str
    message: str
    field: str | None = None


class ErrorReply(msgspec.Struct, frozen=True):
    error: ErrorBody


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    handler: Handler
    response: Any
    body: type | None = None
    path_params: Mapping[str, tuple[str, ...]] | None = None


async def _actor_send(node: Node, body: EnvelopeDoc, _params: Mapping[str, str]) -> Done:
    await node.actor_send(from_doc(body))
    return Done()


async def _actor_invoke(node: Node, body: EnvelopeDoc, _params: Mapping[str, str]) -> EnvelopeDoc:
    return to_doc(await node.actor_invoke(from_doc(body)))


async def _actor_broadcast(
    node: Node, body: EnvelopeDoc, _params: Mapping[str, str]
) -> list[EnvelopeDoc]:
    return [to_doc(env) for env in await node.actor_broadcast(from_doc(body))]


def _health(node: Node, _body: None, _params: Mapping[str, str]) -> Health:
    return Health(status="ok", did=node.did, version=__version__)


def _offboard(node: Node, body: OffboardRequest, _params: Mapping[str, str]) -> Done:
    node.offboard(body.force)
    return Done()


async def _wallet(_node: Node, body: WalletRequest, _params: Mapping[str, str]) -> WalletReply:
    from nunet.crypto.wallet import new_wallet

    # Key derivation takes tens of ms and bip_utils is a heavy import: keep both off the loop.
    wallet = await asyncio.to_thread(new_wallet, body.chain, body.testnet)
    return WalletReply(
        chain=wallet.chain,
        network=wallet.network,
        address=wallet.address,
        mnemonic=wallet.mnemonic,
        derivation_path=wallet.derivation_path,
    )


A = TypeVar("A")


def _args(kind: type[A], params: Mapping[str, str]) -> A:
    """Operation arguments from the path and query parameters (text converted to the field's
    type; an unknown parameter is an error, as an unknown body field is)."""
    try:
        return msgspec.convert(dict(params), type=kind, strict=False)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        raise ValidationError(message, path=where.rstrip("`").lstrip(".") or None) from None


def _deployments(operation: str, kind: type) -> Handler:
    def handle(node: Node, _body: None, params: Mapping[str, str]) -> object:
        return getattr(node.deployment_service(), operation)(_args(kind, params))

    return handle


def _delete_deployment(node: Node, _body: None, params: Mapping[str, str]) -> Done:
    node.deployment_service().delete(_args(DeploymentRef, params))
    return Done()


DEPLOYMENTS = f"{API_PREFIX}/deployments"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "Liveness: the node is up and answering", _health, Health),
    Route(
        "GET", f"{API_PREFIX}/node/info", "This node's identity, version and uptime",
        lambda node, _b, _p: node.info(), NodeInfo,
    ),
    Route(
        "GET", f"{API_PREFIX}/actor/handle", "The handle of this node's root actor",
        lambda node, _b, _p: node.handle(), Handle,
    ),
    Route(
        "POST", f"{API_PREFIX}/actor/send",
        "Deliver a signed envelope (fire and forget): to this node's actors, a peer, or a topic",
        _actor_send, Done, body=EnvelopeDoc,
    ),
    Route(
        "POST", f"{API_PREFIX}/actor/invoke",
        "Deliver a signed invocation and wait for the reply envelope until it expires (408)",
        _actor_invoke, EnvelopeDoc, body=EnvelopeDoc,
    ),
    Route(
        "POST", f"{API_PREFIX}/actor/broadcast",
        "Publish a signed envelope on its topic; the replies collected until it expires",
        _actor_broadcast, list[EnvelopeDoc], body=EnvelopeDoc,
    ),
    Route(
        "GET", f"{API_PREFIX}/peers/self", "This node as a peer",
        lambda node, _b, _p: node.peer_self(), PeerInfo,
    ),
    Route(
        "GET", f"{API_PREFIX}/peers/list", "Connected peers",
        lambda node, _b, _p: node.peers(), list[PeerInfo],
    ),
    Route(
        "POST", f"{API_PREFIX}/peers/connect", "Dial a peer by multiaddr",
        lambda node, body, _p: node.connect(body.address), PeerInfo, body=ConnectRequest,
    ),
    Route(
        "POST", f"{API_PREFIX}/peers/ping", "Round-trip time to a peer",
        lambda node, body, _p: node.ping(body.did), PingReply, body=PingRequest,
    ),
    Route(
        "GET", f"{API_PREFIX}/peers/dht", "The DHT routing table and statistics",
        lambda node, _b, _p: node.dht(), DhtInfo,
    ),
    Route(
        "GET", f"{API_PREFIX}/peers/score", "QoS scores of the probed peers",
        lambda node, _b, _p: node.scores(), dict[str, PeerScore],
    ),
    Route(
        "POST", f"{API_PREFIX}/peers/hello", "Announce this node on /nunet/hello now",
        lambda node, _b, _p: node.announce(), Announced,
    ),
    Route(
        "GET", f"{API_PREFIX}/peers/heard", "Nodes heard on /nunet/hello",
        lambda node, _b, _p: node.heard(), list[HeardPeer],
    ),
    Route(
        "POST", f"{API_PREFIX}/onboarding/onboard", "Onboard a capacity (DMS Onboard)",
        lambda node, body, _p: node.onboard(body), Metadata, body=Capacity,
    ),
    Route(
        "POST", f"{API_PREFIX}/onboarding/resource-config",
        "Change the onboarded capacity (DMS ResourceConfig)",
        lambda node, body, _p: node.resource_config(body), Metadata, body=Capacity,
    ),
    Route(
        "GET", f"{API_PREFIX}/onboarding/metadata", "Onboarding metadata (DMS GetMetadata)",
        lambda node, _b, _p: node.metadata(), Metadata,
    ),
    Route(
        "GET", f"{API_PREFIX}/onboarding/status", "Onboarding status (DMS Status)",
        lambda node, _b, _p: node.status(), Status,
    ),
    Route(
        "POST", f"{API_PREFIX}/onboarding/offboard", "Offboard (DMS Offboard)",
        _offboard, Done, body=OffboardRequest,
    ),
    Route(
        "POST", f"{API_PREFIX}/onboarding/payment-address",
        "Create a payment address (DMS CreatePaymentAddress); nothing private is stored",
        _wallet, WalletReply, body=WalletRequest,
    ),
    Route(
        "GET", f"{API_PREFIX}/resources/machine", "What the whole machine has",
        lambda node, _b, _p: node.machine(), MachineInfo,
    ),
    Route(
        "GET", f"{API_PREFIX}/resources/{{kind}}", "Resources: onboarded, free or allocated",
        lambda node, _b, params: node.resources(params["kind"]), Resources,
        path_params={"kind": RESOURCE_KINDS},
    ),
    Route(
        "POST", f"{API_PREFIX}/cap/reload",
        "Re-read a capability context after `nunet cap` changed it",
        lambda node, body, _p: node.reload_capabilities(body.context), CapReload,
        body=CapReloadRequest,
    ),
    Route(
        "POST", f"{API_PREFIX}/cap/revoke",
        "Apply a signed revocation and gossip it to every node (DMS /dms/cap/revoke/broadcast)",
        _revoke, Revoked, body=RevokeRequest,
    ),
    *(Route(*row) for row in benchmark_routes(API_PREFIX)),
    Route(
        "POST", DEPLOYMENTS, "Deploy an ensemble (DMS /dms/node/deployment/new)",
        lambda node, body, _p: node.deployment_service().new(body), DeploymentSummary,
        body=NewDeployment,
    ),
    Route(
        "GET", DEPLOYMENTS, "Deployments, newest first; query: status, limit, offset",
        _deployments("list_deployments", ListDeployments), DeploymentPage,
    ),
    Route(
        "GET", f"{DEPLOYMENTS}/{{id}}", "A deployment's status, reason, allocations, history",
        _deployments("status", DeploymentRef), DeploymentView,
    ),
    Route(
        "GET", f"{DEPLOYMENTS}/{{id}}/manifest", "Where a deployment's nodes and allocations run",
        _deployments("manifest", DeploymentRef), Manifest,
    ),
    Route(
        "GET", f"{DEPLOYMENTS}/{{id}}/logs",
        "A chunk of an allocation's log; query: allocation, offset, limit",
        _deployments("logs", LogsArgs), LogsView,
    ),
    Route(
        "GET", f"{DEPLOYMENTS}/{{id}}/results",
        "An allocation's output files (path empty) or a chunk of one; query: allocation, "
        "path, offset, limit",
        _deployments("results", ResultsArgs), ResultsView,
    ),
    Route(
        "POST", f"{DEPLOYMENTS}/{{id}}/shutdown", "Stop a deployment's allocations",
        _deployments("shutdown", DeploymentRef), DeploymentSummary,
    ),
    Route(
        "DELETE", f"{DEPLOYMENTS}/{{id}}", "Forget a finished deployment",
        _delete_deployment, Done,
    ),
    Route(
        "GET", f"{API_PREFIX}/allocations", "Allocations; query: deployment",
        _deployments("allocations", AllocationsArgs), list[AllocationView],
    ),
)
