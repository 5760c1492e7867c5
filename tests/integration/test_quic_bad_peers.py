"""Misbehaving peers against a real QUIC node on loopback: raw aioquic clients that skip or fake
AUTH, send garbage, oversize frames or unknown kinds; a forged certificate; the wrong DID. Each is
cut off and counted, and the node keeps serving well-behaved peers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived

from nunet.crypto.did import public_key_from_did
from nunet.crypto.keys import KeyPair
from nunet.errors import PeerIdentityMismatch, PeerUnreachable
from nunet.net import kinds
from nunet.net.quic import QuicLimits, QuicNetwork
from nunet.net.quic.identity import NodeIdentity
from nunet.net.quic.session import ALPN, Code
from nunet.wire.framing import FrameDecoder, encode_frame

LIMITS = QuicLimits(handshake_timeout=0.5, dial_timeout=1.0, close_timeout=0.3)
LOOPBACK = ["/ip4/127.0.0.1/udp/0/quic-v1"]


class RawClient(QuicConnectionProtocol):
    """An aioquic client that speaks ALPN nunet/1 and whatever bytes a test gives it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.frames: list[tuple[int, bytes]] = []
        self.arrived = asyncio.Event()
        self.close_code: int | None = None
        self._decoder = FrameDecoder()
        self._sid: int | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.frames.extend((k, bytes(p)) for k, p in self._decoder.feed(event.data))
            self.arrived.set()

    def write(self, data: bytes) -> None:
        if self._sid is None:
            self._sid = self._quic.get_next_available_stream_id(is_unidirectional=True)
        self._quic.send_stream_data(self._sid, data)
        self.transmit()

    async def challenge(self) -> bytes:
        while not any(k == kinds.CHALLENGE for k, _ in self.frames):
            self.arrived.clear()
            await self.arrived.wait()
        return dict(self.frames)[kinds.CHALLENGE][:32]

    async def closed_by_server(self) -> int:
        await asyncio.wait_for(self.wait_closed(), 5.0)
        event = self._quic._close_event
        assert event is not None
        return event.error_code


@pytest.fixture(name="server")
async def _server() -> AsyncIterator[QuicNetwork]:
    net = QuicNetwork(KeyPair.generate(), LOOPBACK, limits=LIMITS)

    async def echo(_peer: str, payload: memoryview) -> bytes:
        return bytes(payload)

    net.on_request(kinds.DHT, echo)
    async with net:
        yield net


async def raw_connect(server: QuicNetwork) -> AsyncIterator[RawClient]:
    port = int(server.listen_addrs()[0].split("/")[4])
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    async with connect("127.0.0.1", port, configuration=config, create_protocol=RawClient) as c:
        assert isinstance(c, RawClient)
        yield c


async def still_serves(server: QuicNetwork) -> None:
    async with QuicNetwork(KeyPair.generate(), limits=LIMITS) as good:
        good.add_addresses(server.local_did, server.listen_addrs())
        assert await good.request(server.local_did, kinds.DHT, b"still there?", 5.0) == (
            b"still there?"
        )


def auth_frame(server: QuicNetwork, challenge: bytes, who: NodeIdentity | None = None) -> bytes:
    who = who or NodeIdentity(KeyPair.generate())
    return encode_frame(
        kinds.AUTH, who.auth_payload(public_key_from_did(server.local_did), challenge)
    )


# --- before AUTH ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "counter"),
    [
        (bytes(range(255, -1, -1)) * 4, "frames_too_large"),  # garbage
        (encode_frame(kinds.PING, b"hello"), "auth_failures"),  # skips AUTH
        (b"\x03\x77abc", "bad_frames"),  # unknown kind
        (encode_frame(kinds.AUTH, b"short"), "auth_failures"),  # malformed AUTH
    ],
)
async def test_anything_before_auth_is_cut_off(
    server: QuicNetwork, data: bytes, counter: str
) -> None:
    async for raw in raw_connect(server):
        await raw.challenge()
        raw.write(data)
        code = await raw.closed_by_server()
        assert code in (Code.AUTH_FAILED, Code.PROTOCOL_VIOLATION)
    assert server.metrics[counter] == 1
    assert server.metrics["peers_cut_off"] == 1
    assert server.connected() == ()
    await still_serves(server)


