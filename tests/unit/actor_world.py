"""Shared by the actor tests: fixed keys, trust contexts, tokens, envelopes, and running
ActorSystems on a memnet hub (with a gossip service each)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from nunet.actor.envelope import Envelope, Options
from nunet.actor.handle import ROOT_INBOX, Handle
from nunet.actor.runtime import ActorSystem
from nunet.crypto.keys import KeyPair
from nunet.net.gossip import GossipParams
from nunet.net.gossip.service import GossipService
from nunet.testing.memnet import MemoryHub, mem_addr
from nunet.ucan import TrustContext, issue

T0 = 1_700_000_000.0
KEYS = [KeyPair.from_seed(bytes([0x40 + i]) * 32) for i in range(12)]
ORG, NODE_A, NODE_B, NODE_C, USER, MALLORY, CHILD = KEYS[:7]
GOSSIP = GossipParams(heartbeat_interval=0.02)


def root(key: KeyPair) -> Handle:
    return Handle.for_actor(key.did, key.did, ROOT_INBOX)


def self_root(key: KeyPair, now: float = T0, *, caps: tuple[str, ...] = ("/",),
              topics: tuple[str, ...] = ("/",)) -> bytes:
    return issue(key, action="delegate", subject=key.did, audience=key.did, capabilities=caps,
                 topics=topics, not_before=int(now) - 60, expiry=int(now) + 3600)


def grant(issuer: KeyPair, audience: KeyPair, now: float = T0, *,
          caps: tuple[str, ...] = ("/",), topics: tuple[str, ...] = ("/",),
          parent: bytes | None = None, action: str = "delegate", nb: int | None = None,
          exp: int | None = None, depth: int | None = None) -> bytes:
    return issue(
        issuer, action=action, subject=ORG.did, audience=audience.did,  # type: ignore[arg-type]
        capabilities=caps, topics=topics, not_before=int(now) - 60 if nb is None else nb,
        expiry=int(now) + 3600 if exp is None else exp, parent=parent, depth=depth,
    )


def envelope(
    sender: KeyPair,
    to: Handle,
    behavior: str,
    *,
    now: float = T0,
    nonce: int = 1,
    ttl: float = 30.0,
    caps: tuple[bytes, ...] = (),
    reply_to: str = "",
    topic: str = "",
    payload: bytes = b"",
    sign: bool = False,
    handle: Handle | None = None,
) -> Envelope:
    env = Envelope(
        to, behavior, handle or root(sender), nonce,
        Options(int((now + ttl) * 1e9), reply_to, topic), payload, caps,
    )
    return env.sign(sender) if sign else env


class World:
    """Running actor systems on one memnet hub, all connected to each other."""

    def __init__(self, hub: MemoryHub) -> None:
        self.hub = hub
        self.systems: list[ActorSystem] = []

    def __getitem__(self, i: int) -> ActorSystem:
        return self.systems[i]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state spread over several objects
            await asyncio.sleep(0.005)


@asynccontextmanager
async def world(
    keys: list[KeyPair],
    *,
    roots: Callable[[KeyPair], list[str]] | None = None,
    gossip: bool = True,
    **system_kwargs: object,
) -> AsyncIterator[World]:
    """Systems for `keys`, each trusting `roots(key)` (default: every node of the world, so the
    self-issued root tokens of `CapabilityProvider` are accepted)."""
    hub = MemoryHub()
    w = World(hub)
    nets = [hub.node(k.did) for k in keys]
    for net in nets:
        for other in nets:
            if other is not net:
                net.add_addresses(other.local_did, (mem_addr(other.local_did),))
    for i, other in enumerate(nets):
        for net in nets[i + 1 :]:
            await other.connect(mem_addr(net.local_did))
    services = []
    for i, (net, key) in enumerate(zip(nets, keys, strict=True)):
        trusted = roots(key) if roots is not None else [k.did for k in keys]
        trust = TrustContext(trusted, did=key.did)
        service = GossipService(net, key, GOSSIP, rng=random.Random(i)) if gossip else None
        if service is not None:
            services.append(service)
        w.systems.append(ActorSystem(net, key, trust, gossip=service, **system_kwargs))  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        tasks = []
        for component in [*services, *w.systems]:
            ready = asyncio.Event()
            tasks.append(tg.create_task(component.run(ready.set)))
            await ready.wait()
        try:
            yield w
        finally:
            for task in reversed(tasks):
                task.cancel()
