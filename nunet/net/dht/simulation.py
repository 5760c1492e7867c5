"""A DHT network of many nodes in one event loop, on the in-memory network (tests, benchmarks).

    async with swarm(200) as nodes:          # node 0 is the bootstrap peer of all others
        record = await nodes[5].find_peer(nodes[17].did)

Keys are derived from `seed` so that a run can be repeated exactly. Nodes join in batches
(`join_batch` at a time, each batch waiting for the previous one to finish its self-lookup), the
way a network grows, rather than all at once against a single bootstrap peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable

import blake3

from nunet.crypto.keys import KeyPair
from nunet.net.dht.core import DhtConfig
from nunet.net.dht.service import DhtService
from nunet.testing.memnet import MemoryHub, mem_addr


def swarm_keys(n: int, seed: bytes = b"nunet-dht-sim") -> list[KeyPair]:
    return [
        KeyPair.from_seed(blake3.blake3(seed + i.to_bytes(4, "big")).digest()) for i in range(n)
    ]


async def start(tg: asyncio.TaskGroup, service: DhtService) -> asyncio.Task[None]:
    """Starts `service` in `tg` and waits until it reports ready (as the daemon does)."""
    ready = asyncio.Event()
    task = tg.create_task(service.run(ready.set))
    await ready.wait()
    return task


@contextlib.asynccontextmanager
async def swarm(
    n: int,
    *,
    hub: MemoryHub | None = None,
    config: DhtConfig | None = None,
    seed: bytes = b"nunet-dht-sim",
    join_batch: int = 25,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[list[DhtService]]:
    hub = hub or MemoryHub()
    keys = swarm_keys(n, seed)
    rng = random.Random(seed)
    nodes = [
        DhtService(
            hub.node(kp.did),
            kp,
            [mem_addr(keys[0].did)] if i else [],
            config=config,
            clock=clock,
            rng=random.Random(rng.getrandbits(64)),
        )
        for i, kp in enumerate(keys)
    ]
    tasks: list[asyncio.Task[None]] = []
    async with asyncio.TaskGroup() as tg:
        try:
            for first in range(0, n, join_batch):
                batch = nodes[first : first + join_batch]
                for node in batch:
                    tasks.append(await start(tg, node))
                await asyncio.gather(*(node.wait_bootstrapped() for node in batch))
            yield nodes
        finally:
            for task in tasks:
                task.cancel()