async def test_silent_client_is_dropped_after_the_handshake_timeout(server: QuicNetwork) -> None:
    async for raw in raw_connect(server):
        await raw.challenge()
        assert await raw.closed_by_server() == Code.HANDSHAKE_TIMEOUT
    assert server.metrics["handshake_timeouts"] == 1
    await still_serves(server)


async def test_replayed_auth_is_refused(server: QuicNetwork) -> None:
    client = NodeIdentity(KeyPair.generate())
    async for first in raw_connect(server):
        proof = auth_frame(server, await first.challenge(), client)
        first.write(proof)
        while not any(k == kinds.ACCEPT for k, _ in first.frames):
            first.arrived.clear()
            await first.arrived.wait()
        assert client.did in server.connected()
    async for second in raw_connect(server):
        await second.challenge()
        second.write(proof)  # a valid proof, for another connection's challenge
        assert await second.closed_by_server() == Code.AUTH_FAILED
    assert server.metrics["auth_failures"] == 1
    await still_serves(server)


# --- after AUTH ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        (b"\x80\x20\x00\x00" + bytes([kinds.PING]), "frames_too_large"),  # declares 2 MiB
        (b"\x05\xeehello", "bad_frames"),  # unknown kind 0xee
        (encode_frame(kinds.CHALLENGE, bytes(48)), "protocol_violations"),  # control after open
        (encode_frame(kinds.REQUEST, b"\x30"), "bad_frames"),  # REQUEST without its header
    ],
)
async def test_bad_frames_after_auth_are_cut_off(
    server: QuicNetwork, frame: bytes, counter: str
) -> None:
    lost: list[tuple[str, bool]] = []
    server.on_peer(lambda did, up: lost.append((did, up)))
    async for raw in raw_connect(server):
        raw.write(auth_frame(server, await raw.challenge()) + encode_frame(kinds.PING, b"ok"))
        raw.write(frame)
        assert await raw.closed_by_server() == Code.PROTOCOL_VIOLATION
    assert server.metrics[counter] == 1
    assert [up for _, up in lost] == [True, False]
    await still_serves(server)


async def test_too_many_streams_is_cut_off(server: QuicNetwork) -> None:
    """aioquic lets a peer open a new stream for each one it finishes; nunet counts them all."""
    async for raw in raw_connect(server):
        raw.write(auth_frame(server, await raw.challenge()))
        for _ in range(LIMITS.max_streams):  # the AUTH stream stays open: one too many
            sid = raw._quic.get_next_available_stream_id(is_unidirectional=True)
            raw._quic.send_stream_data(sid, encode_frame(kinds.PING, b"x"), end_stream=True)
            raw.transmit()
        assert await raw.closed_by_server() == Code.PROTOCOL_VIOLATION
    assert server.metrics["protocol_violations"] == 1
    await still_serves(server)


# --- the server's identity -----------------------------------------------------------------------


async def test_forged_certificate_fails_the_dial() -> None:
    victim = NodeIdentity(KeyPair.generate())
    forger = QuicNetwork(KeyPair.generate(), LOOPBACK, limits=LIMITS)
    forger._identity.certificate = victim.certificate  # claims the victim's key, cannot sign
    async with forger, QuicNetwork(KeyPair.generate(), limits=LIMITS) as dialer:
        dialer.add_addresses(victim.did, forger.listen_addrs())
        with pytest.raises(PeerUnreachable, match="handshake failed"):
            await dialer.send(victim.did, kinds.PING, b"secret")
        assert dialer.metrics["handshake_failures"] == 1
        assert dialer.connected() == ()


async def test_wrong_did_at_an_address_is_a_clear_error(server: QuicNetwork) -> None:
    expected = KeyPair.generate().did
    async with QuicNetwork(KeyPair.generate(), limits=LIMITS) as dialer:
        dialer.add_addresses(expected, server.listen_addrs())
        with pytest.raises(PeerIdentityMismatch, match=server.local_did):
            await dialer.send(expected, kinds.PING, b"x")
        assert dialer.metrics["identity_mismatches"] == 1
    await still_serves(server)


async def test_connect_to_an_address_naming_another_did(server: QuicNetwork) -> None:
    async with QuicNetwork(KeyPair.generate(), limits=LIMITS) as dialer:
        addr = server.listen_addrs()[0]
        assert await dialer.connect(f"{addr}/p2p/{server.local_did}") == server.local_did
        with pytest.raises(PeerIdentityMismatch):
            await dialer.connect(f"{addr}/p2p/{KeyPair.generate().did}")
