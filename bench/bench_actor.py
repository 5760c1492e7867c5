"""Actor runtime: messages/s between two processes, RPC round trips and the receive path's parts,
each against a baseline measured in the same run (A B A B interleaved).

Two-process phases: a receiver worker (CPU 0) and a sender worker (CPU 1), both `QuicNetwork`s on
uvloop with the high-resolution clock (as `nunet run`), one connection, each running an
`ActorSystem` whose trust context takes the other's DID as a root; the workers live for the whole
run and are driven over stdin/stdout (one JSON line per command), as in `bench_transport.py`.

- `actor.msgs.64B`: one-way `Actor.send` of 64 B payloads from the sender's root actor to a plain
  function behaviour (the inline fast path) that counts; every envelope carries the sender's
  capability chain and is admitted by the receiver in full (expiry, session, cached chain check,
  lookup, limits). Counted at the receiver: a final `invoke` returns the count, which must equal
  what was sent (one stream: it arrives after them). Baseline `dms-style`, over the same
  connection and processes: what NuNet DMS does per message, written here: a JSON envelope (the
  DMS shape, payload and tokens base64) signed per message with PyNaCl (`SigningKey.sign` over
  `dms:msg:` + the JSON without its signature, as DMS signs re-serialised JSON), and on receipt
  JSON decode, expiry, the Ed25519 check (`crypto_sign_open`), then the same capability chain
  verified from scratch (our native verifier with its cache cleared per message: cheaper than
  DMS's nested JSON chains, so the baseline is generous), then the handler. Goal: ratio >= 5 and
  >= 100k msgs/s.
- `actor.msgs.signed.64B`: the same with `sign=True` (what a child actor's or evidence envelopes
  cost: Ed25519 sign, verify and the replay table per message), against the same `dms-style`.
- `actor.msgs_vs_transport.64B`: the same actor messages against `quic-same-bytes`: the very
  bytes our path sends once the chain is acknowledged (a chain-reference frame: the envelope
  without its token), encoded once and sent as opaque `QuicNetwork.send` messages to a handler
  that only counts them, on the same connection: the transport's ceiling for messages of this
  size, so the ratio is the share of it the actor layer keeps.
- `actor.msgs_per_packet`: envelopes per UDP packet the sender sent (ours; baseline dms-style).
- `actor.rpc.rtt.p50`, `.p99` (us): sequential `Actor.invoke` of a plain echo behaviour (64 B),
  against `raw-aioquic-rpc`: `bench_transport`'s raw aioquic ping-pong worker pair (uvloop, a
  64 B echo on one bidirectional stream). Goal: ratio <= 1.5.
- `actor.rpc.rtt_vs_transport.p50`, `.p99` (us): the same invocations against
  `QuicNetwork.request` (our transport's own request/reply) on the same connection: what the
  actor layer adds to the transport.

In-process phases (one thread, pinned to CPU 0):
- `actor.envelope.decode` (us): strict `envelope.decode` (schema, bounds, paths, re-encode and
  compare) of a 64 B-payload envelope with its one-token chain, against `msgspec-decode` (the
  same struct decoded without any check).
- `actor.admit.cached` (us): `Dispatcher.admit` + `release` of an unsigned session envelope whose
  chain is cached, against `ucan-verify-cached` (the chain check it contains, called alone).
  Each message is freshly decoded (so no bytes object arrives with a cached hash); the decode
  is measured alongside and subtracted per round.
- `actor.receive.64B`, `.signed.64B` (msgs/s): the whole receive path the network calls per
  frame (`ActorSystem._on_message`: decode, authenticate, authorize, handler, release), against
  `dms-style` receive (JSON decode, signature check, chain from scratch, handler). Signed
  envelopes are pre-signed with distinct nonces; the replay table is reset when the pool wraps.
- `actor.send.64B` (msgs/s): making and encoding an outgoing envelope (`Actor._envelope` with
  its cached chain, `encode`), against the `dms-style` sender (JSON with base64, signed).
- `actor.envelope.bytes.64B` (B): the wire size of our envelope against the `dms-style` JSON one.

Worker usage (what the parent spawns): `python -m bench.bench_actor worker ROLE CPU SEED_HEX
PEER_SEED_HEX`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from bench._harness import BenchContext, Metric, Sample, compare
from bench.bench_transport import ROOT, Pair, _cpus, _pct, _Worker
from nunet.actor.handle import Handle

METRICS = (
    "actor.msgs.64B",
    "actor.msgs.signed.64B",
    "actor.msgs_vs_transport.64B",
    "actor.msgs_per_packet",
    "actor.rpc.rtt.p50",
    "actor.rpc.rtt.p99",
    "actor.rpc.rtt_vs_transport.p50",
    "actor.rpc.rtt_vs_transport.p99",
    "actor.envelope.decode",
    "actor.admit.cached",
    "actor.receive.64B",
    "actor.receive.signed.64B",
    "actor.send.64B",
    "actor.envelope.bytes.64B",
)

MSG = 64
SINK, ECHO, COUNT = "/bench/sink", "/bench/echo", "/bench/count"
DMS_DOMAIN = b"dms:msg:"
LOOPBACK = ["/ip4/127.0.0.1/udp/0/quic-v1"]
SIGNED_POOL = 4096  # pre-signed envelopes for the in-process signed path (= replay table size)


# --- the DMS-style path ---------------------------------------------------------------------------


class DmsOptions(msgspec.Struct):
    expiry: int
    cont: str = ""
    topic: str = ""


class DmsEnvelope(msgspec.Struct):
    """DMS's envelope in JSON (lib/actor: to, behavior, from, nonce, options, message, signature);
    bytes fields are base64 in JSON."""

    to: Handle
    behavior: str
    sender: Handle = msgspec.field(name="from")
    nonce: int = 0
    options: DmsOptions = msgspec.field(default_factory=lambda: DmsOptions(0))
    message: bytes = b""
    capabilities: list[bytes] = []
    signature: bytes = b""


_json_encode = msgspec.json.encode
_json_decoder = msgspec.json.Decoder(DmsEnvelope)


class DmsSender:
    """Builds, per message, a JSON envelope signed with PyNaCl."""

    def __init__(self, seed: bytes, me: Handle, to: Handle, tokens: tuple[bytes, ...]) -> None:
        import random

        import nacl.signing

        self._key = nacl.signing.SigningKey(seed)
        self._me, self._to, self._tokens = me, to, list(tokens)
        self._rng = random.Random(seed)

    def envelope(self, behavior: str, payload: bytes, lifetime: float = 30.0) -> bytes:
        env = DmsEnvelope(
            to=self._to,
            behavior=behavior,
            sender=self._me,
            nonce=self._rng.getrandbits(63),
            options=DmsOptions(int((time.time() + lifetime) * 1e9)),
            message=payload,
            capabilities=self._tokens,
        )
        signature = self._key.sign(DMS_DOMAIN + _json_encode(env)).signature
        return _json_encode(msgspec.structs.replace(env, signature=signature))


class DmsReceiver:
    """Per message: decode, expiry, envelope signature, the whole chain from scratch, handler."""

    def __init__(self, local_did: str, roots: set[str]) -> None:
        from nunet.ucan import ChainVerifier

        self.local_did = local_did
        self.verifier = ChainVerifier(roots, {}, {})
        self.behaviors: dict[str, Callable[[DmsEnvelope], None]] = {}
        self.rejected = 0

    def receive(self, data: bytes | memoryview) -> None:
        import nacl.bindings
        import nacl.exceptions

        from nunet.crypto.did import public_key_from_did

        env = _json_decoder.decode(data)
        now = time.time()
        if env.options.expiry <= now * 1e9:
            self.rejected += 1
            return
        unsigned = _json_encode(msgspec.structs.replace(env, signature=b""))
        try:
            nacl.bindings.crypto_sign_open(
                env.signature + DMS_DOMAIN + unsigned, public_key_from_did(env.sender.did)
            )
        except nacl.exceptions.CryptoError:
            self.rejected += 1
            return
        tokens = env.capabilities
        self.verifier.clear()  # no cache: DMS verifies the chain on every message
        self.verifier.verify(
            tokens[0],
            tokens[1:],
            now,
            capability=env.behavior,
            holder=env.sender.did,
            receiver=self.local_did,
        )
        self.behaviors[env.behavior](env)


# --- parent side ----------------------------------------------------------------------------------


class ActorPair:
    """A receiver and a sender worker, their actor systems trusting each other."""

    def __init__(self, pin: bool) -> None:
        from nunet.crypto.keys import KeyPair

        seeds = [KeyPair.generate().seed.hex() for _ in range(2)]
        cpus = ("0", "1") if pin and _cpus() >= 2 else ("-", "-")
        self.server = _spawn("server", cpus[0], seeds[0], seeds[1])
        hello = self.server.read()
        self.client = _spawn("client", cpus[1], seeds[1], seeds[0])
        self.client.ask({"op": "connect", **hello})

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        return self.client.ask(command)

    def close(self) -> None:
        self.client.stop()
        self.server.stop()


def _spawn(role: str, cpu: str, seed: str, peer_seed: str) -> _Worker:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_actor", "worker", role, cpu, seed, peer_seed],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return _Worker(proc)


def run(ctx: BenchContext) -> Iterator[Metric]:
    yield from _in_process(ctx)
    if not any(ctx.wants(n) for n in ("actor.msgs", "actor.rpc")):
        return
    scale = max(ctx.min_time / 0.2, 0.1)
    n_ours, n_signed, n_dms = int(20_000 * scale), int(8_000 * scale), int(2_500 * scale)
    n_rtt = int(1000 * scale)
    pairs: list[ActorPair | Pair] = []
    try:
        actors = ActorPair(ctx.pin)
        pairs.append(actors)
        if ctx.wants("actor.msgs"):
            per_packet: dict[str, list[float]] = {"ours": [], "signed": [], "dms": [],
                                                  "bytes": []}

            def msgs(op: str, n: int, key: str) -> Sample:
                def sample() -> float:
                    r = actors.run({"op": op, "n": n})
                    per_packet[key].append(r["n"] / max(r["packets"], 1))
                    return float(r["n"] / r["seconds"])

                return sample

            candidates = {"ours": msgs("actor", n_ours, "ours"), "dms": msgs("dms", n_dms, "dms")}
            if ctx.wants("actor.msgs.signed"):
                candidates["signed"] = msgs("signed", n_signed, "signed")
            if ctx.wants("actor.msgs_vs_transport"):
                candidates["bytes"] = msgs("bytes", n_ours, "bytes")
            s = ctx.interleave(candidates)
            yield compare("actor.msgs.64B", "msgs/s", s["ours"], "dms-style", s["dms"])
            if "bytes" in s:
                yield compare("actor.msgs_vs_transport.64B", "msgs/s", s["ours"],
                              "quic-same-bytes", s["bytes"])
            if "signed" in s:
                yield compare("actor.msgs.signed.64B", "msgs/s", s["signed"], "dms-style", s["dms"])
            yield compare("actor.msgs_per_packet", "msgs/packet", per_packet["ours"][1:],
                          "dms-style", per_packet["dms"][1:])
        if ctx.wants("actor.rpc"):
            lat: dict[str, list[list[float]]] = {"ours": [], "net": [], "raw": []}

            def rtt(p: ActorPair | Pair, op: str, key: str) -> Sample:
                def sample() -> float:
                    r = p.run({"op": op, "n": n_rtt, "size": MSG})
                    lat[key].append(r["us"])
                    return float(statistics.median(r["us"]))

                return sample

            raw = Pair("raw", "uvloop", "looptime", ctx.pin)
            pairs.append(raw)
            ctx.interleave({
                "ours": rtt(actors, "rtt", "ours"),
                "net": rtt(actors, "rtt_net", "net"),
                "raw": rtt(raw, "rtt", "raw"),
            })
            for q in (50, 99):
                ours_q = [_pct(x, q) for x in lat["ours"][1:]]  # [0] is the warm-up round
                net_q = [_pct(x, q) for x in lat["net"][1:]]
                raw_q = [_pct(x, q) for x in lat["raw"][1:]]
                yield compare(f"actor.rpc.rtt.p{q}", "us", ours_q, "raw-aioquic-rpc", raw_q,
                              better="lower")
                yield compare(f"actor.rpc.rtt_vs_transport.p{q}", "us", ours_q,
                              "quic-network-request", net_q, better="lower")
    finally:
        for p in pairs:
            p.close()


# --- in-process phases ----------------------------------------------------------------------------


def _in_process(ctx: BenchContext) -> Iterator[Metric]:
    wanted = [n for n in METRICS if ctx.wants(n) and not n.startswith(("actor.msgs", "actor.rpc"))]
    if not wanted:
        return
    results: list[Metric] = []

    async def main() -> None:
        with ctx.pinned(0):
            async with _LocalPair() as pair:
                results.extend(_local_metrics(ctx, pair))

    import uvloop

    uvloop.run(main())
    yield from results


class _LocalPair:
    """A receiving ActorSystem on memnet (running, so its receive path works) and a sender's
    envelopes to it, made as the sender's root actor makes them."""

    async def __aenter__(self) -> _LocalPair:
        from nunet.actor.runtime import ActorSystem
        from nunet.crypto.keys import KeyPair
        from nunet.testing.memnet import MemoryHub
        from nunet.ucan import TrustContext

        hub = MemoryHub()
        self.keys = KeyPair.generate(), KeyPair.generate()
        sender_key, receiver_key = self.keys
        self.sender = ActorSystem(hub.node(sender_key.did), sender_key,
                                  TrustContext([receiver_key.did], did=sender_key.did))
        self.receiver = ActorSystem(hub.node(receiver_key.did), receiver_key,
                                    TrustContext([sender_key.did], did=receiver_key.did))
        self.count = 0

        def sink(_message: object) -> None:
            self.count += 1

        self.receiver.root.add_behavior(SINK, sink)
        self._tasks = []
        for system in (self.sender, self.receiver):
            ready = asyncio.Event()
            self._tasks.append(asyncio.create_task(system.run(ready.set)))
            await ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def envelope(self, *, sign: bool = False, nonce: int | None = None) -> Any:
        """Unsigned envelopes live for an hour (the phases reuse one); signed ones within the
        replay window."""
        root = self.sender.root
        lifetime = 250.0 if sign else 3600.0
        return root._envelope(self.receiver.root.handle, SINK, bytes(MSG), lifetime, "", "",
                              self.sender.nonce() if nonce is None else nonce, sign, None)

    def dms(self) -> DmsSender:
        root = self.sender.root
        tokens = root.capabilities.tokens(SINK, None, time.time())
        return DmsSender(self.keys[0].seed, root.handle, self.receiver.root.handle, tokens)


