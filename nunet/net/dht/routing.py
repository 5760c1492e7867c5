"""The Kademlia routing table: k-buckets by XOR distance, least recently seen first.

Invariants:
- Bucket i holds contacts whose id differs from ours first at bit i (distance in [2^i, 2^(i+1))),
  at most k of them, ordered least recently seen first. Buckets are created on first use (a node
  of a 1000-node network uses about 10 of the 256).
- A full bucket never drops a live contact for a newcomer (old contacts are the ones that stay
  up): the newcomer waits in the bucket's replacement cache and the table asks its caller to ping
  the least recently seen contact (`seen` returns its DID). The caller reports the outcome with
  `ping_result`: alive -> it moves to the tail and the newcomer stays a replacement; dead -> it
  is evicted and the freshest replacement takes its place. One ping per bucket at a time.
- A contact that fails `stale_after` requests in a row is dropped (and replaced if a replacement
  is waiting); any answer resets its count.
- No clock and no I/O: `now` comes in, actions go out as return values.
"""

from __future__ import annotations

import random
from collections import OrderedDict

import msgspec

from nunet.net.dht.ids import ID_BITS, bucket_index, node_id


class Contact:
    __slots__ = ("addrs", "did", "failures", "id", "last_seen")

    def __init__(self, did: str, ident: int, addrs: tuple[str, ...], last_seen: float) -> None:
        self.did = did
        self.id = ident
        self.addrs = addrs
        self.last_seen = last_seen
        self.failures = 0

    def __repr__(self) -> str:
        return f"Contact({self.did!r}, {self.addrs!r})"


class ContactInfo(msgspec.Struct, frozen=True):
    did: str
    node_id: str  # hex
    addrs: tuple[str, ...]
    last_seen_ago: float  # seconds
    failures: int


class BucketInfo(msgspec.Struct, frozen=True):
    index: int
    contacts: tuple[ContactInfo, ...]
    replacements: int
    pinging: str | None


class _Bucket:
    __slots__ = ("contacts", "pinging", "replacements")

    def __init__(self) -> None:
        self.contacts: OrderedDict[str, Contact] = OrderedDict()
        self.replacements: OrderedDict[str, Contact] = OrderedDict()
        self.pinging: str | None = None


