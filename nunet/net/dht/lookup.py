"""An iterative Kademlia lookup as a state machine: it says whom to ask, it is told the answers.

    lookup = Lookup(target, seeds, exclude=my_did, k=20, alpha=3)
    while not lookup.done:
        for candidate in lookup.next_queries():   # at most alpha outstanding
            ... send FIND_NODE / FIND_VALUE to candidate.did ...
        ... as answers come: lookup.on_reply(did, contacts, records) or lookup.on_failure(did)

Invariants:
- Candidates are kept sorted by XOR distance to the target; each is NEW, WAITING (asked),
  REPLIED or FAILED, and is asked at most once.
- At most `alpha` queries are outstanding; a query goes to the nearest NEW candidate among the k
  nearest candidates that have not failed.
- A node lookup (`want == 0`) is done when the k nearest non-failed candidates have all replied
  (or none is left); a value lookup also ends as soon as records from `want` distinct publishers
  are in. Answers to queries that no longer matter are simply not waited for.
- `hop` counts the queries on the path that found a candidate: our own contacts are hop 1, the
  contacts they return hop 2, and so on. `hops` of a lookup is the hop of the node that gave the
  first value, or for a node lookup the hop of the nearest node that replied.
- Records given to `on_reply` must already be checked; the newest seq per publisher is kept.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable

from nunet.net.dht.records import Record

Peer = tuple[str, int, tuple[str, ...]]  # (did, node id, addresses)


class State(enum.Enum):
    NEW = 0
    WAITING = 1
    REPLIED = 2
    FAILED = 3


class Candidate:
    __slots__ = ("addrs", "did", "distance", "hop", "state")

    def __init__(self, did: str, distance: int, addrs: tuple[str, ...], hop: int) -> None:
        self.did = did
        self.distance = distance
        self.addrs = addrs
        self.hop = hop
        self.state = State.NEW

    def __repr__(self) -> str:
        return f"Candidate({self.did!r}, hop={self.hop}, {self.state.name})"


def _distance(candidate: Candidate) -> int:
    return candidate.distance


class Lookup:
    def __init__(
        self,
        target: int,
        seeds: Iterable[Peer],
        *,
        exclude: str,
        k: int = 20,
        alpha: int = 3,
        want: int = 0,
    ) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.want = want
        self.in_flight = 0
        self.queries = 0
        self.failures = 0
        self.records: dict[str, Record] = {}  # publisher -> newest record
        self._exclude = exclude
        self._value_hop: int | None = None
        self._by_did: dict[str, Candidate] = {}
        self._order: list[Candidate] = []
        for did, ident, addrs in seeds:
            self._add(did, ident, addrs, 1)

    def next_queries(self) -> list[Candidate]:
        """Candidates to ask now (marked WAITING); empty when nothing more may be sent yet."""
        out: list[Candidate] = []
        if self.satisfied:
            return out
        rank = 0
        for candidate in self._order:
            if self.in_flight >= self.alpha:
                break
            if candidate.state is State.FAILED:
                continue
            rank += 1
            if rank > self.k:
                break
            if candidate.state is State.NEW:
                candidate.state = State.WAITING
                self.in_flight += 1
                self.queries += 1
                out.append(candidate)
        return out

    def on_reply(self, did: str, contacts: Iterable[Peer], records: Iterable[Record] = ()) -> None:
        candidate = self._by_did.get(did)
        if candidate is None or candidate.state is not State.WAITING:
            return
        candidate.state = State.REPLIED
        self.in_flight -= 1
        hop = candidate.hop + 1
        for n, (peer_did, ident, addrs) in enumerate(contacts):
            if n >= self.k:
                break
            self._add(peer_did, ident, addrs, hop)
        for record in records:
            old = self.records.get(record.publisher)
            if old is None or record.seq > old.seq:
                self.records[record.publisher] = record
            if self._value_hop is None:
                self._value_hop = candidate.hop

    def on_failure(self, did: str) -> None:
        candidate = self._by_did.get(did)
        if candidate is None or candidate.state is not State.WAITING:
            return
        candidate.state = State.FAILED
        self.in_flight -= 1
        self.failures += 1

    @property
    def satisfied(self) -> bool:
        return self.want > 0 and len(self.records) >= self.want

    @property
    def done(self) -> bool:
        if self.satisfied:
            return True
        rank = 0
        for candidate in self._order:
            if candidate.state is State.FAILED:
                continue
            if candidate.state is not State.REPLIED:
                return False
            rank += 1
            if rank >= self.k:
                break
        return True

    def closest(self, n: int | None = None) -> list[Candidate]:
        """The nearest candidates that replied, nearest first (k unless n is given)."""
        limit = self.k if n is None else n
        out: list[Candidate] = []
        for candidate in self._order:
            if candidate.state is State.REPLIED:
                out.append(candidate)
                if len(out) >= limit:
                    break
        return out

    @property
    def hops(self) -> int:
        if self._value_hop is not None:
            return self._value_hop
        nearest = self.closest(1)
        return nearest[0].hop if nearest else 0

    def _add(self, did: str, ident: int, addrs: tuple[str, ...], hop: int) -> None:
        if did == self._exclude:
            return
        known = self._by_did.get(did)
        if known is not None:
            if not known.addrs:
                known.addrs = addrs
            return
        candidate = Candidate(did, ident ^ self.target, addrs, hop)
        self._by_did[did] = candidate
        bisect.insort(self._order, candidate, key=_distance)
