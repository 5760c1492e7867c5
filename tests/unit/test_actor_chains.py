"""Capability chains sent once per session, then by reference: the sans-I/O tables, and the
runtime over memnet (define -> ack -> ref, an unknown reference refused and healed by a NACK,
frames that break the rules refused with their specific error)."""

from __future__ import annotations

import time

import pytest
from actor_world import NODE_A, NODE_B, T0, envelope, root, self_root, until, world

from nunet.actor import chains
from nunet.actor.runtime import Message
from nunet.errors import DecodeError, RequestTimeout
from nunet.net import kinds

ECHO = "/test/echo"


def echo(message: Message) -> bytes:
    return b"echo:" + bytes(message.payload)


# --- the tables -----------------------------------------------------------------------------


def test_sender_defines_until_acked_then_refers() -> None:
    out = chains.ChainSender()
    chain = (b"leaf", b"parent")
    first = out.frame_prefix(chain)
    assert first[0] == chains.DEFINE
    cid = first[1 : 1 + chains.ID_SIZE]
    assert out.frame_prefix(chain)[0] == chains.DEFINE  # not acknowledged yet: again in full
    out.acked(cid)
    assert out.frame_prefix(chain) == bytes((chains.REF,)) + cid
    out.nacked(cid)
    assert out.frame_prefix(chain)[0] == chains.DEFINE
    out.acked(b"\x00" * chains.ID_SIZE)  # an id we never sent changes nothing
    assert out.frame_prefix(chain)[0] == chains.DEFINE


def test_sender_table_is_bounded() -> None:
    out = chains.ChainSender(capacity=2)
    ids = [out.frame_prefix((bytes([i]),))[1:9] for i in range(3)]
    for cid in ids:
        out.acked(cid)
    assert out.frame_prefix((b"\x00",))[0] == chains.DEFINE  # the oldest was forgotten
    assert out.frame_prefix((b"\x02",))[0] == chains.REF


def test_receiver_keeps_the_last_chains() -> None:
    table = chains.ChainReceiver(capacity=2)
    assert table.define(b"1" * 8, (b"a",))
    assert not table.define(b"1" * 8, (b"a",))
    table.define(b"2" * 8, (b"b",))
    table.define(b"3" * 8, (b"c",))
    assert table.resolve(b"1" * 8) is None
    assert table.resolve(b"3" * 8) == (b"c",)


def test_frames_round_trip_and_bad_frames_are_decode_errors() -> None:
    out = chains.ChainSender()
    frame = out.frame_prefix((b"tok",)) + b"ENVELOPE"
    cid, chain, body = chains.split_define(frame)
    assert (chain, body) == ((b"tok",), b"ENVELOPE")
    assert chains.split_ref(bytes((chains.REF,)) + cid + b"E") == (cid, b"E")
    for bad in (b"\x01", b"\x01" + b"i" * 8 + b"\xff\xff", b"\x01" + b"i" * 8 + b"\x00\x01\xc1",
                b"\x01" + b"i" * 8 + b"\x00\x01\x90", b"\x02abc"):
        split = chains.split_define if bad[0] == chains.DEFINE else chains.split_ref
        with pytest.raises(DecodeError):
            split(bad)


# --- over the runtime -------------------------------------------------------------------------


async def test_the_chain_travels_once_then_by_reference() -> None:
    async with world([NODE_A, NODE_B], gossip=False) as w:
        a, b = w[0], w[1]
        b.root.add_behavior(ECHO, echo)
        sizes: list[int] = []
        send = w.hub.nodes[NODE_A.did].send

        async def spy(did: str, kind: int, payload: bytes) -> None:
            if kind == kinds.ACTOR:
                sizes.append(len(payload))
            await send(did, kind, payload)

        w.hub.nodes[NODE_A.did].send = spy  # type: ignore[method-assign]
        for i in range(5):
            assert await a.root.invoke(b.root.handle, ECHO, bytes([i])) == b"echo:" + bytes([i])
        assert sizes[0] > sizes[-1] + 200  # the ~290 B token went once
        assert not b.rejections


async def test_an_unknown_reference_is_refused_then_healed() -> None:
    async with world([NODE_A, NODE_B], gossip=False) as w:
        a, b = w[0], w[1]
        b.root.add_behavior(ECHO, echo)
        assert await a.root.invoke(b.root.handle, ECHO, b"1") == b"echo:1"
        await until(lambda: any(o._acked for o in a._chains_out.values()))
        b._chains_in.clear()  # as if b had forgotten (evicted, restarted)
        with pytest.raises(RequestTimeout):  # the call was refused unanswered: it times out
            await a.root.invoke(b.root.handle, ECHO, b"2", timeout=0.3)
        assert b.rejections["unknown_chain"] == 1
        # The NACK made a define the chain again.
        assert await a.root.invoke(b.root.handle, ECHO, b"3") == b"echo:3"


@pytest.mark.parametrize("case", ["signed", "inline_tokens", "unknown_tag", "bad_chain"])
async def test_chain_frames_that_break_the_rules(case: str) -> None:
    async with world([NODE_A, NODE_B], gossip=False) as w:
        b = w[1]
        b.root.add_behavior(ECHO, echo)
        net = w.hub.nodes[NODE_A.did]
        token = self_root(NODE_A, T0)
        env = envelope(NODE_A, root(NODE_B), ECHO, now=time.time(),
                       caps=(token,) if case == "inline_tokens" else (), sign=case == "signed")
        body = env.encode()
        prefix = chains.ChainSender().frame_prefix((token,))
        if case == "unknown_tag":
            frame = b"\x07" + body
        elif case == "bad_chain":
            frame = bytes((chains.DEFINE,)) + b"i" * 8 + b"\x00\x02\x91\xc1" + body
        else:
            frame = prefix + body
        await net.send(NODE_B.did, kinds.ACTOR, frame)
        await until(lambda: bool(b.rejections))
        assert set(b.rejections) == {"decode_error"}
        assert await w[0].root.invoke(b.root.handle, ECHO, b"ok") == b"echo:ok"  # b goes on
