"""One error hierarchy for all of nunet.

Rules (see ../shared/design/style.md, lesson 3):
- Every error nunet raises on purpose derives from `NunetError`; it carries a stable `code`
  (used in API replies and logs) and the HTTP status the local API answers with.
- Errors about a bad field carry its dotted `path` (`rest.port`,
  `allocations.a1.resources.ram.size`).
- `LocalProtocolError` means *we* misused an API; `RemoteProtocolError` means the peer misbehaved.
  A peer's fault is an event to count and log, never a crash.
- Third-party exceptions are translated at the boundary, never leaked to users.
"""

from __future__ import annotations

from collections.abc import Sequence


class NunetError(Exception):
    """Root of every error nunet raises on purpose."""

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str = "", *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        if self.path:
            return f"{self.path}: {self.message}"
        return self.message

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.path:
            out["field"] = self.path
        return out


# --- user input -------------------------------------------------------------------------------


class ValidationError(NunetError):
    """Input that does not satisfy a schema or a rule; `path` names the field."""

    code = "validation_error"
    http_status = 400


class ConfigError(ValidationError):
    code = "config_error"


class InvalidDID(ValidationError):
    code = "invalid_did"


class EnsembleInvalid(ValidationError):
    """An ensemble file with problems; `problems` holds every one (each a ValidationError with
    its own `path`), so a user fixes the whole file in one pass."""

    code = "ensemble_invalid"

    def __init__(self, problems: Sequence[ValidationError]) -> None:
        self.problems = tuple(problems) or (ValidationError("invalid ensemble"),)
        super().__init__("\n".join(str(p) for p in self.problems))

    def to_dict(self) -> dict[str, object]:
        out = super().to_dict()
        out["errors"] = [p.to_dict() for p in self.problems]
        return out


class NotFound(NunetError):
    code = "not_found"
    http_status = 404


class AlreadyExists(NunetError):
    code = "already_exists"
    http_status = 409


class IllegalTransition(NunetError):
    """A lifecycle event that is not allowed in the current state (a bug or a stale message)."""

    code = "illegal_transition"
    http_status = 409

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: event {event!r} is not allowed in state {state!r}")
        self.state = state
        self.event = event


# --- protocol ---------------------------------------------------------------------------------


class ProtocolError(NunetError):
    code = "protocol_error"
    http_status = 400


class LocalProtocolError(ProtocolError):
    """This side misused an API (a bug in the caller, not the peer's fault)."""

    code = "local_protocol_error"


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol."""

    code = "remote_protocol_error"


class DecodeError(RemoteProtocolError):
    """Bytes that cannot be decoded: garbage, truncated, oversize or of an unknown type."""

    code = "decode_error"


class FrameTooLarge(DecodeError):
    code = "frame_too_large"


class UnknownChain(RemoteProtocolError):
    """A peer referred to a capability chain this node does not hold (evicted, or this process
    restarted): the envelope is refused and the peer asked to send the chain again."""

    code = "unknown_chain"


# --- security ---------------------------------------------------------------------------------


class SecurityError(NunetError):
    code = "security_error"
    http_status = 403


class SignatureError(SecurityError):
    code = "bad_signature"


class CapabilityError(SecurityError):
    code = "capability_denied"


class ExpiredError(SecurityError):
    code = "expired"


class ReplayError(SecurityError):
    code = "replay"


class RevokedError(SecurityError):
    code = "revoked"


class ForbiddenCaller(SecurityError):
    """The local API refuses callers that are not on this machine."""

    code = "forbidden"


class NotYetValid(SecurityError):
    """A token used before its not-before time (beyond the allowed clock skew)."""

    code = "not_yet_valid"


class MalformedToken(CapabilityError):
    """Bytes where a capability token should be that are not one: garbage, a bad DID or path,
    a non-canonical encoding."""

    code = "malformed_token"


class TokenTooLarge(CapabilityError):
    """The tokens presented together exceed the size limit; refused before decoding."""

    code = "token_too_large"


class ChainTooDeep(CapabilityError):
    """A delegation chain longer than the global limit or a link's own depth limit."""

    code = "chain_too_deep"


class BrokenChain(CapabilityError):
    """Links that do not join: issuer is not the parent's audience, subject changes, the
    parent is no delegation, or a proof is missing or does not match its hash."""

    code = "broken_chain"


class CapabilityEscalation(CapabilityError):
    """A delegation claims more than its parent grants: capabilities, topics or time."""

    code = "capability_escalation"


class UntrustedRoot(CapabilityError):
    """A chain whose root issuer is not a trust anchor of the verifier."""

    code = "untrusted_root"


class WrongAudience(CapabilityError):
    """A token presented to, or by, someone it was not addressed to."""

    code = "wrong_audience"


class WrongIssuer(CapabilityError):
    """A token presented by someone other than its issuer where the issuer must present it."""

    code = "wrong_issuer"


# --- keys -------------------------------------------------------------------------------------


class KeyStoreError(NunetError):
    code = "keystore_error"
    http_status = 400


class WrongPassphrase(KeyStoreError):
    code = "wrong_passphrase"
    http_status = 403


class KeyNotFound(KeyStoreError, NotFound):
    code = "key_not_found"
    http_status = 404


