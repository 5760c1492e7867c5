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


class NotFound(NunetError):
    code = "not_found"
    http_status = 404


class AlreadyExists(NunetError):
    code = "already_exists"
    http_status = 409


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


class RemoteError(NunetError):
    """The peer answered a request with an error."""

    code = "remote_error"
    http_status = 502


class PeerIdentityMismatch(PeerUnreachable, SecurityError):
    """The peer at an address proved a different DID than the one we dialed it for."""

    code = "peer_identity_mismatch"
    http_status = 502