def _us_per(ctx: BenchContext, once: Callable[[], int]) -> Sample:
    rate = ctx.rate(once)
    return lambda: 1e6 / rate()


def _local_metrics(ctx: BenchContext, pair: _LocalPair) -> Iterator[Metric]:
    from nunet.actor.envelope import WireEnvelope, decode
    from nunet.actor.replay import ReplayGuard

    batch = 200
    receiver = pair.receiver
    dispatcher = receiver.dispatcher
    peer = pair.keys[0].did
    raw = pair.envelope().encode()
    dms_sender = pair.dms()
    dms_raw = dms_sender.envelope(SINK, bytes(MSG), lifetime=3600.0)
    dms = DmsReceiver(receiver.did, {peer})
    dms_count = [0]

    def dms_sink(_env: DmsEnvelope) -> None:
        dms_count[0] += 1

    dms.behaviors[SINK] = dms_sink
    plain = msgspec.msgpack.Decoder(WireEnvelope)

    def strict_decode() -> int:
        for _ in range(batch):
            decode(raw)
        return batch

    def plain_decode() -> int:
        for _ in range(batch):
            plain.decode(raw)
        return batch

    def decode_admit() -> int:
        now = time.time()
        for _ in range(batch):
            env = decode(raw)
            dispatcher.release(dispatcher.admit(env, session_did=peer, now=now, raw=raw))
        return batch

    verify = receiver.trust.verifier.verify
    here = receiver.did

    def decode_verify() -> int:
        now = time.time()
        for _ in range(batch):
            env = decode(raw)
            caps = env.capabilities
            verify(caps[0], caps[1:], now, capability=SINK, holder=peer, receiver=here)
        return batch

    view = memoryview(raw)
    on_message = receiver._on_message

    def receive() -> int:
        for _ in range(batch):
            on_message(peer, view)
        return batch

    signed: list[memoryview] = []
    position = [0]

    def receive_signed() -> int:
        if not signed:  # made here, just before use: they live 250 s
            signed.extend(memoryview(pair.envelope(sign=True, nonce=i + 1).encode())
                          for i in range(SIGNED_POOL))
        i = position[0]
        if i + batch > len(signed):
            i = 0
            dispatcher.replay = ReplayGuard(window_ns=dispatcher.replay.window_ns)
        for data in signed[i : i + batch]:
            on_message(peer, data)
        position[0] = i + batch
        return batch

    dms_view = memoryview(dms_raw)

    def dms_receive() -> int:
        for _ in range(batch):
            dms.receive(dms_view)
        return batch

    def send() -> int:
        for _ in range(batch):
            pair.envelope().encode()
        return batch

    def dms_send() -> int:
        for _ in range(batch):
            dms_sender.envelope(SINK, bytes(MSG))
        return batch

    if ctx.wants("actor.envelope.decode"):
        s = ctx.interleave({"ours": _us_per(ctx, strict_decode),
                            "base": _us_per(ctx, plain_decode)})
        yield compare("actor.envelope.decode", "us", s["ours"], "msgspec-decode", s["base"],
                      better="lower")
    if ctx.wants("actor.admit.cached"):
        s = ctx.interleave({"admit": _us_per(ctx, decode_admit),
                            "verify": _us_per(ctx, decode_verify),
                            "decode": _us_per(ctx, strict_decode)})
        admit = [a - d for a, d in zip(s["admit"], s["decode"], strict=True)]
        chain = [v - d for v, d in zip(s["verify"], s["decode"], strict=True)]
        yield compare("actor.admit.cached", "us", admit, "ucan-verify-cached", chain,
                      better="lower")
    if ctx.wants("actor.receive"):
        before = dict(receiver.rejections)
        candidates = {"ours": ctx.rate(receive), "dms": ctx.rate(dms_receive)}
        if ctx.wants("actor.receive.signed"):
            candidates["signed"] = ctx.rate(receive_signed)
        s = ctx.interleave(candidates)
        if dict(receiver.rejections) != before or dms.rejected:
            raise AssertionError(f"refusals in the receive path: {receiver.rejections}")
        yield compare("actor.receive.64B", "msgs/s", s["ours"], "dms-style", s["dms"])
        if "signed" in s:
            yield compare("actor.receive.signed.64B", "msgs/s", s["signed"], "dms-style",
                          s["dms"])
    if ctx.wants("actor.send"):
        s = ctx.interleave({"ours": ctx.rate(send), "dms": ctx.rate(dms_send)})
        yield compare("actor.send.64B", "msgs/s", s["ours"], "dms-style", s["dms"])
    if ctx.wants("actor.envelope.bytes"):
        yield compare("actor.envelope.bytes.64B", "B", [float(len(raw))], "dms-style",
                      [float(len(dms_raw))], better="lower")