class KeyExists(KeyStoreError, AlreadyExists):
    code = "key_exists"
    http_status = 409


# --- node state -------------------------------------------------------------------------------


class OnboardingError(NunetError):
    code = "onboarding_error"
    http_status = 409


class NotOnboarded(OnboardingError):
    code = "not_onboarded"


class AlreadyOnboarded(OnboardingError):
    code = "already_onboarded"


class CapacityError(ValidationError):
    """A requested capacity is outside what the machine or the rules allow."""

    code = "capacity_error"


class StoreError(NunetError):
    code = "store_error"


class StorageFull(StoreError):
    code = "storage_full"
    http_status = 507


# --- resources (trio's distinction) -----------------------------------------------------------


class ClosedResourceError(NunetError):
    """We closed it ourselves and then tried to use it."""

    code = "closed"


class BrokenResourceError(NunetError):
    """Something outside us broke it (peer gone, disk failed)."""

    code = "broken"


class NodeUnreachable(NunetError):
    """The CLI cannot reach the node's local API."""

    code = "node_unreachable"
    http_status = 503


# --- network ----------------------------------------------------------------------------------


class PeerUnreachable(BrokenResourceError):
    """No connection to the peer could be made or kept."""

    code = "peer_unreachable"
    http_status = 502


class RequestTimeout(NunetError):
    """A request to a peer got no reply in time."""

    code = "timeout"
    http_status = 504


class InvokeTimeout(RequestTimeout):
    """An invocation through the local API got no reply before its message expired (DMS: 408)."""

    code = "invoke_timeout"
    http_status = 408


class RemoteError(NunetError):
    """The peer answered a request with an error."""

    code = "remote_error"
    http_status = 502


class PeerIdentityMismatch(PeerUnreachable, SecurityError):
    """The peer at an address proved a different DID than the one we dialed it for."""

    code = "peer_identity_mismatch"
    http_status = 502


# --- executors --------------------------------------------------------------------------------


class ExecutorError(NunetError):
    """The container engine refused or failed an operation."""

    code = "executor_error"


class ExecutorUnavailable(ExecutorError):
    """No engine answers (not installed, not started, socket not reachable)."""

    code = "executor_unavailable"
    http_status = 503


class ImageNotFound(ExecutorError, NotFound):
    """The image is not on this machine and could not be pulled."""

    code = "image_not_found"
    http_status = 404


class ExecutionNotFound(ExecutorError, NotFound):
    code = "execution_not_found"
    http_status = 404


class ExecutionExists(ExecutorError, AlreadyExists):
    code = "execution_exists"
    http_status = 409


class ExecutionFailed(ExecutorError):
    """An execution could not be created or started (bad command, bad mount, engine error)."""

    code = "execution_failed"


class GPUUnavailable(ExecutorError):
    """GPUs were requested and this host cannot give them (no NVIDIA container runtime)."""

    code = "gpu_unavailable"
    http_status = 409


# --- storage (volumes) ------------------------------------------------------------------------


class StorageError(NunetError):
    """A volume backend refused or failed an operation."""

    code = "storage_error"
    http_status = 502


class UnsafePath(ValidationError):
    """A volume name, key or path that would leave its volume: `..`, absolute, or a symlink."""

    code = "unsafe_path"


class VolumeNotFound(StorageError, NotFound):
    """The volume (a local directory, an S3 bucket) does not exist."""

    code = "volume_not_found"
    http_status = 404


class ObjectNotFound(StorageError, NotFound):
    """No file or object, and nothing below it, under a key in an existing volume."""

    code = "object_not_found"
    http_status = 404


class StorageDenied(StorageError, SecurityError):
    """The backend refused our credentials or their permissions."""

    code = "storage_denied"
    http_status = 403


class StorageUnreachable(StorageError, BrokenResourceError):
    """The storage endpoint did not answer (refused, timed out, DNS)."""

    code = "storage_unreachable"
    http_status = 503


class ReadOnlyVolume(StorageError):
    """A write to a volume its spec marks read-only."""

    code = "read_only_volume"
    http_status = 409


# --- actors -----------------------------------------------------------------------------------


class EnvelopeExpired(ExpiredError):
    """An actor envelope that arrived after its own expiry."""

    code = "envelope_expired"


class BadSender(SecurityError):
    """An envelope whose sender is not proven: unsigned, and not the authenticated peer of the
    session it came on (or not from a session at all)."""

    code = "bad_sender"


class RateLimited(NunetError):
    """Too many messages in flight for a behaviour, a peer or a topic; try again later."""

    code = "rate_limited"
    http_status = 429


class ActorStopped(ClosedResourceError):
    """The actor stopped: its pending calls fail with this."""

    code = "actor_stopped"


class RemoteActorError(RemoteError):
    """An actor answered an invocation with an error; `remote_code` is the code it gave."""

    code = "remote_actor_error"

    def __init__(self, message: str = "", *, remote_code: str, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.remote_code = remote_code

    def to_dict(self) -> dict[str, object]:
        out = super().to_dict()
        out["remote_code"] = self.remote_code
        return out


class SupervisionError(NunetError):
    """A supervised child failed more often than its supervisor may restart it, or could not
    be restarted: the failure goes up to the supervisor's own parent."""

    code = "supervision_failed"
