"""The deployment protocol between an orchestrator and its providers: behaviour names (DMS's) and
the messages they carry (msgpack, `encode`/`decode`).

Flow: the orchestrator (a child actor of the user's node, inbox = deployment id) publishes a
`BidRequest` on TOPIC_DEPLOYMENT with behaviour BID_REQUEST (pinned nodes: invoked directly on
the provider's root actor); each provider that fits replies with a signed `Bid` (the reply of the
broadcast or invocation: DMS calls that path `/dms/deployment/bid`). The orchestrator assigns
nodes to bids, then `Commit`s each chosen provider (a reservation that expires), `Revert`s them
all when one refuses, `Allocate`s (the provider creates one Allocation actor per allocation and
answers their handles), and starts them (ALLOCATION_START, honouring depends_on). Allocations
report every status change to the orchestrator (ALLOCATION_STATUS, a send); logs and results are
pulled (ALLOCATION_LOGS, ALLOCATION_RESULTS) in chunks; ALLOCATION_SHUTDOWN stops one.

Every behaviour here sits under `/dms/deployment` or `/dms/allocation`, so an organisation's
`/dms/deployment` grant covers what an orchestrator and a provider say to each other
(allocation behaviours are registered with capability `/dms/deployment`).
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

from nunet.actor.handle import Handle
from nunet.codec import DECODE_ERRORS
from nunet.crypto.keys import KeyPair
from nunet.errors import DecodeError
from nunet.jobs.capability import Offer, Requirement
from nunet.node.resources import Resources

TOPIC_DEPLOYMENT = "/nunet/deployment"
CAPABILITY = "/dms/deployment"

BID_REQUEST = "/dms/deployment/request"
BID = "/dms/deployment/bid"
COMMIT = "/dms/deployment/commit"
REVERT = "/dms/deployment/revert"
ALLOCATE = "/dms/deployment/allocate"
ALLOCATION_STATUS = "/dms/deployment/allocation/status"  # allocation -> orchestrator

ALLOCATION_START = "/dms/allocation/start"
ALLOCATION_SHUTDOWN = "/dms/allocation/shutdown"
ALLOCATION_LOGS = "/dms/allocation/logs"
ALLOCATION_RESULTS = "/dms/allocation/results"
ALLOCATION_INFO = "/dms/allocation/status"

BID_DOMAIN = b"nunet:bid:v1:"


class BidRequest(msgspec.Struct, frozen=True, kw_only=True):
    deployment_id: str
    orchestrator: Handle
    requirements: dict[str, Requirement]  # ensemble node name -> what it needs
    expires_at: float  # unix seconds: bids after this are ignored


class Bid(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's signed offer for one ensemble node; kept by the orchestrator as evidence."""

    deployment_id: str
    node: str
    provider: str  # the provider node's DID (the signer)
    handle: Handle  # the provider's root actor
    offer: Offer
    expires_at: float
    nonce: bytes
    signature: bytes = b""

    def signing_bytes(self) -> bytes:
        return BID_DOMAIN + encode(msgspec.structs.replace(self, signature=b""))

    def sign(self, keypair: KeyPair) -> Bid:
        return msgspec.structs.replace(self, signature=keypair.sign(self.signing_bytes()))

    def verify(self) -> None:
        """SignatureError or InvalidDID unless the provider signed exactly this bid."""
        from nunet.crypto.did import public_key_from_did
        from nunet.crypto.keys import verify

        verify(public_key_from_did(self.provider), self.signing_bytes(), self.signature)


class Bids(msgspec.Struct, frozen=True):
    """A provider's answer to a bid request: one bid per node it fits (possibly none)."""

    bids: tuple[Bid, ...] = ()
    refusals: dict[str, str] = {}  # node -> why not (for "no provider with 2 GPUs answered")


class Commit(msgspec.Struct, frozen=True, kw_only=True):
    deployment_id: str
    node: str
    resources: Resources  # exactly what to reserve (capability.claim)
    ports: tuple[int, ...] = ()  # public ports to reserve
    expires_at: float  # the reservation lapses unless allocated by then


class CommitReply(msgspec.Struct, frozen=True):
    ok: bool
    reason: str = ""
    ports: tuple[int, ...] = ()  # the public ports actually reserved (provider-picked ones too)


class Revert(msgspec.Struct, frozen=True, kw_only=True):
    deployment_id: str
    node: str


class Allocate(msgspec.Struct, frozen=True, kw_only=True):
    deployment_id: str
    node: str
    ensemble: bytes  # the canonical ensemble JSON; the provider re-validates it
    orchestrator: Handle
    ports: tuple[int, ...] = ()


class Allocated(msgspec.Struct, frozen=True):
    allocations: dict[str, Handle]  # allocation name -> its actor


class AllocationReport(msgspec.Struct, frozen=True, kw_only=True):
    deployment_id: str
    allocation: str
    node: str
    provider: str
    status: str  # nunet.jobs.lifecycle.AllocationStatus value
    exit_code: int | None = None
    reason: str = ""
    at: float
    # The allocation actor's handle: after a provider restart a re-adopted allocation reports
    # from a new actor, and this tells the orchestrator where it now lives.
    handle: Handle | None = None


class LogsRequest(msgspec.Struct, frozen=True, kw_only=True):
    offset: int = 0  # bytes of the combined log already read
    limit: int = 256 * 1024
    stream: Literal["both", "stdout", "stderr"] = "both"


class LogsChunk(msgspec.Struct, frozen=True, kw_only=True):
    data: bytes
    next_offset: int
    finished: bool  # the allocation ended and everything was read


class ResultsRequest(msgspec.Struct, frozen=True, kw_only=True):
    path: str = ""  # a file of the outputs, relative; "" = the list of files
    offset: int = 0
    limit: int = 512 * 1024


class ResultsChunk(msgspec.Struct, frozen=True, kw_only=True):
    files: tuple[str, ...] = ()  # when listing
    data: bytes = b""
    next_offset: int = 0
    eof: bool = True


_encoder = msgspec.msgpack.Encoder()
T = TypeVar("T")


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes | memoryview, kind: type[T]) -> T:
    """A protocol message from a peer: DecodeError (naming the type) on anything else."""
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"not a {kind.__name__}: {exc}", path="payload") from None
    except DECODE_ERRORS as exc:
        raise DecodeError(f"not a {kind.__name__}: {exc}", path="payload") from None