# --- workers --------------------------------------------------------------------------------------


async def _server(seed: bytes, peer_seed: bytes, out: Callable[[dict[str, Any]], None]) -> None:
    from nunet.actor.runtime import ActorSystem, Message
    from nunet.crypto.keys import KeyPair
    from nunet.net import kinds
    from nunet.net.quic import QuicNetwork
    from nunet.ucan import TrustContext

    key, peer = KeyPair.from_seed(seed), KeyPair.from_seed(peer_seed)
    net = QuicNetwork(key, LOOPBACK, clock=time.monotonic)
    system = ActorSystem(net, key, TrustContext([peer.did], did=key.did))
    count = [0]

    def sink(_message: Message) -> None:
        count[0] += 1

    def echo(message: Message) -> bytes:
        return message.payload

    def counted(_message: Message) -> bytes:
        reply = json.dumps({"n": count[0], "rejections": dict(system.rejections)}).encode()
        count[0] = 0
        return reply

    dms = DmsReceiver(key.did, {peer.did})
    counts = {"dms": 0, "bytes": 0}

    def dms_sink(_env: DmsEnvelope) -> None:
        counts["dms"] += 1

    dms.behaviors[SINK] = dms_sink

    def dms_message(_peer: str, payload: memoryview) -> None:
        dms.receive(payload)

    def opaque(_peer: str, _payload: memoryview) -> None:
        counts["bytes"] += 1

    async def net_counted(_peer: str, which: memoryview) -> bytes:
        key = bytes(which).decode()
        reply = json.dumps({"n": counts[key], "rejections": {"dms": dms.rejected}}).encode()
        counts[key] = 0
        return reply

    async def net_echo(_peer: str, payload: memoryview) -> bytes:
        return bytes(payload)

    system.root.add_behavior(SINK, sink)
    system.root.add_behavior(ECHO, echo)
    system.root.add_behavior(COUNT, counted)
    net.on_message(kinds.PING, dms_message)
    net.on_message(kinds.BENCH, opaque)
    net.on_request(kinds.DHT, net_counted)
    net.on_request(kinds.QOS, net_echo)
    async with net, asyncio.TaskGroup() as tg:
        ready = asyncio.Event()
        task = tg.create_task(system.run(ready.set))
        await ready.wait()
        out({"did": net.local_did, "addr": net.listen_addrs()[0]})
        await _until_stdin_closes()
        task.cancel()


