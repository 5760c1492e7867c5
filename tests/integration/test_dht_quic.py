"""The DHT and the QoS check over the real QUIC transport on loopback (in one process): the
same services as on memnet, with real sockets, certificates and multiaddrs."""

from __future__ import annotations

import asyncio
import contextlib

from nunet.crypto.keys import KeyPair
from nunet.net.api import PeerRecord
from nunet.net.dht import DhtConfig, DhtService
from nunet.net.dht.simulation import start
from nunet.net.qos import QosService
from nunet.net.quic import QuicLimits, QuicNetwork

LIMITS = QuicLimits(handshake_timeout=2.0, dial_timeout=3.0, close_timeout=0.5)
N = 6


async def test_dht_and_qos_over_quic_on_loopback() -> None:
    keys = [KeyPair.generate() for _ in range(N)]
    async with contextlib.AsyncExitStack() as stack:
        nets = [
            await stack.enter_async_context(
                QuicNetwork(kp, ["/ip4/127.0.0.1/udp/0/quic-v1"], limits=LIMITS)
            )
            for kp in keys
        ]
        bootstrap = list(nets[0].listen_addrs())
        config = DhtConfig(request_timeout=3.0)
        dhts = [
            DhtService(net, kp, bootstrap if i else [], config=config)
            for i, (net, kp) in enumerate(zip(nets, keys, strict=True))
        ]
        qos = QosService(nets[1], interval=3600, samples=2, deadline=2.0)
        async with asyncio.TaskGroup() as tg:
            tasks = [await start(tg, dht) for dht in dhts]
            ready = asyncio.Event()
            tasks.append(tg.create_task(qos.run(ready.set)))
            await ready.wait()
            for net in nets[2:]:  # the others answer probes too
                peer_qos = QosService(net, interval=3600)
                ready = asyncio.Event()
                tasks.append(tg.create_task(peer_qos.run(ready.set)))
                await ready.wait()
            async with asyncio.timeout(20):
                await asyncio.gather(*(dht.wait_bootstrapped() for dht in dhts[1:]))
            for a in dhts:
                for b, net in zip(dhts, nets, strict=True):
                    assert await a.find_peer(b.did) == PeerRecord(b.did, net.listen_addrs())
            await dhts[3].provide("executor/docker")
            assert [p.did for p in await dhts[5].find_providers("executor/docker")] == [
                dhts[3].did
            ]
            assert await qos.ping(dhts[4].did) > 0
            qos.watch(d.did for d in dhts[2:])
            await qos.probe_round()
            scores = qos.scores()
            for dht in dhts[2:]:
                assert scores[dht.did].availability == 1.0
                assert scores[dht.did].score > 40.0
            for task in tasks:
                task.cancel()
