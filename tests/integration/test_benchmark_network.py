"""The network stage over the real QUIC transport on loopback: two `QuicNetwork`s, one serving
the benchmark echo, the other measuring it."""

from __future__ import annotations

from nunet.benchmark.network import measure_peers, serve_echo
from nunet.crypto.keys import KeyPair
from nunet.net import kinds
from nunet.net.quic import QuicLimits, QuicNetwork

LOOPBACK = ["/ip4/127.0.0.1/udp/0/quic-v1"]
LIMITS = QuicLimits(handshake_timeout=2.0, dial_timeout=5.0, close_timeout=0.5)
# Bare networks with no other component: any registered kind is free for the echo here. A node
# uses its own kind (kinds.BENCH, once registered).
KIND = kinds.PING


async def test_rtt_and_upload_over_quic() -> None:
    async with (
        QuicNetwork(KeyPair.generate(), LOOPBACK, limits=LIMITS) as here,
        QuicNetwork(KeyPair.generate(), LOOPBACK, limits=LIMITS) as there,
    ):
        serve_echo(there, KIND)
        assert await measure_peers(here, KIND) == ([], "no connected peers")
        assert await here.connect(there.listen_addrs()[0]) == there.local_did
        results, note = await measure_peers(here, KIND, pings=10, bulk_bytes=2 << 20)
        assert note == ""
        by_kind = {r.name.rsplit(".", 1)[1]: r for r in results}
        assert set(by_kind) == {"rtt", "upload"}
        rtt, upload = by_kind["rtt"], by_kind["upload"]
        assert (rtt.unit, rtt.repeats, rtt.better) == ("ms", 10, "lower")
        assert 0 < rtt.min <= rtt.median <= rtt.max
        assert upload.unit == "MB/s"
        assert upload.value > 0
        assert there.local_did in upload.note


async def test_a_peer_without_the_echo_is_named_not_fatal() -> None:
    async with (
        QuicNetwork(KeyPair.generate(), LOOPBACK, limits=LIMITS) as here,
        QuicNetwork(KeyPair.generate(), LOOPBACK, limits=LIMITS) as there,
    ):
        await here.connect(there.listen_addrs()[0])
        results, note = await measure_peers(here, KIND, pings=2, bulk_bytes=1 << 18)
        assert results == []
        assert there.local_did in note
