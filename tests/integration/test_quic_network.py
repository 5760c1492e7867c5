"""QUIC-specific behaviour of the connection manager on loopback: simultaneous dials, restarts,
backpressure against a stopped process, idle timeout, peer limit, coalescing, clean shutdown,
uvloop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Callable

import pytest

from nunet.crypto.keys import KeyPair
from nunet.errors import ConfigError, PeerUnreachable
from nunet.net import kinds
from nunet.net.quic import QuicLimits, QuicNetwork
from nunet.net.quic.endpoint import Connection

LIMITS = QuicLimits(handshake_timeout=1.0, dial_timeout=2.0, close_timeout=0.5)
LOOPBACK = ["/ip4/127.0.0.1/udp/0/quic-v1"]


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.005)


def live(net: QuicNetwork) -> list[Connection]:
    return [c for e in net._endpoints for c in e.connections if c.session.usable]


async def crash(net: QuicNetwork) -> None:
    """The process dies: its sockets close, nothing is said to the peers."""
    for endpoint in net._endpoints:
        endpoint.close()
    await asyncio.sleep(0)  # the transports close on the next tick


def node(limits: QuicLimits = LIMITS, key: KeyPair | None = None,
         listen: list[str] | None = None) -> QuicNetwork:
    return QuicNetwork(key or KeyPair.generate(), LOOPBACK if listen is None else listen,
                       limits=limits)


async def _race_once() -> int:
    """Two nodes send to each other at once, both dialing; returns how many races they saw."""
    async with node() as a, node() as b:
        a.add_addresses(b.local_did, b.listen_addrs())
        b.add_addresses(a.local_did, a.listen_addrs())
        got: dict[str, list[bytes]] = {a.local_did: [], b.local_did: []}
        a.on_message(kinds.GOSSIP, lambda _p, m: got[a.local_did].append(bytes(m)))
        b.on_message(kinds.GOSSIP, lambda _p, m: got[b.local_did].append(bytes(m)))
        sent = [b"%05d" % i for i in range(300)]

        async def burst(src: QuicNetwork, dst: QuicNetwork) -> None:
            for m in sent:
                await src.send(dst.local_did, kinds.GOSSIP, m)

        await asyncio.gather(burst(a, b), burst(b, a))
        await eventually(lambda: len(got[a.local_did]) >= 300 and len(got[b.local_did]) >= 300)
        await asyncio.sleep(0.05)
        assert got[a.local_did] == sent
        assert got[b.local_did] == sent
        await eventually(lambda: len(live(a)) == 1 and len(live(b)) == 1)
        assert a.connected() == (b.local_did,)
        assert b.connected() == (a.local_did,)
        return a.metrics["simultaneous_dials"] + b.metrics["simultaneous_dials"]


async def test_simultaneous_dials_settle_on_one_connection_in_order() -> None:
    races = [await _race_once() for _ in range(6)]  # both DID orders come up
    assert sum(races) > 0  # the race did happen (both dial in the same tick)


async def test_restarted_peer_gets_a_fresh_connection() -> None:
    key_b = KeyPair.generate()
    async with node() as a:
        b1 = node(key=key_b)
        await b1.start()
        port_addr = b1.listen_addrs()[0]
        a.add_addresses(key_b.did, (port_addr,))

        async def echo(_p: str, m: memoryview) -> bytes:
            return bytes(m)

        b1.on_request(kinds.DHT, echo)
        a.on_request(kinds.DHT, echo)
        assert await a.request(key_b.did, kinds.DHT, b"one", 5.0) == b"one"
        await crash(b1)
        async with node(key=key_b, listen=[port_addr]) as b2:
            b2.on_request(kinds.DHT, echo)
            b2.add_addresses(a.local_did, a.listen_addrs())
            # b2 reaches a first: a sees a new instance of b and drops the stale connection
            assert await b2.request(a.local_did, kinds.DHT, b"hello", 5.0) == b"hello"
            assert await a.request(key_b.did, kinds.DHT, b"two", 5.0) == b"two"
            assert a.metrics["connections_replaced"] == 1
        await b1.aclose()


async def test_crashed_peer_is_noticed_by_probe_timeouts() -> None:
    limits = QuicLimits(max_probe_timeouts=4, handshake_timeout=0.5, close_timeout=0.3)
    async with node(limits) as a:
        b = node()
        await b.start()
        lost: list[tuple[str, bool]] = []
        a.on_peer(lambda did, up: lost.append((did, up)))
        await a.connect(b.listen_addrs()[0])
        await crash(b)
        await a.send(b.local_did, kinds.PING, b"anyone there?")  # never acknowledged
        await eventually(lambda: (b.local_did, False) in lost)
        assert a.metrics["peers_not_responding"] == 1
        with pytest.raises(PeerUnreachable):
            await a.send(b.local_did, kinds.PING, b"redial")  # dead address: the dial fails
        await b.aclose()


async def test_idle_connections_close() -> None:
    limits = QuicLimits(idle_timeout=0.3, handshake_timeout=1.0, close_timeout=0.3)
    async with node(limits) as a, node(limits) as b:
        events: list[tuple[str, bool]] = []
        b.on_peer(lambda did, up: events.append((did, up)))
        await a.connect(b.listen_addrs()[0])
        await eventually(lambda: events == [(a.local_did, True), (a.local_did, False)])
        await eventually(lambda: a.connected() == ())  # its own idle timer, a moment apart


async def test_peer_limit() -> None:
    limits = QuicLimits(max_peers=1, handshake_timeout=1.0, dial_timeout=1.0, close_timeout=0.3)
    async with node(limits) as server, node() as first, node() as second:
        await first.connect(server.listen_addrs()[0])
        with pytest.raises(PeerUnreachable):
            await second.connect(server.listen_addrs()[0])
        assert server.metrics["peers_refused"] == 1
        assert server.connected() == (first.local_did,)


async def test_small_messages_share_packets() -> None:
    async with node() as a, node() as b:
        got: list[int] = []
        b.on_message(kinds.PING, lambda _p, m: got.append(len(m)))
        await a.connect(b.listen_addrs()[0])
        before = dict(a.metrics)
        for _ in range(2000):
            await a.send(b.local_did, kinds.PING, bytes(64))
        await eventually(lambda: len(got) == 2000)
        frames = a.metrics["frames_out"] - before.get("frames_out", 0)
        packets = a.metrics["packets_out"] - before.get("packets_out", 0)
        assert frames == 2000
        assert frames / packets > 5  # ~20 fit in a packet; acks and pacing take a few
        assert a.stats()["frames_per_packet_out"] > 1


async def test_run_as_a_component_says_goodbye_on_cancel() -> None:
    async with node() as b:
        a = node()
        ready = asyncio.Event()
        task = asyncio.create_task(a.run(ready.set))
        await ready.wait()
        events: list[tuple[str, bool]] = []
        b.on_peer(lambda did, up: events.append((did, up)))
        await a.connect(b.listen_addrs()[0])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # b learns it right away from CLOSE, not after an idle timeout
        await eventually(lambda: (a.local_did, False) in events, timeout=2.0)
        with pytest.raises(PeerUnreachable):
            await a.send(b.local_did, kinds.PING, b"x")


def test_works_on_uvloop() -> None:
    import uvloop

    async def exchange() -> bytes:
        async with node() as a, node() as b:
            async def echo(_p: str, m: memoryview) -> bytes:
                return bytes(m)

            b.on_request(kinds.DHT, echo)
            a.add_addresses(b.local_did, b.listen_addrs())
            for _ in range(100):
                await a.send(b.local_did, kinds.PING, b"x")
            return await a.request(b.local_did, kinds.DHT, b"on uvloop", 5.0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(exchange()) == b"on uvloop"


_SLOW_READER = textwrap.dedent(
    """
    import asyncio, sys
    from nunet.crypto.keys import KeyPair
    from nunet.net import kinds
    from nunet.net.quic import QuicNetwork

    async def main():
        async with QuicNetwork(KeyPair.generate(), ["/ip4/127.0.0.1/udp/0/quic-v1"]) as net:
            got = [0]
            net.on_message(kinds.PING, lambda _p, m: got.__setitem__(0, got[0] + len(m)))
            async def total(_p, _m):
                return str(got[0]).encode()
            net.on_request(kinds.DHT, total)
            print(net.local_did, net.listen_addrs()[0], flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_send_waits_while_the_peer_does_not_read() -> None:
    limits = QuicLimits(send_buffer=256 << 10, handshake_timeout=2.0, close_timeout=0.3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SLOW_READER, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout is not None
        did, addr = (await proc.stdout.readline()).decode().split()
        async with node(limits) as a:
            a.add_addresses(did, (addr,))
            await a.send(did, kinds.PING, b"hello")
            await a.request(did, kinds.DHT, b"", 5.0)  # connected and served
            os.kill(proc.pid, signal.SIGSTOP)
            chunk = bytes(64 << 10)

            async def flood() -> int:
                sent = 0
                for _ in range(200):  # 12.5 MiB, far over the 256 KiB buffer
                    await a.send(did, kinds.PING, chunk)
                    sent += 1
                return sent

            flooding = asyncio.create_task(flood())
            await asyncio.sleep(0.5)
            assert not flooding.done()  # send is waiting: the peer reads nothing
            conn = a._peers[did].conn
            assert conn is not None
            assert conn.session.pending_bytes <= limits.send_buffer + len(chunk) + 64
            os.kill(proc.pid, signal.SIGCONT)
            assert await asyncio.wait_for(flooding, 30.0) == 200
            total = await a.request(did, kinds.DHT, b"", 10.0)
            assert int(total) == 5 + 200 * len(chunk)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        await proc.wait()


async def test_listening_on_a_taken_port_is_a_config_error() -> None:
    async with node() as a:
        taken = a.listen_addrs()[0]
        with pytest.raises(ConfigError) as caught:
            async with node(listen=[taken]):
                pass
        assert caught.value.path == "p2p.listen_address[0]"
    with pytest.raises(ConfigError):
        node(listen=["/dns/example.org/udp/1/quic-v1"])
