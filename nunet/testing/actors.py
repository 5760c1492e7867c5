"""Running ActorSystems on one in-process memnet hub, for unit and integration tests.

`world(keys)` starts one `ActorSystem` (with a gossip service each, unless told otherwise) per
key, all connected to each other and by default trusting every key of the world as a root, so
the self-issued root tokens of `CapabilityProvider` are accepted. Components of a test (a
provider service, a deployment service) join the world's task group with `start`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from nunet.actor.runtime import ActorSystem
from nunet.crypto.keys import KeyPair
from nunet.net.gossip import GossipParams
from nunet.net.gossip.service import GossipService
from nunet.testing.memnet import MemoryHub, mem_addr
from nunet.ucan import TrustContext

GOSSIP = GossipParams(heartbeat_interval=0.02)
START_TIMEOUT_S = 30.0


class World:
    """The running systems of one hub, in the order of their keys."""

    def __init__(self, hub: MemoryHub, tg: asyncio.TaskGroup) -> None:
        self.hub = hub
        self.tg = tg
        self.systems: list[ActorSystem] = []
        self.tasks: list[asyncio.Task[None]] = []

    def __getitem__(self, i: int) -> ActorSystem:
        return self.systems[i]

    @property
    def by_did(self) -> dict[str, ActorSystem]:
        return {system.did: system for system in self.systems}

    async def start(self, component: Any) -> asyncio.Task[None]:
        """Run a daemon component (`run(started)`) in the world until it ends."""
        ready = asyncio.Event()
        task: asyncio.Task[None] = self.tg.create_task(component.run(ready.set))
        self.tasks.append(task)
        async with asyncio.timeout(START_TIMEOUT_S):
            await ready.wait()
        return task


@asynccontextmanager
async def world(
    keys: list[KeyPair],
    *,
    roots: Callable[[KeyPair], list[str]] | None = None,
    gossip: bool = True,
    **system_kwargs: Any,
) -> AsyncIterator[World]:
    """Systems for `keys`, each trusting `roots(key)` (default: every key of the world)."""
    hub = MemoryHub()
    nets = [hub.node(k.did) for k in keys]
    for net in nets:
        for other in nets:
            if other is not net:
                net.add_addresses(other.local_did, (mem_addr(other.local_did),))
    for i, other in enumerate(nets):
        for net in nets[i + 1 :]:
            await other.connect(mem_addr(net.local_did))
    services: list[GossipService] = []
    systems: list[ActorSystem] = []
    for i, (net, key) in enumerate(zip(nets, keys, strict=True)):
        trusted = roots(key) if roots is not None else [k.did for k in keys]
        service = GossipService(net, key, GOSSIP, rng=random.Random(i)) if gossip else None
        if service is not None:
            services.append(service)
        systems.append(ActorSystem(net, key, TrustContext(trusted, did=key.did), gossip=service,
                                   **system_kwargs))
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        w = World(hub, tg)
        w.systems = systems
        for component in [*services, *systems]:
            await w.start(component)
        own = list(w.tasks)
        try:
            yield w
        finally:
            # The test's components first, then systems before the gossip under them.
            for task in [*w.tasks[len(own):], *reversed(own)]:
                task.cancel()
