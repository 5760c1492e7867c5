"""Message de-duplication: the compiled `SeenCache` against a plain dict, at 300k entries.

Workloads (each op is one `check_and_add(id, now)`; ids are 32-byte random digests, made before
timing):
- `dedup.check`: ids that are all already in a cache of 300k entries: the common case in gossip,
  where most copies a node receives are duplicates.
- `dedup.insert`: ids that are all new, into a full cache of 300k entries, so every insert also
  evicts the oldest one.
Baseline `dict`: what one writes inline without nunet's module: a dict id -> deadline, with the
same TTL semantics (an entry is live while now < deadline), and for inserts the same size bound
(a deque of ids in insertion order, the oldest deleted when over capacity). The baseline loop
is inlined (no method call per op), which only favours it.
`dedup.native_vs_pure`: the compiled cache against its pure-Python twin on the check workload.
`dedup.bytes_per_entry`: memory per entry at 300k entries, traced with tracemalloc (PyMem
allocations included) while filling with fresh ids, against the dict baseline, whose entries
keep their ids' bytes objects alive while the compiled cache copies ids into a C array.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from bench._harness import BenchContext, Metric, compare, speedup

METRICS = ("dedup.check", "dedup.insert", "dedup.native_vs_pure", "dedup.bytes_per_entry")

ENTRIES = 300_000
TTL = 120.0
NOW = 1_700_000_000.0
BATCH = 50_000  # ops per call of a timed function


def _native() -> ModuleType:
    try:
        from nunet._native import dedup
    except ImportError as exc:
        raise RuntimeError(f"nunet._native.dedup is not built ({exc}): run `make build`") from exc
    return dedup


def _ids(n: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(n)]


class DictSeen:
    """The `dict` baseline's state: id -> deadline, plus insertion order for the size bound."""

    def __init__(self, capacity: int, ttl: float) -> None:
        self.deadlines: dict[bytes, float] = {}
        self.order: deque[bytes] = deque()
        self.capacity = capacity
        self.ttl = ttl

    def fill(self, ids: list[bytes], now: float) -> None:
        for msg_id in ids:
            self.deadlines[msg_id] = now + self.ttl
            self.order.append(msg_id)


def _dict_check(seen: DictSeen, ids: list[bytes]) -> Callable[[], int]:
    def once() -> int:
        deadlines = seen.deadlines
        ttl = seen.ttl
        now = NOW
        dups = 0
        for msg_id in ids:
            deadline = deadlines.get(msg_id)
            if deadline is not None and now < deadline:
                dups += 1
            else:
                deadlines[msg_id] = now + ttl
        assert dups == len(ids)
        return len(ids)

    return once


def _dict_insert(seen: DictSeen, stream: list[bytes]) -> Callable[[], int]:
    position = [0]

    def once() -> int:
        deadlines = seen.deadlines
        order = seen.order
        capacity = seen.capacity
        ttl = seen.ttl
        now = NOW
        start = position[0]
        for msg_id in stream[start : start + BATCH]:
            deadline = deadlines.get(msg_id)
            if deadline is not None and now < deadline:
                continue
            deadlines[msg_id] = now + ttl
            order.append(msg_id)
            if len(deadlines) > capacity:
                del deadlines[order.popleft()]
        position[0] = (start + BATCH) % len(stream)
        return BATCH

    return once


def _cache_check(cache: Any, ids: list[bytes]) -> Callable[[], int]:
    def once() -> int:
        check = cache.check_and_add
        now = NOW
        for msg_id in ids:
            check(msg_id, now)
        return len(ids)

    return once


def _cache_insert(cache: Any, stream: list[bytes]) -> Callable[[], int]:
    position = [0]

    def once() -> int:
        check = cache.check_and_add
        now = NOW
        start = position[0]
        for msg_id in stream[start : start + BATCH]:
            check(msg_id, now)
        position[0] = (start + BATCH) % len(stream)
        return BATCH

    return once


def _traced_bytes_per_entry(fill: Callable[[], object]) -> float:
    """Bytes still allocated after `fill()` builds its structure, per entry."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = fill()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return current / ENTRIES


def _fill_native(dedup: ModuleType) -> Callable[[], object]:
    def fill() -> object:
        cache = dedup.SeenCache(ENTRIES, TTL)
        for _ in range(ENTRIES):
            cache.check_and_add(os.urandom(32), NOW)
        return cache

    return fill


def _fill_dict() -> object:
    seen = DictSeen(ENTRIES, TTL)
    for _ in range(ENTRIES):
        msg_id = os.urandom(32)
        seen.deadlines[msg_id] = NOW + TTL
        seen.order.append(msg_id)
    return seen


def run(ctx: BenchContext) -> Iterator[Metric]:
    from nunet._native._reference import dedup as pure

    dedup = _native()
    present = _ids(ENTRIES)
    # Cycling through 2x capacity in order: each id was evicted capacity inserts before it
    # comes round again, so every op is an insert plus an eviction.
    stream = _ids(2 * ENTRIES)
    probe = present[:BATCH]

    with ctx.pinned(0):
        if ctx.wants("dedup.check") or ctx.wants("dedup.native_vs_pure"):
            native_cache = dedup.SeenCache(ENTRIES, TTL)
            pure_cache = pure.SeenCache(ENTRIES, TTL)
            base = DictSeen(ENTRIES, TTL)
            for cache in (native_cache, pure_cache):
                for msg_id in present:
                    cache.check_and_add(msg_id, NOW)
            base.fill(present, NOW)
            samples = ctx.interleave(
                {
                    "native": ctx.rate(_cache_check(native_cache, probe)),
                    "dict": ctx.rate(_dict_check(base, probe)),
                    "pure": ctx.rate(_cache_check(pure_cache, probe)),
                }
            )
            assert len(native_cache) == len(pure_cache) == ENTRIES
            yield compare("dedup.check", "ops/s", samples["native"], "dict", samples["dict"])
            yield speedup(
                "dedup.native_vs_pure", samples["native"], "pure-python-twin", samples["pure"]
            )
            del native_cache, pure_cache, base

        if ctx.wants("dedup.insert"):
            native_cache = dedup.SeenCache(ENTRIES, TTL)
            base = DictSeen(ENTRIES, TTL)
            for msg_id in stream[ENTRIES:]:  # full, with the ids the stream reaches last
                native_cache.check_and_add(msg_id, NOW)
            base.fill(stream[ENTRIES:], NOW)
            samples = ctx.interleave(
                {
                    "native": ctx.rate(_cache_insert(native_cache, stream)),
                    "dict": ctx.rate(_dict_insert(base, stream)),
                }
            )
            assert len(native_cache) == len(base.deadlines) == ENTRIES
            yield compare("dedup.insert", "ops/s", samples["native"], "dict", samples["dict"])
            del native_cache, base

    if ctx.wants("dedup.bytes_per_entry"):
        ours = [_traced_bytes_per_entry(_fill_native(dedup)) for _ in range(3)]
        base_bytes = [_traced_bytes_per_entry(_fill_dict) for _ in range(3)]
        yield compare("dedup.bytes_per_entry", "B", ours, "dict", base_bytes, better="lower")
