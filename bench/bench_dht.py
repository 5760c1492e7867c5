"""Kademlia DHT on the in-memory network: hops, queries and latency of lookups; record checks.

- `dht.lookup.hops.N` (N = 50, 200, 1000 nodes, all bootstrapped from one): mean hops of
  FIND_VALUE lookups for random peers' address records (hops as defined in
  nunet/net/dht/lookup.py); baseline `log2(N)`, the hop count of a one-bit-per-hop route.
  min/max are over the lookups.
- `dht.lookup.queries.N`: mean DHT requests per lookup; baseline `ask-everyone` (N - 1).
- `dht.lookup.latency.p50`, `.p99` (ms): the same lookups on the 1000-node network (the largest
  one built) with a fixed 5 ms one-way delay on every link, so one request costs a 10 ms round
  trip; baseline `rtt-x-log2N`, the time of log2(N) sequential round trips.
- `dht.record.verify`: full record checks per second (`check_record`: sizes, expiry, address
  list, DID decode, Ed25519 verify) on distinct records; baseline `pynacl-verify`, raw
  `crypto_sign_open` of the same signed bytes. `dht.record.verify.cached`: the same records seen
  again (one lookup gets a record from up to k nodes), answered by the verified-signature cache.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bench._harness import BenchContext, Better, Metric, compare

if TYPE_CHECKING:
    from nunet.net.dht.records import Record

SIZES = (50, 200, 1000)
DELAY = 0.005  # seconds, one way, every link
METRICS = (
    *(f"dht.lookup.hops.{n}" for n in SIZES),
    *(f"dht.lookup.queries.{n}" for n in SIZES),
    "dht.lookup.latency.p50",
    "dht.lookup.latency.p99",
    "dht.record.verify",
    "dht.record.verify.cached",
)


def _metric(name: str, unit: str, samples: list[float], value: float, baseline: str,
            baseline_value: float, better: Better = "lower") -> Metric:
    return Metric(name=name, value=value, unit=unit, better=better, baseline=baseline,
                  baseline_value=baseline_value, repeats=len(samples), min=min(samples),
                  max=max(samples))


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def _simulate(ctx: BenchContext, n: int, lookups: int, latency: bool) -> list[Metric]:
    from nunet.net.dht import RecordKind
    from nunet.net.dht.simulation import swarm
    from nunet.testing.memnet import MemoryHub

    hub = MemoryHub()
    t0 = time.perf_counter()
    out: list[Metric] = []
    async with swarm(n, hub=hub) as nodes:
        ctx.log(f"bench: dht {n} nodes joined in {time.perf_counter() - t0:.1f} s")
        rng = random.Random(n)
        pairs = [rng.sample(nodes, 2) for _ in range(lookups)]
        hops, queries = [], []
        for a, b in pairs:
            result = await a.lookup_value(RecordKind.PEER, b.did)
            if not result.records:
                raise RuntimeError(f"lookup for {b.did} found nothing on {n} nodes")
            hops.append(float(result.hops))
            queries.append(float(result.queries))
        out.append(_metric(f"dht.lookup.hops.{n}", "hops", hops, statistics.mean(hops),
                           "log2(N)", math.log2(n)))
        out.append(_metric(f"dht.lookup.queries.{n}", "requests", queries,
                           statistics.mean(queries), "ask-everyone", n - 1))
        if latency:
            hub.delay = lambda _a, _b: DELAY
            times = []
            for a, b in pairs:
                t = time.perf_counter()
                result = await a.lookup_value(RecordKind.PEER, b.did)
                times.append((time.perf_counter() - t) * 1000)
                if not result.records:
                    raise RuntimeError(f"lookup for {b.did} found nothing with delays")
            bound = 2 * DELAY * 1000 * math.log2(n)
            for q, name in ((0.5, "dht.lookup.latency.p50"), (0.99, "dht.lookup.latency.p99")):
                out.append(_metric(name, "ms", times, _percentile(times, q), "rtt-x-log2N", bound))
    return out


def _records(n: int, now: float) -> list[Record]:
    from nunet.crypto.keys import KeyPair
    from nunet.net.dht.records import RecordKind, encode_addrs, sign_record

    keys = [KeyPair.from_seed(i.to_bytes(32, "big")) for i in range(1, 65)]
    return [
        sign_record(kp, RecordKind.PEER, kp.did, encode_addrs((f"/ip4/10.0.{i % 250}.1/udp/9000/"
                    "quic-v1",)), i, int(now) + 3600)
        for i, kp in ((i, keys[i % len(keys)]) for i in range(n))
    ]


def _verify_metrics(ctx: BenchContext) -> Iterator[Metric]:
    import nacl.bindings

    from nunet.crypto.did import public_key_from_did
    from nunet.net.dht.records import VerifiedCache, check_record

    now = time.time()
    records = _records(256, now)
    signed = [(r.signature + r.signed_bytes(), public_key_from_did(r.publisher)) for r in records]
    cache = VerifiedCache(capacity=1024)
    for record in records:
        assert check_record(record, now, cache) is None

    def ours() -> int:
        for record in records:
            if check_record(record, now) is not None:
                raise RuntimeError("a good record was refused")
        return len(records)

    def ours_cached() -> int:
        for record in records:
            if check_record(record, now, cache) is not None:
                raise RuntimeError("a good record was refused")
        return len(records)

    def raw() -> int:
        for message, key in signed:
            nacl.bindings.crypto_sign_open(message, key)
        return len(signed)

    with ctx.pinned(0):
        s = ctx.interleave(
            {"ours": ctx.rate(ours), "cached": ctx.rate(ours_cached), "raw": ctx.rate(raw)}
        )
    yield compare("dht.record.verify", "records/s", s["ours"], "pynacl-verify", s["raw"])
    yield compare("dht.record.verify.cached", "records/s", s["cached"], "pynacl-verify", s["raw"])


def run(ctx: BenchContext) -> Iterator[Metric]:
    if ctx.wants("dht.record.verify"):
        yield from _verify_metrics(ctx)
    lookups = 200 if ctx.min_time >= 0.1 else 50
    want_latency = ctx.wants("dht.lookup.latency")
    sizes = [n for n in SIZES if ctx.wants(f"dht.lookup.hops.{n}")
             or ctx.wants(f"dht.lookup.queries.{n}") or (want_latency and n == SIZES[-1])]
    for n in sizes:
        with ctx.pinned(0):
            yield from asyncio.run(
                _simulate(ctx, n, lookups, latency=want_latency and n == SIZES[-1])
            )
