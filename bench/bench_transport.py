"""QUIC transport: nunet's `QuicNetwork` against a minimal raw-aioquic program, two processes.

Each candidate is a server process pinned to CPU 0 and a client process pinned to CPU 1, both kept
alive for the whole run and driven over stdin/stdout (one JSON line per command), so samples
measure traffic, not process start-up. Candidates are interleaved A B A B (bench/_harness.py).

- `ours`: `QuicNetwork` on uvloop with the high-resolution clock (what `nunet run` uses). The
  client awaits `send()` per message; the server dispatches every frame to a Python handler.
- `raw-aioquic`: aioquic's own asyncio API (`serve`/`connect`) on the stock asyncio loop, its best
  setting without patching aioquic (it reads `loop.time()`, which on uvloop has 1 ms resolution:
  there, its bulk rate dropped and a datagram burst stalled for minutes). The client writes each
  message with `send_stream_data` and transmits once per 256 messages; the server only counts
  bytes (no framing, no dispatch): the ceiling, not a strawman.
- `raw-aioquic-rpc`: the same program on uvloop (its best setting for a ping-pong, which arms no
  timer), a 64-byte request on a bidirectional stream, echoed back from the event handler.

Both use 1350-byte packets and the same flow-control windows. Metrics: `transport.msgs.64B`
(one-way 64 B messages/s), `transport.bulk` (MB/s in 64 KiB messages), `transport.datagrams`
(64 B DATAGRAM frames received/s), `rpc.rtt.p50`/`.p99` (us, sequential), plus
`transport.msgs_per_packet` (64 B messages per UDP packet sent), `transport.bulk.asyncio` (ours
on the stock asyncio loop too: the same loop on both sides) and `transport.bulk.clock` (ours on
uvloop with `time.monotonic` against ours with uvloop's 1 ms `loop.time()`).

Worker usage (what the parent spawns): `python -m bench.bench_transport worker ROLE IMPL LOOP
CLOCK CPU`.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._harness import BenchContext, Metric, compare

METRICS = (
    "transport.msgs.64B",
    "transport.msgs_per_packet",
    "transport.bulk",
    "transport.bulk.asyncio",
    "transport.bulk.clock",
    "transport.datagrams",
    "rpc.rtt.p50",
    "rpc.rtt.p99",
)

ROOT = Path(__file__).resolve().parent.parent
PACKET = 1350
STREAM_WINDOW = 2 << 20
CONNECTION_WINDOW = 4 << 20
MSG = 64
BULK_CHUNK = 64 << 10
WORKER_TIMEOUT = 120.0


# --- parent side -------------------------------------------------------------------------------


class Pair:
    """A server and a client worker of one implementation, on one loop and clock."""

    def __init__(self, impl: str, loop: str, clock: str, pin: bool) -> None:
        self.name = f"{impl}/{loop}/{clock}"
        server_cpu, client_cpu = ("0", "1") if pin and _cpus() >= 2 else ("-", "-")
        self.server = _spawn("server", impl, loop, clock, server_cpu)
        hello = self.server.read()
        self.client = _spawn("client", impl, loop, clock, client_cpu)
        self.client.ask({"op": "connect", **hello})

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        return self.client.ask(command)

    def close(self) -> None:
        self.client.stop()
        self.server.stop()


class _Worker:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], WORKER_TIMEOUT)
        if not ready:
            self.proc.kill()
            raise RuntimeError(f"worker {self.proc.args} gave no answer in {WORKER_TIMEOUT} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.args} died (exit {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker failed: {reply['error']}")
        return reply

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _spawn(role: str, impl: str, loop: str, clock: str, cpu: str) -> _Worker:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_transport", "worker", role, impl, loop, clock, cpu],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return _Worker(proc)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def run(ctx: BenchContext) -> Iterator[Metric]:
    scale = max(ctx.min_time / 0.2, 0.1)
    n_msgs = int(60_000 * scale)
    bulk_bytes = int((24 << 20) * scale)
    n_rtt = int(1500 * scale)
    n_dgrams = int(40_000 * scale)
    wanted = {
        "msgs": ctx.wants("transport.msgs"),
        "bulk": ctx.wants("transport.bulk"),
        "dgram": ctx.wants("transport.datagrams"),
        "rtt": ctx.wants("rpc.rtt"),
    }
    pairs: dict[str, Pair] = {}

    def pair(impl: str, loop: str = "uvloop", clock: str = "monotonic") -> Pair:
        key = f"{impl}/{loop}/{clock}"
        if key not in pairs:
            pairs[key] = Pair(impl, loop, clock, ctx.pin)
        return pairs[key]

    try:
        ours, raw = pair("ours"), pair("raw", loop="asyncio", clock="looptime")
        if wanted["msgs"]:
            per_packet: dict[str, list[float]] = {"ours": [], "raw": []}

            def msgs(p: Pair, key: str) -> Callable[[], float]:
                def sample() -> float:
                    r = p.run({"op": "msgs", "n": n_msgs, "size": MSG})
                    per_packet[key].append(r["n"] / max(r["packets"], 1))
                    return float(r["n"] / r["seconds"])

                return sample

            s = ctx.interleave({"ours": msgs(ours, "ours"), "raw": msgs(raw, "raw")})
            yield compare("transport.msgs.64B", "msgs/s", s["ours"], "raw-aioquic", s["raw"])
            yield compare("transport.msgs_per_packet", "msgs/packet", per_packet["ours"],
                          "raw-aioquic", per_packet["raw"])
        if wanted["bulk"]:
            def bulk(p: Pair) -> Callable[[], float]:
                def sample() -> float:
                    r = p.run({"op": "bulk", "bytes": bulk_bytes, "chunk": BULK_CHUNK})
                    return float(r["bytes"] / r["seconds"] / 1e6)

                return sample

            s = ctx.interleave({"ours": bulk(ours), "raw": bulk(raw)})
            if ctx.wants("transport.bulk"):
                yield compare("transport.bulk", "MB/s", s["ours"], "raw-aioquic", s["raw"])
            if ctx.wants("transport.bulk.asyncio"):
                ours_aio = pair("ours", loop="asyncio")
                s2 = ctx.interleave({"ours": bulk(ours_aio), "raw": bulk(raw)})
                yield compare("transport.bulk.asyncio", "MB/s", s2["ours"],
                              "raw-aioquic-asyncio", s2["raw"])
            if ctx.wants("transport.bulk.clock"):
                coarse = pair("ours", clock="looptime")
                s3 = ctx.interleave({"ours": bulk(ours), "coarse": bulk(coarse)})
                yield compare("transport.bulk.clock", "MB/s", s3["ours"],
                              "ours-uvloop-loop.time", s3["coarse"])
        if wanted["dgram"]:
            loss: dict[str, list[float]] = {"ours": [], "raw": []}

            def dgrams(p: Pair, key: str) -> Callable[[], float]:
                def sample() -> float:
                    r = p.run({"op": "dgram", "n": n_dgrams, "size": MSG})
                    loss[key].append(1 - r["received"] / r["n"])
                    return float(r["received"] / r["seconds"])

                return sample

            s = ctx.interleave({"ours": dgrams(ours, "ours"), "raw": dgrams(raw, "raw")})
            ctx.log(f"transport.datagrams loss: ours median {statistics.median(loss['ours']):.2%}"
                    f", raw median {statistics.median(loss['raw']):.2%}")
            yield compare("transport.datagrams", "datagrams/s", s["ours"], "raw-aioquic", s["raw"])
        if wanted["rtt"]:
            lat: dict[str, list[list[float]]] = {"ours": [], "raw": []}

            def rtt(p: Pair, key: str) -> Callable[[], float]:
                def sample() -> float:
                    r = p.run({"op": "rtt", "n": n_rtt, "size": MSG})
                    lat[key].append(r["us"])
                    return float(statistics.median(r["us"]))

                return sample

            raw_rpc = pair("raw", loop="uvloop", clock="looptime")
            ctx.interleave({"ours": rtt(ours, "ours"), "raw": rtt(raw_rpc, "raw")})
            for q, name in ((50, "rpc.rtt.p50"), (99, "rpc.rtt.p99")):
                ours_q = [_pct(x, q) for x in lat["ours"][1:]]  # [0] is the warm-up round
                raw_q = [_pct(x, q) for x in lat["raw"][1:]]
                yield compare(name, "us", ours_q, "raw-aioquic-rpc", raw_q, better="lower")
    finally:
        for p in pairs.values():
            p.close()


def _pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


# --- worker side: nunet's QuicNetwork -------------------------------------------------------------


async def _ours_server(clock: Callable[[], float], out: Callable[[dict[str, Any]], None]) -> None:
    from nunet.crypto.keys import KeyPair
    from nunet.net import kinds
    from nunet.net.quic import QuicLimits, QuicNetwork

    limits = QuicLimits(max_datagram_size=PACKET, stream_window=STREAM_WINDOW,
                        connection_window=CONNECTION_WINDOW)
    net = QuicNetwork(KeyPair.generate(), ["/ip4/127.0.0.1/udp/0/quic-v1"], limits=limits,
                      clock=clock)
    counts = {"msgs": 0, "bytes": 0, "dgrams": 0}

    def on_msg(_peer: str, payload: memoryview) -> None:
        counts["msgs"] += 1
        counts["bytes"] += len(payload)

    def on_dgram(_peer: str, _data: bytes) -> None:
        counts["dgrams"] += 1

    async def sync(_peer: str, _payload: memoryview) -> bytes:
        reply = json.dumps(counts).encode()
        counts.update(msgs=0, bytes=0, dgrams=0)
        return reply

    async def echo(_peer: str, payload: memoryview) -> bytes:
        return bytes(payload)

    net.on_message(kinds.PING, on_msg)
    net.on_datagram(on_dgram)
    net.on_request(kinds.DHT, sync)
    net.on_request(kinds.QOS, echo)
    async with net:
        out({"did": net.local_did, "addr": net.listen_addrs()[0]})
        await _until_stdin_closes()


async def _ours_client(clock: Callable[[], float], out: Callable[[dict[str, Any]], None]) -> None:
    from nunet.crypto.keys import KeyPair
    from nunet.net import kinds
    from nunet.net.quic import QuicLimits, QuicNetwork, compat

    limits = QuicLimits(max_datagram_size=PACKET, stream_window=STREAM_WINDOW,
                        connection_window=CONNECTION_WINDOW)
    net = QuicNetwork(KeyPair.generate(), limits=limits, clock=clock)
    async with net:
        did = ""
        async for cmd in _commands():
            op = cmd["op"]
            if op == "connect":
                did = await net.connect(cmd["addr"])
                out({"did": did})
                continue
            n, size = cmd.get("n", 0), cmd.get("size", 0)
            packets0 = net.metrics["packets_out"]
            t0 = time.perf_counter()
            if op == "msgs" or op == "bulk":
                if op == "bulk":
                    size, n = cmd["chunk"], cmd["bytes"] // cmd["chunk"]
                payload = bytes(size)
                for _ in range(n):
                    await net.send(did, kinds.PING, payload)
                counts = json.loads(await net.request(did, kinds.DHT, b"", 60.0))
                elapsed = time.perf_counter() - t0
                assert counts["msgs"] == n, counts
                out({"n": n, "bytes": n * size, "seconds": elapsed,
                     "packets": net.metrics["packets_out"] - packets0})
            elif op == "dgram":
                payload = bytes(size)
                sent = 0
                while sent < n:
                    if net.send_datagram(did, payload):
                        sent += 1
                    else:
                        await asyncio.sleep(0)
                conn = net._peers[did].conn
                assert conn is not None
                quic = conn.session.conn
                await _drained(lambda q=quic: compat.datagrams_pending(q) == 0)
                counts = json.loads(await net.request(did, kinds.DHT, b"", 60.0))
                out({"n": n, "received": counts["dgrams"], "seconds": time.perf_counter() - t0})
            elif op == "rtt":
                payload = bytes(size)
                lat = []
                for _ in range(n):
                    t = time.perf_counter()
                    await net.request(did, kinds.QOS, payload, 5.0)
                    lat.append((time.perf_counter() - t) * 1e6)
                out({"us": lat})


# --- worker side: raw aioquic ---------------------------------------------------------------------


def _raw_config(is_client: bool) -> Any:
    import ssl

    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(
        is_client=is_client, alpn_protocols=["bench"], max_datagram_size=PACKET,
        max_datagram_frame_size=65536, max_stream_data=STREAM_WINDOW,
        max_data=CONNECTION_WINDOW, verify_mode=ssl.CERT_NONE,
    )
    if not is_client:
        from nunet.crypto.keys import KeyPair
        from nunet.net.quic.identity import NodeIdentity

        identity = NodeIdentity(KeyPair.generate())
        config.certificate = identity.certificate
        config.private_key = identity.private_key
    return config


def _raw_protocol() -> Any:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.quic.events import DatagramFrameReceived, QuicEvent, StreamDataReceived

    class RawProtocol(QuicConnectionProtocol):
        """Control on bidi stream 0 (JSON lines); bulk on client uni streams; echo on stream 4."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.data_bytes = 0
            self.dgrams = 0
            self.expect: int | None = None
            self.control = b""
            self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self.echo_buf = 0
            self.echo_waiter: asyncio.Future[None] | None = None
            self.packets = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._transport = _CountingTransport(transport, self)

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, DatagramFrameReceived):
                self.dgrams += 1
            elif isinstance(event, StreamDataReceived):
                sid = event.stream_id
                if sid == 0:
                    self.control += event.data
                    while b"\n" in self.control:
                        line, self.control = self.control.split(b"\n", 1)
                        self._on_control(json.loads(line))
                elif sid == 4:
                    if self._quic.configuration.is_client:
                        self.echo_buf += len(event.data)
                        if self.echo_buf >= MSG and self.echo_waiter is not None:
                            self.echo_buf -= MSG
                            self.echo_waiter.set_result(None)
                    else:
                        self._quic.send_stream_data(4, event.data)
                        self.transmit()
                else:
                    self.data_bytes += len(event.data)
                    self._check_done()

        def _on_control(self, msg: dict[str, Any]) -> None:
            if self._quic.configuration.is_client:
                self.replies.put_nowait(msg)
            elif msg["op"] == "expect":
                self.expect = msg["bytes"]
                self._check_done()
            elif msg["op"] == "dsync":
                self.say({"dgrams": self.dgrams})
                self.dgrams = 0

        def _check_done(self) -> None:
            if self.expect is not None and self.data_bytes >= self.expect:
                self.expect = None
                self.data_bytes = 0
                self.say({"done": True})

        def say(self, msg: dict[str, Any]) -> None:
            self._quic.send_stream_data(0, json.dumps(msg).encode() + b"\n")
            self.transmit()

    return RawProtocol


