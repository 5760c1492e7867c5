"""Several "machines" on one host: network namespaces joined by veth pairs to one bridge.

    with Testbed(3) as bed:              # hosts h0, h1, h2 at 10.77.X.1 .. .3
        bed.hosts[1].loss(30)            # drop 30% of what h1 receives (nftables)
        bed.partition(bed.hosts[2])      # h2 unreachable for everyone ...
        bed.heal(bed.hosts[2])           # ... and back
        bed.hosts[0].run(["ip", "addr"]) # any command inside h0

The bridge lives in a namespace of its own, so the host's root namespace gets no addresses or
routes. Everything is torn down on exit even when the test failed. This kernel has no `tc netem`:
loss and partitions use nftables, added delay uses `DelayRelay` (a user-space UDP relay).
Needs root (CAP_NET_ADMIN); `namespaces_available()` tells a test whether to skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType

SUBNET_PREFIX = "10.77"
_NFT_TABLE = "nunet_impair"


def _run(cmd: Sequence[str], *, check: bool = True, input_text: str | None = None) -> str:
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=20, input=input_text
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def namespaces_available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    name = f"nunet-probe-{secrets.token_hex(3)}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                          timeout=10)
    if done.returncode != 0:
        return f"`ip netns add` is not permitted here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return None


class Host:
    def __init__(self, bed: Testbed, index: int) -> None:
        self.bed = bed
        self.index = index
        self.ns = f"{bed.tag}-h{index}"
        self.ip = f"{bed.subnet}.{index + 1}"

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def run(self, cmd: Sequence[str], *, check: bool = True) -> str:
        return _run([*self.exec_prefix, *cmd], check=check)

    def _nft(self, script: str) -> None:
        if shutil.which("nft") is None:
            raise RuntimeError("nftables (`nft`) is not installed: apt-get install nftables")
        _run([*self.exec_prefix, "nft", "-f", "-"], input_text=script)

    def _ensure_table(self) -> None:
        self._nft(
            f"table inet {_NFT_TABLE} {{\n"
            "  chain input { type filter hook input priority 0; policy accept; }\n"
            "}\n"
        )

    def loss(self, percent: int, *, from_host: Host | None = None) -> None:
        """Drop `percent`% of the IP packets this host receives (from one host or from all)."""
        if not 0 < percent <= 100:
            raise ValueError(f"loss percent must be in 1..100, not {percent}")
        self._ensure_table()
        source = from_host.ip if from_host is not None else f"{self.bed.subnet}.0/24"
        chance = "" if percent == 100 else f"numgen random mod 100 < {percent} "
        self._nft(f"add rule inet {_NFT_TABLE} input ip saddr {source} {chance}drop\n")

    def block(self, other: Host) -> None:
        """Drop everything this host receives from `other`."""
        self.drop(f"ip saddr {other.ip}")

    def drop(self, match: str) -> None:
        """Drop what this host receives that matches an nftables expression
        (e.g. `ip saddr 10.77.1.2 udp dport 9001`)."""
        self._ensure_table()
        self._nft(f"add rule inet {_NFT_TABLE} input {match} drop\n")

    def clear_impairments(self) -> None:
        if shutil.which("nft") is not None:
            _run([*self.exec_prefix, "nft", "delete", "table", "inet", _NFT_TABLE], check=False)


class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, n: int) -> None:
        self.tag = f"nn{secrets.token_hex(3)}"
        octet = int(self.tag[2:4], 16)
        self.subnet = f"{SUBNET_PREFIX}.{octet}"
        self.switch = f"{self.tag}-sw"
        self.hosts = [Host(self, i) for i in range(n)]

    def __enter__(self) -> Testbed:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def _build(self) -> None:
        _run(["ip", "netns", "add", self.switch])
        sw = ["ip", "-n", self.switch]
        _run([*sw, "link", "add", "br0", "type", "bridge"])
        _run([*sw, "link", "set", "br0", "up"])
        for host in self.hosts:
            _run(["ip", "netns", "add", host.ns])
            inner, outer = f"{self.tag}i{host.index}", f"{self.tag}o{host.index}"
            _run(["ip", "link", "add", inner, "type", "veth", "peer", "name", outer])
            _run(["ip", "link", "set", inner, "netns", host.ns])
            _run(["ip", "link", "set", outer, "netns", self.switch])
            _run([*sw, "link", "set", outer, "master", "br0"])
            _run([*sw, "link", "set", outer, "up"])
            hn = ["ip", "-n", host.ns]
            _run([*hn, "link", "set", inner, "name", "eth0"])
            _run([*hn, "addr", "add", f"{host.ip}/24", "dev", "eth0"])
            _run([*hn, "link", "set", "eth0", "up"])
            _run([*hn, "link", "set", "lo", "up"])

    def partition(self, host: Host) -> None:
        """Cut `host` off from every other host, both ways."""
        for other in self.hosts:
            if other is not host:
                host.block(other)
                other.block(host)

    def heal(self, host: Host | None = None) -> None:
        for h in self.hosts:
            h.clear_impairments()

    def close(self) -> None:
        # Deleting a namespace deletes its veth ends (and so their peers) with it.
        for name in [h.ns for h in self.hosts] + [self.switch]:
            _run(["ip", "netns", "del", name], check=False)


class DelayRelay:
    """A UDP relay that adds a fixed one-way delay in each direction.

    Clients send to `listen`; the relay forwards to `target` after `delay_s`, with one upstream
    socket per client so replies find their way back (delayed too). To sit inside a host of a
    Testbed, run it there as a process: `relay_command(...)` gives the command line.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
        self.listen = listen
        self.target = target
        self.delay_s = delay_s
        self._front: asyncio.DatagramTransport | None = None
        self._upstreams: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self.forwarded = 0

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                loop.call_later(relay.delay_s, relay._forward, data, addr)

        transport, _ = await loop.create_datagram_endpoint(Front, local_addr=self.listen)
        self._front = transport
        sock = transport.get_extra_info("sockname")
        self.listen = (str(sock[0]), int(sock[1]))
        return self.listen

    def _forward(self, data: bytes, client: tuple[str, int]) -> None:
        upstream = self._upstreams.get(client)
        if upstream is not None:
            upstream.sendto(data)
            self.forwarded += 1
            return
        pending = self._pending.setdefault(client, [])
        pending.append(data)
        if len(pending) == 1:
            asyncio.get_running_loop().create_task(self._open(client))

    async def _open(self, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, _addr: tuple[str, int]) -> None:
                loop.call_later(relay.delay_s, relay._to_client, reply, client)

        upstream, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.target)
        self._upstreams[client] = upstream
        for data in self._pending.pop(client, []):
            upstream.sendto(data)
            self.forwarded += 1

    def _to_client(self, data: bytes, client: tuple[str, int]) -> None:
        if self._front is not None:
            self._front.sendto(data, client)
            self.forwarded += 1

    def close(self) -> None:
        for transport in [self._front, *self._upstreams.values()]:
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
        self._upstreams.clear()


def relay_command(listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> list[str]:
    """The command that runs a DelayRelay as its own process (e.g. behind `host.exec_prefix`)."""
    return [
        sys.executable, "-m", "nunet.testing.netns", "relay",
        f"{listen[0]}:{listen[1]}", f"{target[0]}:{target[1]}", str(delay_s),
    ]


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _relay_forever(listen: str, target: str, delay_s: float) -> None:
    relay = DelayRelay(_addr(listen), _addr(target), delay_s)
    bound = await relay.start()
    print(f"relay {bound[0]}:{bound[1]} -> {target} (+{delay_s * 1000:g} ms)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        relay.close()


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "relay":
        sys.exit("usage: python -m nunet.testing.netns relay LISTEN_IP:PORT TARGET_IP:PORT DELAY_S")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_relay_forever(sys.argv[2], sys.argv[3], float(sys.argv[4])))
