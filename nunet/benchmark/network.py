"""Network stage: round-trip time and upload throughput to connected peers, over the node's own
transport (`nunet.net.api.Network`, QUIC in a running node). It needs a running node with peers:
`nunet bench` in a separate process notes it as skipped.

Both ends speak one request kind (`kinds.BENCH`, to be registered in `nunet/net/kinds.py`):
`serve_echo` answers a probe of at most `ECHO_MAX` bytes with the same bytes and anything larger
with an empty reply, so throughput counts one direction only.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

from nunet.benchmark.measure import summarize
from nunet.benchmark.model import Result
from nunet.errors import NunetError
from nunet.net.api import MAX_PAYLOAD, Network

STAGE = "network"
ECHO_MAX = 64
CHUNK = 256 * 1024
WINDOW = 8  # requests in flight: one at a time would measure round trips, not throughput


def serve_echo(net: Network, kind: int) -> None:
    async def echo(_peer: str, payload: memoryview) -> bytes:
        return bytes(payload) if len(payload) <= ECHO_MAX else b""

    net.on_request(kind, echo)


async def measure_peer(
    net: Network,
    did: str,
    kind: int,
    *,
    pings: int = 20,
    bulk_bytes: int = 8 << 20,
    timeout: float = 5.0,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Result]:
    """`network.<peer>.rtt` (ms, median of `pings` sequential requests) and
    `network.<peer>.upload` (MB/s, `bulk_bytes` in 256 KiB requests, `WINDOW` in flight, 3
    samples)."""
    label = did.rsplit(":", 1)[-1][-8:]
    rtts = []
    for i in range(pings):
        t0 = clock()
        probe = i.to_bytes(8, "big")
        if await net.request(did, kind, probe, timeout) != probe:
            raise NunetError(f"{did} answered the network benchmark's probe with other bytes")
        rtts.append((clock() - t0) * 1000)
    chunk = bytes(min(CHUNK, MAX_PAYLOAD))
    sends = max(1, bulk_bytes // len(chunk))
    rates = []
    for _ in range(3):
        t0 = clock()
        for first in range(0, sends, WINDOW):
            batch = min(WINDOW, sends - first)
            await asyncio.gather(*(net.request(did, kind, chunk, timeout) for _ in range(batch)))
        rates.append(sends * len(chunk) / (clock() - t0) / 1e6)
    return [
        summarize(f"network.{label}.rtt", STAGE, "ms", rtts, better="lower",
                  note=f"request/reply to {did}, stdev {statistics.pstdev(rtts):.3g} ms"),
        summarize(f"network.{label}.upload", STAGE, "MB/s", rates,
                  note=f"{len(chunk) // 1024} KiB requests, {WINDOW} in flight, to {did}"),
    ]


async def measure_peers(
    net: Network, kind: int, *, most: int = 5, pings: int = 20, bulk_bytes: int = 8 << 20
) -> tuple[list[Result], str]:
    """Every connected peer up to `most`; a peer that fails is named in the note, not fatal."""
    peers = sorted(net.connected())[:most]
    if not peers:
        return [], "no connected peers"
    results: list[Result] = []
    failed: list[str] = []
    for did in peers:
        try:
            results.extend(await measure_peer(net, did, kind, pings=pings, bulk_bytes=bulk_bytes))
        except NunetError as exc:
            failed.append(f"{did}: {exc}")
    return results, "; ".join(failed)
