"""What the orchestrator keeps about a deployment (in the node's store) and what the deployment
operations (`/dms/node/deployment/*`, `/api/v1/deployments`) take and answer.

A `DeploymentRecord` is the whole truth about one deployment: its ensemble (canonical JSON), its
status and the reason for it, where each ensemble node was placed (with the provider's signed
bid as evidence), and each allocation's status and handle. The orchestrator rewrites it after
every change, so a node restarted mid-deployment picks up exactly where it was.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from nunet.actor.handle import Handle
from nunet.jobs.lifecycle import AllocationStatus, DeploymentStatus
from nunet.jobs.protocol import Bid

MAX_HISTORY = 64  # status changes kept per deployment
MAX_LIST_LIMIT = 1000

CommitState = Literal["pending", "ok", "refused", "reverted"]


class Placement(msgspec.Struct, kw_only=True):
    """One ensemble node on one provider."""

    provider: str  # DID
    handle: Handle  # the provider's root actor
    bid: Bid  # signed: the evidence of what it offered
    commit: CommitState = "pending"
    ports: tuple[int, ...] = ()  # public ports the provider reserved
    allocating: bool = False  # ALLOCATE sent, no answer yet
    allocated: bool = False
    misses: int = 0  # liveness checks missed in a row


class AllocationState(msgspec.Struct, kw_only=True):
    name: str
    node: str
    type: str  # task | service
    status: AllocationStatus = AllocationStatus.PENDING
    provider: str = ""
    handle: Handle | None = None  # the allocation actor, once allocated
    started: bool = False  # ALLOCATION_START sent for this run
    restart_pending: bool = False  # stopped to be started again (one_for_all, rest_for_one)
    restarts: int = 0
    attempt: int = 1  # placements so far (a redeploy starts a new one)
    exit_code: int | None = None
    reason: str = ""
    updated_at: float = 0.0


class Change(msgspec.Struct, frozen=True):
    at: float
    status: DeploymentStatus
    reason: str = ""


class DeploymentRecord(msgspec.Struct, kw_only=True):
    id: str
    ensemble: bytes  # canonical JSON (`Ensemble.to_json()`)
    status: DeploymentStatus = DeploymentStatus.PREPARING
    reason: str = ""  # why it waits (queued) or failed; "" when all is well
    created_at: float
    updated_at: float
    timeout: float  # seconds to reach Running/Completed (restarted by a redeploy)
    deadline: float
    placements: dict[str, Placement] = {}
    allocations: dict[str, AllocationState] = {}
    to_place: tuple[str, ...] = ()  # ensemble nodes waiting for a provider
    excluded: tuple[str, ...] = ()  # providers lost during this deployment
    rounds: int = 0  # bid requests sent
    history: list[Change] = []


class CachedLog(msgspec.Struct, frozen=True):
    """An ended allocation's log, fetched once so that `nunet logs` works after its provider
    has cleaned up or gone away."""

    data: bytes
    truncated: bool = False


# --- what the operations take ------------------------------------------------------------------


class _Args(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


Timeout = Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_LIMIT)]
Offset = Annotated[int, msgspec.Meta(ge=0)]


class NewDeployment(_Args, frozen=True):
    """`ensemble`: the ensemble as YAML/JSON text, or as a JSON object (DMS sends an object)."""

    ensemble: str | dict[str, Any]
    timeout: Timeout | None = None  # seconds; None = the node's default


class ListDeployments(_Args, frozen=True):
    status: DeploymentStatus | None = None
    limit: Limit | None = None
    offset: Offset = 0


class DeploymentRef(_Args, frozen=True):
    id: str


class LogsArgs(_Args, frozen=True):
    id: str
    allocation: str | None = None  # may be left out when the deployment has one allocation
    offset: Offset = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=4 << 20)] = 256 * 1024


class ResultsArgs(_Args, frozen=True):
    id: str
    allocation: str | None = None
    path: str = ""  # "" = list the output files
    offset: Offset = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=4 << 20)] = 512 * 1024


class AllocationsArgs(_Args, frozen=True):
    deployment: str | None = None


# --- what they answer --------------------------------------------------------------------------


class AllocationView(msgspec.Struct, frozen=True, kw_only=True):
    deployment: str
    name: str
    node: str
    type: str
    status: AllocationStatus
    provider: str
    handle: Handle | None
    restarts: int
    attempt: int
    exit_code: int | None
    reason: str
    updated_at: float


class DeploymentSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: DeploymentStatus
    reason: str
    created_at: float
    updated_at: float
    allocations: dict[str, AllocationStatus]
    providers: dict[str, str]  # ensemble node -> provider DID


class DeploymentPage(msgspec.Struct, frozen=True):
    items: list[DeploymentSummary]
    total: int
    more: bool


class DeploymentView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: DeploymentStatus
    reason: str
    created_at: float
    updated_at: float
    deadline: float
    orchestrator: Handle
    allocations: list[AllocationView]
    providers: dict[str, str]
    waiting: tuple[str, ...]  # nodes without a provider yet
    excluded: tuple[str, ...]
    rounds: int
    history: list[Change]


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Where everything of a deployment runs (DMS's deployment manifest)."""

    id: str
    status: DeploymentStatus
    orchestrator: Handle
    ensemble: dict[str, Any]
    nodes: dict[str, Placement]
    allocations: dict[str, Handle | None]


class LogsView(msgspec.Struct, frozen=True, kw_only=True):
    allocation: str
    data: bytes  # base64 in JSON
    next_offset: int
    finished: bool


class ResultsView(msgspec.Struct, frozen=True, kw_only=True):
    allocation: str
    files: tuple[str, ...] = ()
    data: bytes = b""
    next_offset: int = 0
    eof: bool = True


def summary(rec: DeploymentRecord) -> DeploymentSummary:
    return DeploymentSummary(
        id=rec.id, status=rec.status, reason=rec.reason, created_at=rec.created_at,
        updated_at=rec.updated_at,
        allocations={name: a.status for name, a in rec.allocations.items()},
        providers={node: p.provider for node, p in rec.placements.items()},
    )


def allocation_view(rec: DeploymentRecord, a: AllocationState) -> AllocationView:
    return AllocationView(
        deployment=rec.id, name=a.name, node=a.node, type=a.type, status=a.status,
        provider=a.provider, handle=a.handle, restarts=a.restarts, attempt=a.attempt,
        exit_code=a.exit_code, reason=a.reason, updated_at=a.updated_at,
    )


def view(rec: DeploymentRecord, orchestrator: Handle) -> DeploymentView:
    return DeploymentView(
        id=rec.id, status=rec.status, reason=rec.reason, created_at=rec.created_at,
        updated_at=rec.updated_at, deadline=rec.deadline, orchestrator=orchestrator,
        allocations=[allocation_view(rec, a) for a in rec.allocations.values()],
        providers={node: p.provider for node, p in rec.placements.items()},
        waiting=rec.to_place, excluded=rec.excluded, rounds=rec.rounds, history=rec.history,
    )