class _CountingTransport:
    """Counts the UDP datagrams a raw protocol sends (uvloop transports take no new attributes)."""

    def __init__(self, transport: Any, owner: Any) -> None:
        self._transport = transport
        self._owner = owner

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._owner.packets += 1
        self._transport.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def _raw_server(_clock: Callable[[], float], out: Callable[[dict[str, Any]], None]) -> None:
    from aioquic.asyncio import serve

    server = await serve("127.0.0.1", 0, configuration=_raw_config(False),
                         create_protocol=_raw_protocol())
    port = server._transport.get_extra_info("sockname")[1]
    out({"addr": f"/ip4/127.0.0.1/udp/{port}/quic-v1", "did": ""})
    try:
        await _until_stdin_closes()
    finally:
        server.close()


async def _raw_client(_clock: Callable[[], float], out: Callable[[dict[str, Any]], None]) -> None:
    from aioquic.asyncio import connect

    cmd_iter = _commands()
    hello = await anext(cmd_iter)
    port = int(hello["addr"].split("/")[4])
    async with connect("127.0.0.1", port, configuration=_raw_config(True),
                       create_protocol=_raw_protocol()) as connected:
        proto: Any = connected
        quic = proto._quic
        proto.say({"op": "hello"})
        sid = quic.get_next_available_stream_id(is_unidirectional=True)
        out({"did": ""})
        async for cmd in cmd_iter:
            op = cmd["op"]
            n, size = cmd.get("n", 0), cmd.get("size", 0)
            packets0 = proto.packets
            t0 = time.perf_counter()
            if op == "msgs" or op == "bulk":
                if op == "bulk":
                    size, n = cmd["chunk"], cmd["bytes"] // cmd["chunk"]
                message = bytes(size + (2 if size < 0x4000 else 4))  # a frame header's worth
                proto.say({"op": "expect", "bytes": n * len(message)})
                for i in range(n):
                    quic.send_stream_data(sid, message)
                    if i % 256 == 255:
                        proto.transmit()
                        await asyncio.sleep(0)
                proto.transmit()
                reply = await proto.replies.get()
                assert reply.get("done"), reply
                out({"n": n, "bytes": n * size, "seconds": time.perf_counter() - t0,
                     "packets": proto.packets - packets0})
            elif op == "dgram":
                payload = bytes(size)
                for i in range(n):
                    quic.send_datagram_frame(payload)
                    if i % 256 == 255:
                        proto.transmit()
                        await asyncio.sleep(0)
                proto.transmit()
                await _drained(lambda: not quic._datagrams_pending)
                proto.say({"op": "dsync"})
                reply = await proto.replies.get()
                out({"n": n, "received": reply["dgrams"], "seconds": time.perf_counter() - t0})
            elif op == "rtt":
                payload = bytes(size)
                loop = asyncio.get_running_loop()
                lat = []
                for _ in range(n):
                    t = time.perf_counter()
                    proto.echo_waiter = loop.create_future()
                    quic.send_stream_data(4, payload)
                    proto.transmit()
                    await proto.echo_waiter
                    lat.append((time.perf_counter() - t) * 1e6)
                out({"us": lat})


# --- worker plumbing ------------------------------------------------------------------------------


async def _commands() -> Any:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield json.loads(line)


async def _drained(empty: Callable[[], bool]) -> None:
    """Until a sender's queue is empty (polled: aioquic has no event for it)."""
    while True:
        if empty():
            return
        await asyncio.sleep(0.0005)


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


def _worker(role: str, impl: str, loop_name: str, clock_name: str, cpu: str) -> None:
    if cpu != "-" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})

    def out(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    workers = {
        ("server", "ours"): _ours_server,
        ("client", "ours"): _ours_client,
        ("server", "raw"): _raw_server,
        ("client", "raw"): _raw_client,
    }
    main = workers[(role, impl)]

    async def entry() -> None:
        loop = asyncio.get_running_loop()
        clock = time.monotonic if clock_name == "monotonic" else loop.time
        try:
            await main(clock, out)
        except Exception as exc:
            out({"error": f"{type(exc).__name__}: {exc}"})
            raise

    if loop_name == "uvloop":
        import uvloop

        factory: Any = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(entry())


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "worker":
        _worker(*sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.bench_transport worker ROLE IMPL LOOP CLOCK CPU")
