"""`QosService`: the asyncio adapter of the QoS check (see core.py for the state and the score).

It probes, every `interval` seconds, every peer it is told to `watch`, every connected peer and
every peer it already tracks, `samples` identical kinds.QOS probes each (at most `concurrency`
peers at a time), and answers other nodes' probes and pings (kinds.QOS, kinds.PING: an echo of
at most 64 bytes). `ping(did)` is one kinds.PING round trip, for `nunet peers ping`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import msgspec

from nunet.errors import NunetError, RemoteProtocolError, ValidationError
from nunet.net import kinds
from nunet.net.api import Network
from nunet.net.qos.core import PeerScore, QosConfig, QosCore, QosStats

log = logging.getLogger("nunet.net.qos")

PROBE_PREFIX = b"nunet:qos:v1:"
PING_PREFIX = b"nunet:ping:v1:"
MAX_ECHO = 64  # bytes: the echo handlers refuse more, so a probe cannot be used to amplify


class QosService:
    """`interval`, `samples` and `deadline` are the settings an operator tunes; `config` gives
    the rest (window, EWMA weight, ...) and its own three are replaced by these arguments."""

    def __init__(
        self,
        network: Network,
        interval: float = 30.0,
        samples: int = 3,
        deadline: float = 2.0,
        *,
        config: QosConfig | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        base = config or QosConfig()
        self.config = msgspec.structs.replace(
            base, interval=interval, samples=samples, deadline=deadline
        )
        if samples < 1:
            raise ValidationError("must be at least 1", path="qos.samples")
        if deadline <= 0:
            raise ValidationError("must be positive", path="qos.deadline")
        if interval < 0:
            raise ValidationError("must not be negative", path="qos.interval")
        self._net = network
        self._clock = clock
        self._core = QosCore(self.config)
        self._watched: set[str] = set()
        self._connected_since: set[str] = set()
        self._seq = 0
        self._probes_sent = 0
        self._probes_failed = 0
        self._bad_echoes = 0
        self._echoes_served = 0

    @property
    def core(self) -> QosCore:
        return self._core

    # --- component lifecycle -----------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        self._net.on_request(kinds.QOS, self._echo_probe)
        self._net.on_request(kinds.PING, self._echo_ping)
        self._net.on_peer(self._on_peer)
        started()
        while True:
            began = self._clock()
            await self.probe_round()
            await asyncio.sleep(max(0.0, self.config.interval - (self._clock() - began)))

    # --- public API --------------------------------------------------------------------------

    def watch(self, dids: Iterable[str]) -> None:
        """Peers to probe (and remember) whether connected or not: the ones a session may use."""
        self._watched.update(dids)

    def unwatch(self, dids: Iterable[str]) -> None:
        self._watched.difference_update(dids)

    def scores(self) -> dict[str, PeerScore]:
        return self._core.scores(self._clock())

    def score(self, did: str) -> PeerScore | None:
        return self._core.score(did, self._clock())

    def stats(self) -> QosStats:
        return QosStats(
            peers=len(self._core),
            probes_sent=self._probes_sent,
            probes_failed=self._probes_failed,
            bad_echoes=self._bad_echoes,
            echoes_served=self._echoes_served,
        )

    async def ping(self, did: str, timeout: float | None = None) -> float:
        """Round-trip time in seconds of one kinds.PING request to `did`; raises
        PeerUnreachable, RequestTimeout or RemoteError (RemoteProtocolError: a wrong echo)."""
        self._seq += 1
        payload = PING_PREFIX + self._seq.to_bytes(8, "big")
        t0 = self._clock()
        reply = await self._net.request(
            did, kinds.PING, payload, self.config.deadline if timeout is None else timeout
        )
        rtt = self._clock() - t0
        if reply != payload:
            raise RemoteProtocolError(f"{did} answered a ping with something else")
        return rtt

    async def probe_round(self) -> None:
        """Probes every target once per sample: watched, connected, and already tracked peers."""
        now = self._clock()
        self._core.prune(now, self._watched)
        targets = dict.fromkeys(
            [*self._watched, *self._net.connected(), *self._connected_since, *self._core.known()]
        )
        self._connected_since.clear()
        targets.pop(self._net.local_did, None)
        gate = asyncio.Semaphore(self.config.concurrency)

        async def probe_peer(did: str) -> None:
            async with gate:
                for _ in range(self.config.samples):
                    await self.probe(did)

        async with asyncio.TaskGroup() as tg:
            for did in targets:
                tg.create_task(probe_peer(did))

    async def probe(self, did: str) -> float | None:
        """One probe, recorded: its RTT in seconds, or None when it failed."""
        self._seq += 1
        payload = PROBE_PREFIX + self._seq.to_bytes(8, "big")
        self._probes_sent += 1
        t0 = self._clock()
        rtt: float | None
        try:
            reply = await self._net.request(did, kinds.QOS, payload, self.config.deadline)
        except NunetError as exc:
            log.debug("QoS probe to %s failed: %s", did, exc)
            rtt = None
        else:
            rtt = self._clock() - t0
            if reply != payload:
                self._bad_echoes += 1
                log.debug("QoS probe to %s: the answer is not our probe", did)
                rtt = None
        if rtt is None:
            self._probes_failed += 1
        self._core.record(did, rtt, self._clock())
        return rtt

    # --- serving -----------------------------------------------------------------------------

    async def _echo_probe(self, sender: str, payload: memoryview) -> bytes:
        if len(payload) > MAX_ECHO or bytes(payload[: len(PROBE_PREFIX)]) != PROBE_PREFIX:
            raise ValidationError("not a QoS probe")
        self._echoes_served += 1
        return bytes(payload)

    async def _echo_ping(self, sender: str, payload: memoryview) -> bytes:
        if len(payload) > MAX_ECHO:
            raise ValidationError(f"ping payload over {MAX_ECHO} bytes")
        self._echoes_served += 1
        return bytes(payload)

    def _on_peer(self, did: str, connected: bool) -> None:
        # A peer that connected since the last round is probed in the next one even if it is gone
        # by then; from its first probe on it is tracked until forgotten (not watched for good).
        if connected and len(self._connected_since) < self.config.max_peers:
            self._connected_since.add(did)
