"""Workload for the transport receive-path flame graph: this process receives, a child sends.

The receiver is a `QuicNetwork` on uvloop (as in `nunet run`) with a message handler that touches
each payload; a sender subprocess streams 64-byte messages to it over one connection for SECONDS.
py-spy records only this process (no --subprocesses), so the graph is the receive path alone:
UDP read -> aioquic (decrypt, parse, ack) -> framing -> dispatch -> handler. Usage:

    python profiles/profile_transport.py [SECONDS] [--size BYTES]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nunet.crypto.keys import KeyPair  # noqa: E402  (after the path is set)
from nunet.net import kinds  # noqa: E402
from nunet.net.quic import QuicNetwork  # noqa: E402


def _arg(flag: str, default: str) -> str:
    if flag in sys.argv:
        return sys.argv[sys.argv.index(flag) + 1]
    return default


async def receive(seconds: float, size: int) -> None:
    got = [0, 0]

    def on_message(_peer: str, payload: memoryview) -> None:
        got[0] += 1
        got[1] += payload[0]  # touch it, as a real handler would

    async def done(_peer: str, _payload: memoryview) -> bytes:
        finished.set()
        return str(got[0]).encode()

    finished = asyncio.Event()
    async with QuicNetwork(KeyPair.generate(), ["/ip4/127.0.0.1/udp/0/quic-v1"]) as net:
        net.on_message(kinds.PING, on_message)
        net.on_request(kinds.DHT, done)
        sender = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--send", net.listen_addrs()[0], str(seconds), str(size),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        start = time.perf_counter()
        await finished.wait()
        elapsed = time.perf_counter() - start
        await sender.wait()
        print(f"received {got[0]} messages of {size} B in {elapsed:.2f} s: "
              f"{got[0] / elapsed / 1e3:.0f}k msgs/s; {dict(net.metrics)}")


async def send(addr: str, seconds: float, size: int) -> None:
    async with QuicNetwork(KeyPair.generate()) as net:
        did = await net.connect(addr)
        payload = bytes(size)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(1000):
                await net.send(did, kinds.PING, payload)
        await net.request(did, kinds.DHT, b"", 60.0)


def main() -> None:
    import uvloop

    if sys.argv[1:2] == ["--send"]:
        uvloop.run(send(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--") and a != _arg("--size", "")]
    seconds = float(args[0]) if args else 5.0
    uvloop.run(receive(seconds, int(_arg("--size", "64"))))


if __name__ == "__main__":
    main()
