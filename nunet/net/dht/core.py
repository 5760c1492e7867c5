"""The sans-I/O DHT node: routing table, record store, own publications, request handling and
the checks on everything a peer sends, with the counters `nunet peers dht` shows.

The asyncio adapter (`service.py`) owns time and the network; this core is fed decoded messages
and `now` (unix seconds, because record expiry is absolute and signed) and returns replies.
Peer input that is wrong is refused and counted here, never raised to the adapter: a bad record
costs only itself, a bad contact only itself.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

import msgspec

from nunet.crypto.keys import KeyPair
from nunet.errors import InvalidDID, ValidationError
from nunet.net.dht.ids import id_from_bytes, node_id
from nunet.net.dht.lookup import Lookup, Peer
from nunet.net.dht.publish import Publications
from nunet.net.dht.records import Reason, Record, VerifiedCache, check_record, key_id
from nunet.net.dht.routing import RoutingTable
from nunet.net.dht.store import RecordStore, Slot
from nunet.net.dht.wire import (
    FindNode,
    FindValue,
    Nodes,
    PeerInfo,
    Ping,
    Pong,
    Reply,
    Request,
    Store,
    Stored,
    Values,
)

log = logging.getLogger("nunet.net.dht")


class DhtConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    k: int = 20  # bucket size and replication factor
    alpha: int = 3  # parallel queries per lookup
    request_timeout: float = 3.0  # seconds per DHT request
    ping_timeout: float = 2.0  # ping-before-evict and bootstrap probe
    record_ttl: int = 3600  # seconds a published record lives
    republish_interval: float = 1200.0  # publisher re-signs and re-sends its records
    refresh_interval: float = 900.0  # a bucket not looked into for this long gets a lookup
    maintenance_interval: float = 30.0  # expiry, refresh and republish checks
    max_records_per_key: int = 20
    max_records: int = 50_000
    stale_after: int = 3  # failed requests in a row before a contact is dropped
    bootstrap_backoff: float = 1.0  # first retry delay; doubles up to the max
    bootstrap_backoff_max: float = 60.0


class DhtStats(msgspec.Struct, frozen=True):
    lookups: dict[str, int]  # by purpose: node, peer, providers, value, refresh, self
    hops: dict[int, int]  # histogram of lookup hops (see lookup.py for the definition)
    hops_mean: float | None
    hops_max: int
    queries: int  # DHT requests we sent
    query_failures: int  # ... that failed (timeout, unreachable, error, garbage)
    requests: dict[str, int]  # DHT requests we served, by message
    bad_requests: int  # ... that we could not decode or that made no sense
    rejected: dict[str, int]  # peer records refused, by reason
    bad_contacts: int  # contacts in replies that were not valid DIDs
    records_stored: int
    routing_table_size: int


class DhtCore:
    def __init__(self, keypair: KeyPair, config: DhtConfig, now: float) -> None:
        self.did = keypair.did
        self.config = config
        self.table = RoutingTable(keypair.did, now, k=config.k, stale_after=config.stale_after)
        self.store = RecordStore(config.max_records_per_key, config.max_records)
        self.publications = Publications(keypair, config.record_ttl, config.republish_interval)
        self.cache = VerifiedCache()
        self.lookups: Counter[str] = Counter()
        self.hops: Counter[int] = Counter()
        self.queries = 0
        self.query_failures = 0
        self.requests: Counter[str] = Counter()
        self.bad_requests = 0
        self.rejected: Counter[str] = Counter()
        self.bad_contacts = 0

    # --- serving -----------------------------------------------------------------------------

    def handle(self, sender: str, request: Request, now: float) -> Reply:
        """The reply to a decoded request. ValidationError for a request that makes no sense
        (a FIND_VALUE for an unknown kind or, for a peer record, a key that is not a DID)."""
        self.requests[type(request).__name__] += 1
        if isinstance(request, FindNode):
            return Nodes(self._near(id_from_bytes(request.target), sender))
        if isinstance(request, FindValue):
            try:
                target = key_id(request.kind, request.key)
            except ValidationError:
                self.bad_requests += 1
                raise
            return Values(
                tuple(self.local_records(request.kind, request.key, now)),
                self._near(target, sender),
            )
        if isinstance(request, Store):
            kept = [r for r in request.records if self.accept(r, now, sender)]
            return Stored(sum(self.store.put(r) for r in kept))
        assert isinstance(request, Ping)
        return Pong()

    def local_records(self, kind: int, key: str, now: float) -> list[Record]:
        """What we hold for (kind, key): stored records, and our own publication (it wins over an
        older copy of itself that someone stored here)."""
        records = self.store.get(kind, key, now)
        own = self.publications.get(kind, key)
        if own is None or own.expires <= now:
            return records
        return [r for r in records if r.publisher != self.did] + [own]

    def _near(self, target: int, exclude: str) -> tuple[PeerInfo, ...]:
        return tuple(
            PeerInfo(c.did, c.addrs)
            for c in self.table.closest(target, self.config.k, exclude=exclude)
        )

    # --- checking what peers send ------------------------------------------------------------

    def accept(self, record: Record, now: float, source: str) -> bool:
        """Whether a record from the network passes `check_record`; a refusal is counted."""
        rejection = check_record(record, now, self.cache)
        if rejection is None:
            return True
        self.rejected[rejection.reason] += 1
        log.debug(
            "refused a DHT record from %s (%s, key %.64r): %s",
            source, rejection.reason, record.key, rejection.error,
        )
        return False

    def peers(self, infos: Iterable[PeerInfo]) -> list[Peer]:
        out: list[Peer] = []
        for info in infos:
            try:
                out.append((info.did, node_id(info.did), info.addrs))
            except InvalidDID:
                self.bad_contacts += 1
        return out

    # --- lookups -----------------------------------------------------------------------------

    def start_lookup(self, target: int, want: int = 0) -> Lookup:
        seeds = [(c.did, c.id, c.addrs) for c in self.table.closest(target, self.config.k)]
        return Lookup(
            target, seeds, exclude=self.did, k=self.config.k, alpha=self.config.alpha, want=want
        )

    def lookup_reply(
        self, lookup: Lookup, did: str, reply: Reply, slot: Slot | None, now: float
    ) -> bool:
        """Feeds a reply to `lookup`; False when it is not the answer the query asked for."""
        if slot is None:
            if not isinstance(reply, Nodes):
                return False
            lookup.on_reply(did, self.peers(reply.contacts))
            return True
        if not isinstance(reply, Values):
            return False
        records = []
        for record in reply.records:
            if (record.kind, record.key) != slot:
                self.rejected[Reason.MISMATCH] += 1
            elif self.accept(record, now, did):
                records.append(record)
        lookup.on_reply(did, self.peers(reply.contacts), records)
        return True

    def finish_lookup(self, lookup: Lookup, purpose: str, now: float) -> None:
        self.lookups[purpose] += 1
        self.table.touch(lookup.target, now)
        if lookup.closest(1) or lookup.records:
            self.hops[lookup.hops] += 1

    def query_failed(self, did: str) -> None:
        self.query_failures += 1
        self.table.failed(did)

    # --- reporting ---------------------------------------------------------------------------

    def stats(self) -> DhtStats:
        total = sum(self.hops.values())
        return DhtStats(
            lookups=dict(self.lookups),
            hops=dict(sorted(self.hops.items())),
            hops_mean=round(sum(h * n for h, n in self.hops.items()) / total, 3) if total else None,
            hops_max=max(self.hops, default=0),
            queries=self.queries,
            query_failures=self.query_failures,
            requests=dict(self.requests),
            bad_requests=self.bad_requests,
            rejected={str(reason): n for reason, n in self.rejected.items()},
            bad_contacts=self.bad_contacts,
            records_stored=len(self.store),
            routing_table_size=len(self.table),
        )
