"""The node's network stack, built from the `p2p` config: QUIC transport, DHT, gossip, QoS.

The daemon starts `components()` in order (each after the one it stands on) and the Node facade
answers `nunet peers ...` from here. Addresses we announce are the listen addresses with
wildcards (0.0.0.0, ::) replaced by this machine's interface addresses: nobody can dial a
wildcard.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nunet.config.schema import P2PConfig
from nunet.crypto.keys import KeyPair
from nunet.net.dht.service import DhtService
from nunet.net.gossip.service import GossipService
from nunet.net.hello import HelloService
from nunet.net.qos.service import QosService
from nunet.net.quic import QuicNetwork, parse_addr

if TYPE_CHECKING:
    from nunet.benchmark.service import BenchmarkService
    from nunet.node.daemon import Component

_WILDCARDS = {"0.0.0.0", "::"}
ADVERTISE_TTL_S = 30.0


def interface_addresses(family: int) -> list[str]:
    """This machine's addresses of one family, loopback last (it only reaches this machine)."""
    import psutil  # lazily: ~25 ms of imports

    found: list[str] = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family == family:
                found.append(entry.address.split("%", 1)[0])
    return sorted(set(found), key=lambda a: (ipaddress.ip_address(a).is_loopback, a))


def advertised(listen: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for text in listen:
        addr = parse_addr(text)
        if addr.host not in _WILDCARDS:
            out.append(text)
            continue
        hosts = interface_addresses(addr.family)
        public = [h for h in hosts if not ipaddress.ip_address(h).is_loopback]
        out.extend(str(type(addr)(addr.proto, h, addr.port)) for h in (public or hosts))
    return tuple(dict.fromkeys(out))


def bootstrap_peers(p2p: P2PConfig) -> tuple[str, ...]:
    """Config first, then `BOOTSTRAP_PEERS` (comma-separated, as DMS reads it)."""
    extra = [p.strip() for p in os.environ.get("BOOTSTRAP_PEERS", "").split(",") if p.strip()]
    return tuple(dict.fromkeys([*p2p.bootstrap_peers, *extra]))


class NetworkStack:
    def __init__(self, p2p: P2PConfig, keypair: KeyPair) -> None:
        self._advertised: tuple[float, tuple[str, ...]] | None = None
        self.network = QuicNetwork(keypair, p2p.listen_address)
        self.dht = DhtService(
            self.network, keypair, bootstrap=bootstrap_peers(p2p), advertise=self.advertised
        )
        self.gossip = GossipService(self.network, keypair)
        self.hello = HelloService(self.network, self.gossip, self.advertised)
        self.qos = QosService(
            self.network, interval=float(p2p.qos_interval), deadline=p2p.qos_deadline_ms / 1000
        )

    def serve_benchmark(self, service: BenchmarkService) -> None:
        """Answer peers' `nunet bench` probes and let ours measure the peers we know."""
        from nunet.benchmark.network import measure_peers, serve_echo
        from nunet.net import kinds

        serve_echo(self.network, kinds.BENCH)
        service.network_probe = lambda: measure_peers(self.network, kinds.BENCH)

    def advertised(self) -> tuple[str, ...]:
        # The DHT asks on every request it sends; interfaces change rarely, so ask the OS at
        # most every ADVERTISE_TTL_S seconds.
        now = time.monotonic()
        if self._advertised is not None and now - self._advertised[0] <= ADVERTISE_TTL_S:
            return self._advertised[1]
        addrs = advertised(self.network.listen_addrs())
        if addrs:  # nothing is cached before the transport listens
            self._advertised = (now, addrs)
        return addrs

    def components(self) -> list[Component]:
        return [self.network, self.dht, self.gossip, self.hello, self.qos]
