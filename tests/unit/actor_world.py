"""Shared by the actor tests: fixed keys, trust contexts, tokens and envelopes; the running
world of ActorSystems on a memnet hub is `nunet.testing.actors` (re-exported here)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nunet.actor.envelope import Envelope, Options
from nunet.actor.handle import ROOT_INBOX, Handle
from nunet.crypto.keys import KeyPair
from nunet.testing.actors import World as World  # re-exported for the actor tests
from nunet.testing.actors import world as world
from nunet.ucan import issue

T0 = 1_700_000_000.0
KEYS = [KeyPair.from_seed(bytes([0x40 + i]) * 32) for i in range(12)]
ORG, NODE_A, NODE_B, NODE_C, USER, MALLORY, CHILD = KEYS[:7]


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


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state spread over several objects
            await asyncio.sleep(0.005)
