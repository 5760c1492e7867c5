"""Broadcasts are vetted before gossip passes them on: an envelope that is not signed by its
sender, or whose chain does not grant what this node's subscribers ask, is neither delivered
nor forwarded (and its relayer is penalised); an expired one is dropped without blame."""

from __future__ import annotations

import asyncio
import time

import pytest
from actor_world import MALLORY, NODE_A, NODE_B, envelope, self_root, until, world

from nunet.actor.handle import NO_HANDLE
from nunet.net.gossip.actions import Message as GossipMessage
from nunet.net.gossip.actions import Verdict

TOPIC = "/nunet/deployment"
BEHAVIOR = "/dms/deployment/request"


def gossip(data: bytes, *, topic: str = TOPIC, source: str = NODE_A.did) -> GossipMessage:
    return GossipMessage(id=b"i" * 20, topic=topic, data=data, publisher=source, seqno=1,
                         expiry=time.time() + 60, source=source)


@pytest.mark.parametrize(
    ("case", "verdict", "code"),
    [
        ("good", Verdict.ACCEPT, None),
        ("forged_signature", Verdict.REJECT, "bad_signature"),
        ("unsigned", Verdict.REJECT, "bad_sender"),
        ("no_capability", Verdict.REJECT, "capability_denied"),
        ("untrusted_root", Verdict.REJECT, "untrusted_root"),
        ("other_topic", Verdict.REJECT, "decode_error"),
        ("garbage", Verdict.REJECT, "decode_error"),
        ("expired", Verdict.IGNORE, None),
    ],
)
async def test_the_validator_of_a_followed_topic(case: str, verdict: Verdict,
                                                 code: str | None) -> None:
    async with world([NODE_A, NODE_B]) as w:
        b = w[1]
        b.root.add_behavior(BEHAVIOR, lambda m: b"bid")
        b.root.subscribe(TOPIC)
        now = time.time()
        sender, caps, sign, ttl, topic = NODE_A, (self_root(NODE_A, now),), True, 30.0, TOPIC
        if case == "unsigned":
            sign = False
        elif case == "no_capability":
            caps = ()
        elif case == "untrusted_root":
            sender, caps = MALLORY, (self_root(MALLORY, now),)
        elif case == "expired":
            ttl = -1.0
        elif case == "other_topic":
            topic = "/nunet/other"
        env = envelope(sender, NO_HANDLE, BEHAVIOR, now=now, caps=caps, sign=sign, ttl=ttl,
                       topic=topic, reply_to="/dms/actor/replyto/5")
        data = env.encode()
        if case == "forged_signature":
            data = data[:-1] + bytes([data[-1] ^ 1])
        elif case == "garbage":
            data = b"\x93not an envelope"
        assert b._vet(gossip(data)) is verdict
        assert (next(iter(b.rejections)) if b.rejections else None) == code


async def test_an_invalid_broadcast_is_neither_delivered_nor_passed_on() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]
        got: list[bytes] = []
        b.root.add_behavior(BEHAVIOR, lambda m: got.append(bytes(m.payload)))
        b.root.subscribe(TOPIC)
        assert a.gossip is not None
        assert b.gossip is not None
        await until(lambda: len(a.gossip.router.topic_peers(TOPIC)) == 1)  # type: ignore[union-attr]
        now = time.time()
        forged = envelope(NODE_A, NO_HANDLE, BEHAVIOR, now=now, caps=(), sign=True, topic=TOPIC,
                          payload=b"no grant")
        a.gossip.publish(TOPIC, forged.encode())
        await until(lambda: b.gossip.stats()["rejected"] == 1)  # type: ignore[union-attr]
        good = envelope(NODE_A, NO_HANDLE, BEHAVIOR, now=now, caps=(self_root(NODE_A, now),),
                        sign=True, topic=TOPIC, payload=b"granted", nonce=2)
        a.gossip.publish(TOPIC, good.encode())
        await until(lambda: bool(got))
        await asyncio.sleep(0.05)
        assert got == [b"granted"]
        assert b.rejections["capability_denied"] == 1


async def test_only_what_this_node_published_skips_the_check() -> None:
    """A handle claiming our node as its host proves nothing; gossip's publisher does."""
    from nunet.actor.handle import Handle

    async with world([NODE_A, NODE_B]) as w:
        b = w[1]
        b.root.add_behavior(BEHAVIOR, lambda m: b"bid")
        b.root.subscribe(TOPIC)
        now = time.time()
        posing = Handle.for_actor(MALLORY.did, NODE_B.did, "root")
        env = envelope(MALLORY, NO_HANDLE, BEHAVIOR, now=now, caps=(self_root(MALLORY, now),),
                       sign=True, topic=TOPIC, handle=posing)
        assert b._vet(gossip(env.encode())) is Verdict.REJECT
        assert b.rejections["untrusted_root"] == 1
        assert b._vet(gossip(env.encode(), source=NODE_B.did)) is Verdict.ACCEPT
