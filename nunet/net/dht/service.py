"""`DhtService`: the asyncio adapter that drives `DhtCore` over a `Network` (kinds.DHT requests).

It owns time (`clock`, unix seconds) and I/O: it dials bootstrap peers with exponential backoff,
runs lookups by sending the queries their state machines ask for (at most alpha at a time per
lookup), answers peers' requests, pings the contacts the routing table wants checked before an
eviction, and every `maintenance_interval` expires records, refreshes stale buckets and
republishes this node's own records.

As a daemon component: `await start_component(tg, dht)`; `run` registers the request handler,
publishes this node's peer record locally and reports ready at once (a node must start even when
no bootstrap peer answers); joining goes on in the background and `wait_bootstrapped()` tells
when the first bootstrap peer answered and the self-lookup is done.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

import msgspec

from nunet.crypto.keys import KeyPair
from nunet.errors import (
    DecodeError,
    InvalidDID,
    NunetError,
    PeerUnreachable,
    ValidationError,
)
from nunet.net import kinds
from nunet.net.api import Network, PeerRecord
from nunet.net.dht.core import DhtConfig, DhtCore, DhtStats
from nunet.net.dht.ids import id_to_bytes
from nunet.net.dht.lookup import Lookup
from nunet.net.dht.records import (
    MAX_KEY_LENGTH,
    MAX_VALUE_SIZE,
    Record,
    RecordKind,
    encode_addrs,
    key_id,
    record_addrs,
)
from nunet.net.dht.routing import BucketInfo
from nunet.net.dht.store import Slot
from nunet.net.dht.wire import (
    FindNode,
    FindValue,
    Ping,
    Reply,
    Store,
    Stored,
    decode_reply,
    decode_request,
    encode,
)

log = logging.getLogger("nunet.net.dht")

_WILDCARDS = ("/ip4/0.0.0.0/", "/ip6/::/")


class DhtSnapshot(msgspec.Struct, frozen=True):
    """What `nunet peers dht` shows."""

    did: str
    node_id: str  # hex
    size: int
    buckets: tuple[BucketInfo, ...]
    records_stored: int
    publications: tuple[str, ...]  # "peer:<did>", "provider:<key>", "value:<key>"
    bootstrapped: bool


class LookupResult(msgspec.Struct, frozen=True):
    records: tuple[Record, ...]  # checked, newest per publisher
    closest: tuple[PeerRecord, ...]  # nodes nearest the key that replied, nearest first
    hops: int
    queries: int
    failures: int


class DhtService:
    def __init__(
        self,
        network: Network,
        keypair: KeyPair,
        bootstrap: Sequence[str] = (),
        *,
        config: DhtConfig | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        advertise: Callable[[], tuple[str, ...]] | None = None,
    ) -> None:
        self.config = config or DhtConfig()
        self._advertise = advertise
        self._net = network
        self._bootstrap = tuple(bootstrap)
        self._clock = clock
        self._rng = rng or random.Random()
        self._core = DhtCore(keypair, self.config, clock())
        self._tg: asyncio.TaskGroup | None = None
        self._bootstrapped = asyncio.Event()
        self._bootstrapping = False
        self._join_lock = asyncio.Lock()
        self._need_join = False

    @property
    def did(self) -> str:
        return self._core.did

    @property
    def core(self) -> DhtCore:
        return self._core

    # --- component lifecycle -----------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        self._net.on_request(kinds.DHT, self._on_request)
        self._publish_local(RecordKind.PEER, self.did, encode_addrs(self._advertised()))
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self._bootstrap:
                    self._start_bootstrap()
                else:
                    self._bootstrapped.set()
                tg.create_task(self._maintain(), name="dht-maintenance")
                started()
        finally:
            self._tg = None

    async def wait_bootstrapped(self) -> None:
        await self._bootstrapped.wait()

    @property
    def bootstrapped(self) -> bool:
        return self._bootstrapped.is_set()

    def _start_bootstrap(self) -> None:
        assert self._tg is not None
        self._bootstrapping = True
        self._need_join = True
        self._tg.create_task(self._bootstrap_all(), name="dht-bootstrap")

    async def _bootstrap_all(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for addr in self._bootstrap:
                    tg.create_task(self._bootstrap_one(addr))
        finally:
            self._bootstrapping = False
        if self._need_join:  # every bootstrap address was this node: nobody to join through
            self._need_join = False
            self._bootstrapped.set()

    async def _bootstrap_one(self, addr: str) -> None:
        delay = self.config.bootstrap_backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                did = await self._net.connect(addr)
            except NunetError as exc:
                reason = str(exc) or type(exc).__name__
            else:
                if did == self.did:
                    log.debug("bootstrap address %s is this node; skipped", addr)
                    return
                if await self._request(did, (addr,), self._ping_bytes(), self.config.ping_timeout):
                    break
                reason = "connected, but no answer to a DHT ping"
            log.warning(
                "bootstrap peer %s unreachable (attempt %d: %s); retrying in %.3g s",
                addr, attempt, reason, delay,
            )
            await asyncio.sleep(delay * self._rng.uniform(0.8, 1.2))
            delay = min(delay * 2, self.config.bootstrap_backoff_max)
        if attempt > 1:
            log.info("bootstrap peer %s reached after %d attempts", addr, attempt)
        async with self._join_lock:
            if self._need_join:
                await self._join()

    async def _join(self) -> None:
        """Look ourselves up (fills the buckets near us and puts us in our neighbours' tables),
        refresh every bucket farther out (only lookups for far ids fill far buckets: without
        them a young network's lookups get stuck), then publish our peer record at the nodes
        closest to our id."""
        near_us = await self._lookup_node(self._core.table.local_id, "self")
        targets = self._core.table.refresh_targets(self._clock(), 0.0, self._rng)
        await asyncio.gather(*(self._lookup_node(t, "refresh") for t in targets))
        own = self._core.publications.get(RecordKind.PEER, self.did)
        if own is not None:  # our peer record lives at our own id: the self-lookup found where
            await self._store_at(near_us, own)
        self._need_join = False
        self._bootstrapped.set()
        log.info("DHT joined: %d contacts", len(self._core.table))

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.config.maintenance_interval)
            await self.maintain_once()

    async def maintain_once(self) -> None:
        """One maintenance pass (the loop runs it every `maintenance_interval`; tests call it)."""
        now = self._clock()
        self._core.store.expire(now)
        if not self._core.table and self._bootstrap and not self._bootstrapping and self._tg:
            log.warning("DHT routing table is empty; bootstrapping again")
            self._start_bootstrap()
        for target in self._core.table.refresh_targets(
            now, self.config.refresh_interval, self._rng
        ):
            await self._lookup_node(target, "refresh")
        # Our peer and provider records carry our addresses: when those change, so do they.
        addrs = encode_addrs(self._advertised())
        for record in self._core.publications.records():
            if record.kind != RecordKind.VALUE and record.value != addrs:
                kind = RecordKind(record.kind)
                await self._store_at_closest(self._publish_local(kind, record.key, addrs))
        for record in self._core.publications.due(self._clock()):
            await self._store_at_closest(record)

    # --- public API --------------------------------------------------------------------------

    async def connect(self, addr: str) -> str:
        """Dials `addr` (`nunet peers connect`), puts the peer in the routing table and, if this
        node has not joined yet, joins through it. Returns the peer's DID; PeerUnreachable when
        it cannot be reached or does not answer DHT requests."""
        did = await self._net.connect(addr)
        if did == self.did:
            return did
        if await self._request(did, (addr,), self._ping_bytes(), self.config.ping_timeout) is None:
            raise PeerUnreachable(f"{addr} ({did}) does not answer DHT requests")
        async with self._join_lock:
            if self._need_join or not self.bootstrapped:
                await self._join()
        return did

    async def find_peer(self, did: str) -> PeerRecord | None:
        """The addresses `did` signed for itself, from our store or a lookup (InvalidDID for a
        bad DID). Found addresses go into the network's address book."""
        if did == self.did:
            return PeerRecord(did, self._advertised())
        key_id(RecordKind.PEER, did)  # validates the DID before any traffic
        records = self._core.store.get(RecordKind.PEER, did, self._clock())
        if not records:
            records = list((await self.lookup_value(RecordKind.PEER, did, want=1)).records)
        if not records:
            return None
        addrs = record_addrs(max(records, key=lambda r: r.seq))
        self._net.add_addresses(did, addrs)
        return PeerRecord(did, addrs)

    async def provide(self, key: str) -> int:
        """Announces this node as a provider of `key` (e.g. "executor/docker"), republished until
        `unprovide`; returns how many nodes stored the record now."""
        record = self._publish_local(
            RecordKind.PROVIDER, key, encode_addrs(self._advertised())
        )
        return await self._store_at_closest(record)

    def unprovide(self, key: str) -> bool:
        return self._core.publications.withdraw(RecordKind.PROVIDER, key)

    async def find_providers(self, key: str, limit: int = 20) -> list[PeerRecord]:
        """Providers of `key` (this node included when it provides it), at most `limit`."""
        now = self._clock()
        found = {r.publisher: r for r in self._core.local_records(RecordKind.PROVIDER, key, now)}
        if len(found) < limit:
            result = await self.lookup_value(RecordKind.PROVIDER, key, want=limit)
            for record in result.records:
                old = found.get(record.publisher)
                if old is None or record.seq > old.seq:
                    found[record.publisher] = record
        out = []
        for record in sorted(found.values(), key=lambda r: -r.seq)[:limit]:
            addrs = record_addrs(record)
            if record.publisher != self.did and addrs:
                self._net.add_addresses(record.publisher, addrs)
            out.append(PeerRecord(record.publisher, addrs))
        return out

    async def put(self, key: str, value: bytes) -> int:
        """Publishes `value` under `key`, signed by this node (one value per publisher and key,
        republished until `unput`); returns how many nodes stored it now."""
        return await self._store_at_closest(self._publish_local(RecordKind.VALUE, key, value))

    def unput(self, key: str) -> bool:
        return self._core.publications.withdraw(RecordKind.VALUE, key)

    async def get(self, key: str, want: int = 20) -> list[Record]:
        """The values published under `key`, newest per publisher (signatures checked)."""
        now = self._clock()
        found = {r.publisher: r for r in self._core.local_records(RecordKind.VALUE, key, now)}
        if len(found) < want:
            for record in (await self.lookup_value(RecordKind.VALUE, key, want=want)).records:
                old = found.get(record.publisher)
                if old is None or record.seq > old.seq:
                    found[record.publisher] = record
        return list(found.values())

    async def lookup_value(self, kind: RecordKind, key: str, want: int = 1) -> LookupResult:
        """An iterative FIND_VALUE over the network (no local shortcut)."""
        _check_key(key)
        lookup = self._core.start_lookup(key_id(kind, key), want=want)
        payload = encode(FindValue(int(kind), key, self._advertised()))
        purpose = {RecordKind.PEER: "peer", RecordKind.PROVIDER: "providers"}.get(kind, "value")
        await self._drive(lookup, payload, (int(kind), key), purpose)
        return LookupResult(
            records=tuple(lookup.records.values()),
            closest=tuple(PeerRecord(c.did, c.addrs) for c in lookup.closest()),
            hops=lookup.hops,
            queries=lookup.queries,
            failures=lookup.failures,
        )

    def routing_table_snapshot(self) -> DhtSnapshot:
        now = self._clock()
        names = {int(k): k.name.lower() for k in RecordKind}
        return DhtSnapshot(
            did=self.did,
            node_id=f"{self._core.table.local_id:064x}",
            size=len(self._core.table),
            buckets=tuple(self._core.table.snapshot(now)),
            records_stored=len(self._core.store),
            publications=tuple(
                f"{names[r.kind]}:{r.key}" for r in self._core.publications.records()
            ),
            bootstrapped=self.bootstrapped,
        )

    def stats(self) -> DhtStats:
        return self._core.stats()

    # --- serving -----------------------------------------------------------------------------

    async def _on_request(self, sender: str, payload: memoryview) -> bytes:
        try:
            request = decode_request(payload)
        except DecodeError as exc:
            self._core.bad_requests += 1
            log.debug("undecodable DHT request from %s: %s", sender, exc)
            raise
        now = self._clock()
        self._observe(sender, request.addrs or self._net.known_addresses(sender), now)
        return encode(self._core.handle(sender, request, now))

    # --- internals ---------------------------------------------------------------------------

    def _publish_local(self, kind: RecordKind, key: str, value: bytes) -> Record:
        _check_key(key)
        if len(value) > MAX_VALUE_SIZE:
            raise ValidationError(f"a DHT value holds at most {MAX_VALUE_SIZE} bytes", path="value")
        return self._core.publications.publish(kind, key, value, self._clock())

    def _advertised(self) -> tuple[str, ...]:
        """The addresses we publish and put in requests: `advertise()` (default: the network's
        listen addresses) without wildcards, which no one else could dial."""
        addrs = self._advertise() if self._advertise else self._net.listen_addrs()
        return tuple(a for a in addrs if not a.startswith(_WILDCARDS))

    def _ping_bytes(self) -> bytes:
        return encode(Ping(self._advertised()))

    def _observe(self, did: str, addrs: tuple[str, ...], now: float) -> None:
        """`did` is alive: into the routing table, pinging an old contact first if its bucket is
        full (ping-before-evict)."""
        if not addrs:
            return
        try:
            to_ping = self._core.table.seen(did, addrs, now)
        except InvalidDID:
            return
        if to_ping is None:
            return
        if self._tg is None:  # not running: nobody to own the ping, so the old contact stays
            self._core.table.ping_result(to_ping, True, now)
        else:
            self._tg.create_task(self._check_alive(to_ping))

    async def _check_alive(self, did: str) -> None:
        contact = self._core.table.get(did)
        addrs = contact.addrs if contact is not None else ()
        reply = await self._request(did, addrs, self._ping_bytes(), self.config.ping_timeout)
        self._core.table.ping_result(did, reply is not None, self._clock())

    async def _request(
        self, did: str, addrs: tuple[str, ...], payload: bytes, timeout: float
    ) -> Reply | None:
        """One DHT request; None (counted, and a strike against the contact) when it failed."""
        if addrs:
            self._net.add_addresses(did, addrs)
        self._core.queries += 1
        try:
            reply = decode_reply(await self._net.request(did, kinds.DHT, payload, timeout))
        except NunetError as exc:
            self._core.query_failed(did)
            log.debug("DHT request to %s failed: %s", did, exc)
            return None
        self._observe(did, addrs or self._net.known_addresses(did), self._clock())
        return reply

    async def _drive(self, lookup: Lookup, payload: bytes, slot: Slot | None, purpose: str) -> None:
        """Runs `lookup` to completion: queries as it asks, answers as they come."""
        pending: dict[asyncio.Task[Reply | None], str] = {}
        timeout = self.config.request_timeout
        try:
            while True:
                for candidate in lookup.next_queries():
                    task = asyncio.create_task(
                        self._request(candidate.did, candidate.addrs, payload, timeout)
                    )
                    pending[task] = candidate.did
                if lookup.done or not pending:
                    break
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                now = self._clock()
                for task in done:
                    did = pending.pop(task)
                    reply = task.result()
                    if reply is None:
                        lookup.on_failure(did)
                    elif not self._core.lookup_reply(lookup, did, reply, slot, now):
                        self._core.query_failed(did)  # an answer, but not to what we asked
                        lookup.on_failure(did)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self._core.finish_lookup(lookup, purpose, self._clock())

    async def _lookup_node(self, target: int, purpose: str) -> Lookup:
        lookup = self._core.start_lookup(target)
        payload = encode(FindNode(id_to_bytes(target), self._advertised()))
        await self._drive(lookup, payload, None, purpose)
        return lookup

    async def _store_at_closest(self, record: Record) -> int:
        """Sends `record` to the k nodes nearest its key; how many kept it."""
        return await self._store_at(
            await self._lookup_node(key_id(record.kind, record.key), "store"), record
        )

    async def _store_at(self, lookup: Lookup, record: Record) -> int:
        payload = encode(Store((record,), self._advertised()))
        timeout = self.config.request_timeout
        replies = await asyncio.gather(
            *(self._request(c.did, c.addrs, payload, timeout) for c in lookup.closest())
        )
        return sum(r.accepted for r in replies if isinstance(r, Stored))


def _check_key(key: str) -> None:
    """Our own mistakes, refused here rather than by every peer."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValidationError(f"a DHT key has 1 to {MAX_KEY_LENGTH} characters", path="key")
