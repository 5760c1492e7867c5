"""Workload for the actor receive/dispatch flame graphs: this process receives, a child sends.

The receiver is an `ActorSystem` on a `QuicNetwork` (uvloop, as in `nunet run`) whose root actor
has a plain-function behaviour (the inline fast path) that touches each payload; a sender
subprocess's root actor streams one-way 64 B `send`s to it over one connection for SECONDS, each
envelope carrying its capability chain (checked from the cache on receipt), then invokes a count.
py-spy records only this process, so the graph is the receive path alone: UDP read -> aioquic ->
framing -> `ActorSystem._on_message` (decode, authenticate, authorize) -> handler -> release.

`--inproc`: no network; this process calls `_on_message` in a loop on one pre-encoded envelope
(the actor layer's share alone, larger in the graph). `--signed`: envelopes signed per message
(Ed25519 verify and the replay table on every receipt). Usage:

    python profiles/profile_actor.py [SECONDS] [--inproc] [--signed]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nunet.actor.handle import ROOT_INBOX, Handle  # noqa: E402  (after the path is set)
from nunet.actor.runtime import ActorSystem, Message  # noqa: E402
from nunet.crypto.keys import KeyPair  # noqa: E402
from nunet.net.quic import QuicNetwork  # noqa: E402
from nunet.ucan import TrustContext  # noqa: E402

SINK, COUNT = "/bench/sink", "/bench/count"
LOOPBACK = ["/ip4/127.0.0.1/udp/0/quic-v1"]


async def receive(seconds: float, signed: bool) -> None:
    key, sender_key = KeyPair.generate(), KeyPair.generate()
    got = [0, 0]

    def sink(message: Message) -> None:
        got[0] += 1
        got[1] += message.payload[0]  # touch it, as a real handler would

    def count(_message: Message) -> bytes:
        finished.set()
        return str(got[0]).encode()

    finished = asyncio.Event()
    net = QuicNetwork(key, LOOPBACK, clock=time.monotonic)
    system = ActorSystem(net, key, TrustContext([sender_key.did], did=key.did))
    system.root.add_behavior(SINK, sink)
    system.root.add_behavior(COUNT, count)
    async with net, asyncio.TaskGroup() as tg:
        ready = asyncio.Event()
        task = tg.create_task(system.run(ready.set))
        await ready.wait()
        sender = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--send", net.listen_addrs()[0], key.did,
            sender_key.seed.hex(), str(seconds), "1" if signed else "0",
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        start = time.perf_counter()
        await finished.wait()
        elapsed = time.perf_counter() - start
        await sender.wait()
        print(f"received {got[0]} actor messages of 64 B in {elapsed:.2f} s: "
              f"{got[0] / elapsed / 1e3:.1f}k msgs/s; refused {dict(system.rejections)}; "
              f"{dict(net.metrics)}")
        task.cancel()


async def send(addr: str, did: str, seed: str, seconds: float, signed: bool) -> None:
    key = KeyPair.from_seed(bytes.fromhex(seed))
    net = QuicNetwork(key, clock=time.monotonic)
    system = ActorSystem(net, key, TrustContext([did], did=key.did))
    to = Handle.for_actor(did, did, ROOT_INBOX)
    payload = bytes(64)
    async with net, asyncio.TaskGroup() as tg:
        ready = asyncio.Event()
        task = tg.create_task(system.run(ready.set))
        await ready.wait()
        await net.connect(addr)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(1000):
                await system.root.send(to, SINK, payload, sign=signed)
        await system.root.invoke(to, COUNT, b"", timeout=120.0)
        task.cancel()


def in_process(seconds: float, signed: bool) -> None:
    """`_on_message` in a loop: decode, admit, handler, release; no network."""
    import uvloop

    from nunet.actor.replay import ReplayGuard
    from nunet.testing.memnet import MemoryHub

    async def main() -> None:
        hub = MemoryHub()
        keys = KeyPair.generate(), KeyPair.generate()
        sender = ActorSystem(hub.node(keys[0].did), keys[0], TrustContext([], did=keys[0].did))
        system = ActorSystem(hub.node(keys[1].did), keys[1],
                             TrustContext([keys[0].did], did=keys[1].did))
        got = [0]

        def sink(message: Message) -> None:
            got[0] += 1

        system.root.add_behavior(SINK, sink)
        ready = asyncio.Event()
        task = asyncio.create_task(system.run(ready.set))
        await ready.wait()
        to = system.root.handle
        pool = [
            memoryview(sender.root._envelope(to, SINK, bytes(64), 250.0, "", "", i + 1,
                                             signed, None).encode())
            for i in range(4096 if signed else 1)
        ]
        on_message, peer = system._on_message, keys[0].did
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for data in pool:
                on_message(peer, data)
            if signed:
                system.dispatcher.replay = ReplayGuard(window_ns=system.dispatcher.replay.window_ns)
        print(f"handled {got[0]} envelopes in {seconds} s: {got[0] / seconds / 1e3:.1f}k/s; "
              f"refused {dict(system.rejections)}")
        task.cancel()

    uvloop.run(main())


def main() -> None:
    import uvloop

    if sys.argv[1:2] == ["--send"]:
        addr, did, seed, seconds, signed = sys.argv[2:7]
        uvloop.run(send(addr, did, seed, float(seconds), signed == "1"))
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    duration = float(args[0]) if args else 5.0
    if "--inproc" in sys.argv:
        in_process(duration, "--signed" in sys.argv)
    else:
        uvloop.run(receive(duration, "--signed" in sys.argv))


if __name__ == "__main__":
    main()
