"""Actor systems over real QUIC on loopback (two QuicNetworks in one process): invoke, send,
child actors, remote errors, deny by default, a burst of one-way messages in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from nunet.actor.runtime import ActorSystem, Message
from nunet.crypto.keys import KeyPair
from nunet.errors import RemoteActorError, ValidationError
from nunet.net.quic import QuicLimits, QuicNetwork
from nunet.ucan import TrustContext

LIMITS = QuicLimits(handshake_timeout=2.0, dial_timeout=5.0, close_timeout=0.5)
LOOPBACK = ["/ip4/127.0.0.1/udp/0/quic-v1"]


@asynccontextmanager
async def pair(trusting: bool = True) -> AsyncIterator[tuple[ActorSystem, ActorSystem]]:
    keys = [KeyPair.generate(), KeyPair.generate()]
    async with QuicNetwork(keys[0], LOOPBACK, limits=LIMITS) as na, \
            QuicNetwork(keys[1], LOOPBACK, limits=LIMITS) as nb:
        na.add_addresses(nb.local_did, nb.listen_addrs())
        nb.add_addresses(na.local_did, na.listen_addrs())
        roots = [k.did for k in keys] if trusting else []
        systems = (
            ActorSystem(na, keys[0], TrustContext(roots, did=keys[0].did)),
            ActorSystem(nb, keys[1], TrustContext(roots, did=keys[1].did)),
        )
        async with asyncio.TaskGroup() as tg:
            tasks = []
            for system in systems:
                ready = asyncio.Event()
                tasks.append(tg.create_task(system.run(ready.set)))
                await ready.wait()
            try:
                yield systems
            finally:
                for task in tasks:
                    task.cancel()


async def test_invoke_send_and_children_over_quic() -> None:
    async with pair() as (a, b):
        b.root.add_behavior("/test/echo", lambda m: b"echo:" + m.payload)
        assert await a.root.invoke(b.root.handle, "/test/echo", b"q") == b"echo:q"

        async def invalid(_m: Message) -> bytes:
            raise ValidationError("no", path="payload")

        b.root.add_behavior("/test/invalid", invalid)
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, "/test/invalid", b"")
        assert info.value.remote_code == "validation_error"
        child = a.spawn("alloc/1")
        child.add_behavior("/test/echo", lambda m: b"child:" + m.payload)
        assert await child.invoke(b.root.handle, "/test/echo", b"c") == b"echo:c"
        assert await b.root.invoke(child.handle, "/test/echo", b"b") == b"child:b"
        # One-way messages arrive, in order, all of them.
        got: list[bytes] = []
        b.root.add_behavior("/test/sink", lambda m: got.append(m.payload))
        sent = [b"%05d" % i for i in range(2000)]
        for payload in sent:
            await a.root.send(b.root.handle, "/test/sink", payload)
        async with asyncio.timeout(20):
            while len(got) < len(sent):  # noqa: ASYNC110 - counts deliveries
                await asyncio.sleep(0.01)
        assert got == sent
        assert not a.rejections
        assert not b.rejections


async def test_deny_by_default_over_quic() -> None:
    async with pair(trusting=False) as (a, b):
        b.root.add_behavior("/test/echo", lambda m: b"echo:" + m.payload)
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, "/test/echo", b"")
        assert info.value.remote_code == "untrusted_root"
