"""The provider's ledger of commits: resources and public ports promised to an orchestrator
between its two-phase commit and its allocate, each until an expiry (sans-I/O: `now` is passed
in, and whether a port is in use on this host is a predicate the caller supplies).

- `reserve(commit, free, now)` holds `commit.resources` when `free` (the node's free resources)
  minus every other live reservation holds them, and the commit's public ports when none is in
  use or reserved (a 0 picks a free port from `port_range`). A second commit for the same
  deployment node replaces the first (an orchestrator's retry). Expiries are capped at
  `max_ttl_s` from now, so an orchestrator cannot hold a provider's resources indefinitely.
- `take` hands a live reservation over to the allocations (an expired one is refused),
  `release` drops one (revert), `sweep(now)` drops and returns the expired ones. The provider
  calls `sweep` periodically: DMS's sweeper runs only once, so a commit that expires after it
  stays reserved for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgspec

from nunet.errors import ExpiredError, NotFound, ValidationError
from nunet.jobs.protocol import Commit, CommitReply
from nunet.node.resources import Resources

MAX_RESERVATIONS = 4096  # commits held at once; more are refused (an orchestrator flooding us)
MAX_PORT_PROBES = 512  # ports tried when picking one for public port 0
DEFAULT_PORT_RANGE = (32768, 60999)

Key = tuple[str, str]  # (deployment id, ensemble node)


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    deployment_id: str
    node: str
    orchestrator: str  # DID of who committed: only it may revert or allocate
    resources: Resources
    ports: tuple[int, ...] = ()  # in the commit's order, picked ones filled in
    expires_at: float


def _never_busy(_port: int) -> bool:
    return False


class Reservations:
    def __init__(
        self,
        *,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        max_ttl_s: float = 60.0,
    ) -> None:
        low, high = port_range
        if not 1 <= low <= high <= 65535:
            raise ValidationError(f"must be 1 <= low <= high <= 65535, got {port_range}",
                                  path="port_range")
        self.port_range = port_range
        self.max_ttl_s = max_ttl_s
        self._held: dict[Key, Reservation] = {}
        self._cursor = low  # where the next port pick starts: spreads picks over the range

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[Reservation]:
        return iter(list(self._held.values()))

    # --- commit ----------------------------------------------------------------------------

    def reserve(
        self,
        commit: Commit,
        free: Resources,
        now: float,
        *,
        orchestrator: str = "",
        port_busy: Callable[[int], bool] = _never_busy,
    ) -> CommitReply:
        """Hold what `commit` asks for, or say why not (nothing changes then)."""
        key = (commit.deployment_id, commit.node)
        if commit.expires_at <= now:
            return CommitReply(False, "the commit had expired when it arrived")
        previous = self._held.get(key)
        if previous is not None and previous.expires_at > now \
                and previous.orchestrator != orchestrator:
            return CommitReply(False, "this deployment node is reserved by another orchestrator")
        others = [r for k, r in self._held.items() if k != key and r.expires_at > now]
        if previous is None and len(self._held) >= MAX_RESERVATIONS:
            return CommitReply(False, f"too many reservations in flight ({MAX_RESERVATIONS})")
        held = sum((r.resources for r in others), Resources())
        short = free.shortfalls(held + commit.resources)
        if short:
            return CommitReply(False, "not enough free resources: "
                                      + "; ".join(message for _, message in short))
        taken = {p for r in others for p in r.ports}
        ports, why = self._ports(commit.ports, taken, port_busy)
        if why:
            return CommitReply(False, why)
        self._held[key] = Reservation(
            deployment_id=commit.deployment_id,
            node=commit.node,
            orchestrator=orchestrator,
            resources=commit.resources,
            ports=ports,
            expires_at=min(commit.expires_at, now + self.max_ttl_s),
        )
        return CommitReply(True, ports=ports)

    def _ports(
        self, wanted: tuple[int, ...], taken: set[int], busy: Callable[[int], bool]
    ) -> tuple[tuple[int, ...], str]:
        low, high = self.port_range
        fixed = [p for p in wanted if p]
        for p in fixed:
            if not low <= p <= high:
                return (), f"public port {p} is outside this provider's range {low}-{high}"
            if fixed.count(p) > 1:
                return (), f"public port {p} is asked for twice"
            if p in taken or busy(p):
                return (), f"public port {p} is not available"
        chosen = set(fixed)
        out: list[int] = []
        span = high - low + 1
        for p in wanted:
            if p == 0:
                for _ in range(min(span, MAX_PORT_PROBES)):
                    candidate = self._cursor
                    self._cursor = low if candidate >= high else candidate + 1
                    if candidate not in taken and candidate not in chosen and not busy(candidate):
                        p = candidate
                        break
                else:
                    return (), f"no free public port found in {low}-{high}"
                chosen.add(p)
            out.append(p)
        return tuple(out), ""

    # --- allocate / revert / expiry --------------------------------------------------------

    def get(self, deployment_id: str, node: str, now: float) -> Reservation:
        """The live reservation: NotFound when there is none, ExpiredError when it lapsed."""
        reservation = self._held.get((deployment_id, node))
        if reservation is None:
            raise NotFound(f"no reservation for node {node!r} of deployment {deployment_id}")
        if reservation.expires_at <= now:
            raise ExpiredError(
                f"the reservation for node {node!r} of deployment {deployment_id} expired"
            )
        return reservation

    def take(self, deployment_id: str, node: str, now: float) -> Reservation:
        """Hand the live reservation over (it leaves the ledger); errors as `get`, and an expired
        reservation is dropped."""
        try:
            reservation = self.get(deployment_id, node, now)
        except ExpiredError:
            del self._held[(deployment_id, node)]
            raise
        del self._held[(deployment_id, node)]
        return reservation

    def release(self, deployment_id: str, node: str) -> Reservation | None:
        return self._held.pop((deployment_id, node), None)

    def sweep(self, now: float) -> list[Reservation]:
        """Drop and return every reservation that expired by `now`."""
        expired = [r for r in self._held.values() if r.expires_at <= now]
        for r in expired:
            del self._held[(r.deployment_id, r.node)]
        return expired

    def reserved(self, now: float) -> Resources:
        """What the live reservations hold together."""
        live = (r.resources for r in self._held.values() if r.expires_at > now)
        return sum(live, Resources())

    def reserved_ports(self, now: float) -> frozenset[int]:
        return frozenset(p for r in self._held.values() if r.expires_at > now for p in r.ports)