async def _client(seed: bytes, peer_seed: bytes, out: Callable[[dict[str, Any]], None]) -> None:
    from nunet.actor import chains
    from nunet.actor.handle import ROOT_INBOX
    from nunet.actor.runtime import ActorSystem
    from nunet.crypto.keys import KeyPair
    from nunet.net import kinds
    from nunet.net.quic import QuicNetwork
    from nunet.ucan import TrustContext

    key, peer = KeyPair.from_seed(seed), KeyPair.from_seed(peer_seed)
    net = QuicNetwork(key, clock=time.monotonic)
    system = ActorSystem(net, key, TrustContext([peer.did], did=key.did))
    to = Handle.for_actor(peer.did, peer.did, ROOT_INBOX)
    root = system.root
    dms = DmsSender(seed, root.handle, to, root.capabilities.tokens(SINK, None, time.time()))
    # The bytes our path puts on the wire once the chain is acknowledged (a REF frame: the
    # envelope without its chain), resent as they are (never decoded).
    env = root._envelope(to, SINK, bytes(MSG), 30.0, "", "", 1, False, None)
    envelope_bytes = (bytes((chains.REF,)) + bytes(chains.ID_SIZE)
                      + msgspec.structs.replace(env, capabilities=()).encode())
    async with net, asyncio.TaskGroup() as tg:
        ready = asyncio.Event()
        task = tg.create_task(system.run(ready.set))
        await ready.wait()
        async for cmd in _commands():
            op, n = cmd["op"], cmd.get("n", 0)
            payload = bytes(cmd.get("size", MSG))
            if op == "connect":
                await net.connect(cmd["addr"])
                out({"did": peer.did})
                continue
            packets0 = net.metrics["packets_out"]
            t0 = time.perf_counter()
            if op in ("actor", "signed"):
                sign = op == "signed"
                for _ in range(n):
                    await root.send(to, SINK, payload, sign=sign)
                counts = json.loads(await root.invoke(to, COUNT, b"", timeout=120.0))
            elif op == "dms":
                for _ in range(n):
                    await net.send(peer.did, kinds.PING, dms.envelope(SINK, payload))
                counts = json.loads(await net.request(peer.did, kinds.DHT, b"dms", 120.0))
            elif op == "bytes":
                for _ in range(n):
                    await net.send(peer.did, kinds.BENCH, envelope_bytes)
                counts = json.loads(await net.request(peer.did, kinds.DHT, b"bytes", 120.0))
            elif op in ("rtt", "rtt_net"):
                lat = []
                for _ in range(n):
                    t = time.perf_counter()
                    if op == "rtt":
                        await root.invoke(to, ECHO, payload, timeout=5.0)
                    else:
                        await net.request(peer.did, kinds.QOS, payload, 5.0)
                    lat.append((time.perf_counter() - t) * 1e6)
                out({"us": lat})
                continue
            else:
                raise ValueError(f"unknown op {op!r}")
            elapsed = time.perf_counter() - t0
            if counts["n"] != n or any(counts["rejections"].values()):
                raise RuntimeError(f"sent {n}, the receiver counted {counts}")
            out({"n": n, "seconds": elapsed, "packets": net.metrics["packets_out"] - packets0})
        task.cancel()


async def _commands() -> Any:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield json.loads(line)


async def _until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def _worker(role: str, cpu: str, seed_hex: str, peer_hex: str) -> None:
    import uvloop

    if cpu != "-" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})

    def out(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    main = _server if role == "server" else _client

    async def entry() -> None:
        try:
            await main(bytes.fromhex(seed_hex), bytes.fromhex(peer_hex), out)
        except* asyncio.CancelledError:
            pass
        except* Exception as group:
            out({"error": "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)})
            raise

    uvloop.run(entry())


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "worker":
        _worker(*sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.bench_actor worker ROLE CPU SEED_HEX PEER_SEED_HEX")