class RoutingTable:
    def __init__(self, local_did: str, now: float, k: int = 20, stale_after: int = 3) -> None:
        self.local_did = local_did
        self.local_id = node_id(local_did)
        self.k = k
        self.stale_after = stale_after
        self._buckets: dict[int, _Bucket] = {}
        self._contacts: dict[str, Contact] = {}
        self._created = now
        self._touched: dict[int, float] = {}  # bucket index -> last lookup into its range

    # --- what we hear ------------------------------------------------------------------------

    def seen(self, did: str, addrs: tuple[str, ...], now: float) -> str | None:
        """`did` answered us or asked us something. Returns the DID the caller must ping (the
        least recently seen contact of a full bucket) or None. InvalidDID for a non-DID."""
        if did == self.local_did:
            return None
        contact = self._contacts.get(did)
        if contact is not None:
            if addrs:
                contact.addrs = addrs
            contact.last_seen = now
            contact.failures = 0
            self._buckets[bucket_index(self.local_id, contact.id)].contacts.move_to_end(did)
            return None
        ident = node_id(did)
        index = bucket_index(self.local_id, ident)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        if len(bucket.contacts) < self.k:
            bucket.replacements.pop(did, None)
            self._add(bucket, Contact(did, ident, addrs, now))
            return None
        waiting = bucket.replacements.pop(did, None) or Contact(did, ident, addrs, now)
        waiting.addrs = addrs or waiting.addrs
        waiting.last_seen = now
        bucket.replacements[did] = waiting
        while len(bucket.replacements) > self.k:
            bucket.replacements.popitem(last=False)
        if bucket.pinging is not None:
            return None
        bucket.pinging = next(iter(bucket.contacts))
        return bucket.pinging

    def ping_result(self, did: str, alive: bool, now: float) -> None:
        """The outcome of a ping that `seen` asked for."""
        contact = self._contacts.get(did)
        if contact is None:
            return
        bucket = self._buckets[bucket_index(self.local_id, contact.id)]
        if bucket.pinging == did:
            bucket.pinging = None
        if alive:
            contact.last_seen = now
            contact.failures = 0
            bucket.contacts.move_to_end(did)
        else:
            self._evict(contact)

    def failed(self, did: str) -> None:
        """A request to `did` got no answer (timeout, unreachable, garbage)."""
        contact = self._contacts.get(did)
        if contact is None:
            return
        contact.failures += 1
        if contact.failures >= self.stale_after:
            self._evict(contact)

    def remove(self, did: str) -> bool:
        contact = self._contacts.get(did)
        if contact is None:
            return False
        self._evict(contact)
        return True

    # --- what we look up ---------------------------------------------------------------------

    def closest(self, target: int, n: int, exclude: str | None = None) -> list[Contact]:
        """The n known contacts nearest `target` by XOR distance, nearest first.

        Every bucket is a contiguous run of that order, so only the few buckets needed are
        sorted. With d = local ^ target and i its top bit: bucket i comes first (its contacts
        share bit i with the target); then buckets j < i where bit j of d is set, highest j
        first (they match the target at bit j, the rest of the lower buckets do not); then the
        lower buckets where it is clear, lowest j first; then buckets j > i, lowest first."""
        d = self.local_id ^ target
        i = d.bit_length() - 1

        def rank(j: int) -> tuple[int, int]:
            if j == i:
                return (0, 0)
            if j > i:
                return (3, j)
            return (1, -j) if d >> j & 1 else (2, j)

        def dist(c: Contact) -> int:
            return c.id ^ target

        want = n + 1 if exclude is not None and exclude in self._contacts else n
        out: list[Contact] = []
        for j in sorted(self._buckets, key=rank):
            out += sorted(self._buckets[j].contacts.values(), key=dist)
            if len(out) >= want:
                break
        if want > n:
            out = [c for c in out if c.did != exclude]
        return out[:n]

    def touch(self, target: int, now: float) -> None:
        """A lookup for `target` completed: its bucket's range is fresh."""
        self._touched[bucket_index(self.local_id, target)] = now

    def refresh_targets(self, now: float, interval: float, rng: random.Random) -> list[int]:
        """One random id in the range of each bucket not looked into for `interval` seconds,
        from the nearest non-empty bucket outwards (nearer buckets cannot hold anyone: the
        nearest contact would be in them)."""
        if not self._buckets:
            return []
        targets = []
        for index in range(min(self._buckets), ID_BITS):
            if now - self._touched.get(index, self._created) >= interval:
                self._touched[index] = now
                targets.append(self.local_id ^ ((1 << index) | rng.getrandbits(index)))
        return targets

    # --- inspection --------------------------------------------------------------------------

    def get(self, did: str) -> Contact | None:
        return self._contacts.get(did)

    def contacts(self) -> list[Contact]:
        return list(self._contacts.values())

    def snapshot(self, now: float) -> list[BucketInfo]:
        return [
            BucketInfo(
                index=index,
                contacts=tuple(
                    ContactInfo(
                        did=c.did,
                        node_id=f"{c.id:064x}",
                        addrs=c.addrs,
                        last_seen_ago=round(now - c.last_seen, 3),
                        failures=c.failures,
                    )
                    for c in bucket.contacts.values()
                ),
                replacements=len(bucket.replacements),
                pinging=bucket.pinging,
            )
            for index, bucket in sorted(self._buckets.items(), reverse=True)
        ]

    def __len__(self) -> int:
        return len(self._contacts)

    def __contains__(self, did: object) -> bool:
        return did in self._contacts

    # --- internals ---------------------------------------------------------------------------

    def _add(self, bucket: _Bucket, contact: Contact) -> None:
        bucket.contacts[contact.did] = contact
        self._contacts[contact.did] = contact

    def _evict(self, contact: Contact) -> None:
        index = bucket_index(self.local_id, contact.id)
        bucket = self._buckets[index]
        del bucket.contacts[contact.did]
        del self._contacts[contact.did]
        if bucket.pinging == contact.did:
            bucket.pinging = None
        if bucket.replacements:
            _, fresh = bucket.replacements.popitem(last=True)
            fresh.failures = 0
            self._add(bucket, fresh)
        elif not bucket.contacts:
            del self._buckets[index]
