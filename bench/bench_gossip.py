"""Gossip on a 50-node in-memory network (memnet): delivery latency and duplicates.

Setup: 50 nodes in one event loop (uvloop when installed), each dialling 8 random others (about
16 links a node), all subscribed to one topic. A sample publishes 40 messages of 256 bytes from
random nodes, one at a time (spaced so they do not overlap), and records, for every delivery at
every subscriber, the time since `publish` was called. `p50`/`p99` are over a sample's ~1960
deliveries; the figure is the median over the rounds.

Baseline `flood`: the same network, wire items, signature check and de-duplication, but every
node forwards every new message to all its neighbours (no mesh, no gossip): the lowest hop count
possible, and the most duplicates.

Two link settings:
- no link delay (`gossip.latency.p50`, `.p99`): the whole network shares one CPU, so a latency is
  the CPU time of the message's path through the network, queueing included (each hop verifies
  an Ed25519 signature, ~55 us here). It measures our per-hop cost, not a real network.
- 5 ms per link (`...link5ms`): latency is then mostly hops x 5 ms: it shows the mesh's depth.
`gossip.duplicates_per_delivery`: copies received that were already seen, per delivered message.

`gossip.quic50.*`: the same publishes on 50 real `nunet` gossip processes over the QUIC transport
on 127.0.0.1 (each process a `GossipService` on a `QuicNetwork`, uvloop, 8 dials each, as above;
`python -m bench.bench_gossip worker` is one of them). Payloads carry `time.monotonic()` (one
clock for the whole host), receivers record the difference. No baseline: the figure depends on
how many cores share the 50 processes (noted in the machine facts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from bench._harness import BenchContext, Metric, alone, compare

METRICS = (
    "gossip.latency.p50",
    "gossip.latency.p99",
    "gossip.duplicates_per_delivery",
    "gossip.latency.p50.link5ms",
    "gossip.latency.p99.link5ms",
    "gossip.quic50.latency.p50",
    "gossip.quic50.latency.p99",
    "gossip.quic50.duplicates_per_delivery",
)

NODES = 50
DEGREE = 8
MESSAGES = 40
SIZE = 256
TOPIC = "/nunet/deployment"


class Flood:
    """The `flood` baseline: forward every new, verified message to every neighbour."""

    def __init__(self, net: Any, key: Any, deliver: Callable[[bytes], None]) -> None:
        from nunet.net import kinds

        self.net = net
        self.key = key
        self.deliver = deliver
        self.seen: set[bytes] = set()
        self.delivered = 0
        self.duplicates = 0
        self.seqno = 0
        self.sending: set[asyncio.Task[None]] = set()
        net.on_message(kinds.GOSSIP, self.on_message)

    def publish(self, data: bytes) -> bytes:
        from nunet.net.gossip.wire import MessageBody, encode_rpc, sign_body

        self.seqno += 1
        body = MessageBody(self.key.did, self.seqno, TOPIC, data, time.time() + 60)
        msg_id, item = sign_body(self.key, body)
        self.seen.add(msg_id)
        self.forward(encode_rpc([item]), None)
        return msg_id

    def forward(self, rpc: bytes, source: str | None) -> None:
        from nunet.net import kinds

        loop = asyncio.get_running_loop()
        for peer in self.net.connected():
            if peer != source:
                task = loop.create_task(self.net.send(peer, kinds.GOSSIP, rpc))
                self.sending.add(task)
                task.add_done_callback(self.sending.discard)

    def on_message(self, peer: str, data: memoryview) -> None:
        from nunet.net.gossip.wire import (
            Publish,
            decode_body,
            decode_rpc,
            encode_rpc,
            message_id,
            verify_publish,
        )

        for item in decode_rpc(data):
            if not isinstance(item, Publish):
                continue
            msg_id = message_id(item.body)
            if msg_id in self.seen:
                self.duplicates += 1
                continue
            verify_publish(decode_body(item.body), item)
            self.seen.add(msg_id)
            self.delivered += 1
            self.deliver(msg_id)
            self.forward(encode_rpc([item]), peer)


class Bed:
    """One 50-node network running either protocol, and a way to time deliveries on it."""

    def __init__(self, protocol: str, link_delay: float, seed: int = 1) -> None:
        from nunet.crypto.keys import KeyPair
        from nunet.net.gossip import GossipParams
        from nunet.net.gossip.service import GossipService
        from nunet.testing.memnet import MemoryHub

        self.protocol = protocol
        self.rng = random.Random(seed)
        self.hub = MemoryHub()
        self.hub.delay = lambda _a, _b: link_delay
        self.keys = [KeyPair.from_seed(self.rng.randbytes(32)) for _ in range(NODES)]
        self.nets = [self.hub.node(k.did) for k in self.keys]
        self.sent_at: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.expected = MESSAGES * (NODES - 1)
        self.all_in = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        params = GossipParams(heartbeat_interval=0.2)
        self.nodes: list[Any] = []
        for i, (net, key) in enumerate(zip(self.nets, self.keys, strict=True)):
            if protocol == "gossip":
                self.nodes.append(GossipService(net, key, params, rng=random.Random(i)))
            else:
                self.nodes.append(Flood(net, key, self.on_deliver))

    def on_deliver(self, msg_id: bytes) -> None:
        self.latencies.append(time.perf_counter() - self.sent_at[msg_id])
        if len(self.latencies) == self.expected:
            self.all_in.set()

    async def start(self) -> None:
        from nunet.testing.memnet import mem_addr

        if self.protocol == "gossip":
            ready = [asyncio.Event() for _ in self.nodes]
            self.tasks = [
                asyncio.create_task(s.run(e.set)) for s, e in zip(self.nodes, ready, strict=True)
            ]
            await asyncio.gather(*(e.wait() for e in ready))
            for s in self.nodes:
                s.subscribe(TOPIC, lambda m: self.on_deliver(m.id))
        for i, net in enumerate(self.nets):
            for j in self.rng.sample([j for j in range(NODES) if j != i], DEGREE):
                await net.connect(mem_addr(self.keys[j].did))
        await asyncio.sleep(2.0)  # subscriptions spread, meshes form

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def counters(self) -> tuple[int, int]:
        if self.protocol == "gossip":
            stats = [s.router.stats for s in self.nodes]
            return sum(s.duplicates for s in stats), sum(s.delivered for s in stats)
        return sum(f.duplicates for f in self.nodes), sum(f.delivered for f in self.nodes)

    async def sample(self, spacing: float) -> tuple[float, float, float]:
        """(p50 ms, p99 ms, duplicates per delivery) over MESSAGES publishes."""
        self.latencies = []
        self.all_in.clear()
        dups0, delivered0 = self.counters()
        data = bytes(SIZE)
        for n in range(MESSAGES):
            node = self.nodes[self.rng.randrange(NODES)]
            payload = n.to_bytes(4, "big") + data[4:]
            started = time.perf_counter()
            msg_id = (
                node.publish(TOPIC, payload)
                if self.protocol == "gossip"
                else (node.publish(payload))
            )
            self.sent_at[msg_id] = started
            await asyncio.sleep(spacing)
        await asyncio.wait_for(self.all_in.wait(), 10.0)  # the last messages' stragglers
        await asyncio.sleep(spacing)  # and their duplicates
        dups, delivered = self.counters()
        assert len(self.latencies) == self.expected, "a message was delivered twice"
        cuts = statistics.quantiles(self.latencies, n=100)
        return cuts[49] * 1e3, cuts[98] * 1e3, (dups - dups0) / (delivered - delivered0)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _measure(
    ctx: BenchContext, link_delay: float, spacing: float
) -> dict[str, list[tuple[float, float, float]]]:
    loop = _new_loop()
    try:
        beds = {p: Bed(p, link_delay) for p in ("gossip", "flood")}
        for bed in beds.values():
            loop.run_until_complete(bed.start())
        results: dict[str, list[tuple[float, float, float]]] = {p: [] for p in beds}
        for bed in beds.values():  # warm-up
            loop.run_until_complete(bed.sample(spacing))
        for _ in range(ctx.repeats):
            for name, bed in beds.items():
                results[name].append(loop.run_until_complete(bed.sample(spacing)))
        for bed in beds.values():
            loop.run_until_complete(bed.stop())
        return results
    finally:
        loop.close()


# --- 50 processes over QUIC ---------------------------------------------------------------------


async def _worker(index: int, seed: int) -> None:
    """One node: prints `DID ADDR`, reads the addresses to dial (a JSON list), prints `ready`,
    then obeys `publish`, `report` (prints a JSON line) and `quit`, one per line on stdin."""
    import blake3

    from nunet.crypto.keys import KeyPair
    from nunet.errors import NunetError
    from nunet.net.gossip import GossipParams, Message
    from nunet.net.gossip.service import GossipService
    from nunet.net.quic import QuicNetwork

    key = KeyPair.from_seed(blake3.blake3(b"%d:%d" % (seed, index)).digest())
    latencies: list[float] = []

    def on_message(message: Message) -> None:
        latencies.append(time.monotonic() - struct.unpack_from(">d", message.data)[0])

    async with QuicNetwork(key, ["/ip4/127.0.0.1/udp/0/quic-v1"]) as net:
        service = GossipService(net, key, GossipParams(), rng=random.Random(index))
        ready = asyncio.Event()
        task = asyncio.create_task(service.run(ready.set))
        await ready.wait()
        service.subscribe(TOPIC, on_message)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(key.did, net.listen_addrs()[0], flush=True)
        for addr in json.loads(await reader.readline()):
            try:
                await net.connect(addr)
            except NunetError as exc:
                print(f"worker {index}: cannot dial {addr}: {exc}", file=sys.stderr)
        print("ready", flush=True)
        while line := (await reader.readline()).decode().strip():
            if line == "publish":
                service.publish(TOPIC, struct.pack(">d", time.monotonic()) + bytes(SIZE - 8))
            elif line == "report":
                stats = service.router.stats
                report = {
                    "latencies": latencies,
                    "duplicates": stats.duplicates,
                    "delivered": stats.delivered,
                    "stats": service.stats(),
                }
                print(json.dumps(report), flush=True)
                latencies = []
            elif line == "quit":
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _tell(proc: subprocess.Popen[str], line: str) -> None:
    stdin: IO[str] | None = proc.stdin
    assert stdin is not None
    stdin.write(line + "\n")
    stdin.flush()


def _hear(proc: subprocess.Popen[str]) -> str:
    stdout: IO[str] | None = proc.stdout
    assert stdout is not None
    line = stdout.readline()
    if not line:
        raise RuntimeError(f"a gossip worker exited (status {proc.wait()})")
    return line.strip()


def _quic50(ctx: BenchContext) -> list[tuple[float, float, float]]:
    rng = random.Random(1)
    cmd = [sys.executable, "-m", "bench.bench_gossip", "worker"]
    procs = [
        subprocess.Popen(
            [*cmd, str(i), "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for i in range(NODES)
    ]
    try:
        addrs = [_hear(p).split()[1] for p in procs]
        for i, proc in enumerate(procs):
            picks = rng.sample([j for j in range(NODES) if j != i], DEGREE)
            _tell(proc, json.dumps([addrs[j] for j in picks]))
        for proc in procs:
            if _hear(proc) != "ready":
                raise RuntimeError("a gossip worker did not get ready")
        time.sleep(3.0)  # subscriptions spread, meshes form (1 s heartbeats)
        totals = [(0, 0)] * NODES
        samples = []
        for round_ in range(ctx.repeats + 1):
            for _ in range(MESSAGES):
                _tell(procs[rng.randrange(NODES)], "publish")
                time.sleep(0.2)  # ~70 ms of CPU a message network-wide: keep them apart
            latencies: list[float] = []
            dups = delivered = 0
            expected = MESSAGES * (NODES - 1)
            for _ in range(20):  # stragglers: IHAVE/IWANT can take a few 1 s heartbeats
                time.sleep(0.5)
                for i, proc in enumerate(procs):
                    _tell(proc, "report")
                    report = json.loads(_hear(proc))
                    latencies += report["latencies"]
                    dups += report["duplicates"] - totals[i][0]
                    delivered += report["delivered"] - totals[i][1]
                    totals[i] = (report["duplicates"], report["delivered"])
                if len(latencies) >= expected:
                    break
            if len(latencies) != expected:
                raise RuntimeError(f"{len(latencies)} deliveries, not {expected}")
            if round_:  # the first round warms up
                cuts = statistics.quantiles(latencies, n=100)
                samples.append((cuts[49] * 1e3, cuts[98] * 1e3, dups / delivered))
        return samples
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    _tell(proc, "quit")
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(ctx: BenchContext) -> Iterator[Metric]:
    if any(ctx.wants(m) for m in METRICS[5:]):
        q = _quic50(ctx)
        yield alone("gossip.quic50.latency.p50", "ms", [x[0] for x in q], "lower")
        yield alone("gossip.quic50.latency.p99", "ms", [x[1] for x in q], "lower")
        yield alone("gossip.quic50.duplicates_per_delivery", "copies", [x[2] for x in q], "lower")
    with ctx.pinned(0):
        if any(ctx.wants(m) for m in METRICS[:3]):
            r = _measure(ctx, 0.0, 0.02)
            g, f = r["gossip"], r["flood"]
            yield compare(
                "gossip.latency.p50", "ms", [x[0] for x in g], "flood", [x[0] for x in f], "lower"
            )
            yield compare(
                "gossip.latency.p99", "ms", [x[1] for x in g], "flood", [x[1] for x in f], "lower"
            )
            yield compare(
                "gossip.duplicates_per_delivery",
                "copies",
                [x[2] for x in g],
                "flood",
                [x[2] for x in f],
                "lower",
            )
        if any(ctx.wants(m) for m in METRICS[3:]):
            r = _measure(ctx, 0.005, 0.08)
            g, f = r["gossip"], r["flood"]
            yield compare(
                "gossip.latency.p50.link5ms",
                "ms",
                [x[0] for x in g],
                "flood",
                [x[0] for x in f],
                "lower",
            )
            yield compare(
                "gossip.latency.p99.link5ms",
                "ms",
                [x[1] for x in g],
                "flood",
                [x[1] for x in f],
                "lower",
            )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        import uvloop

        uvloop.run(_worker(int(sys.argv[2]), int(sys.argv[3])))
    else:
        sys.exit("usage: python -m bench.bench_gossip worker INDEX SEED")
