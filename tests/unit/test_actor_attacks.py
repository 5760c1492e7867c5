"""The attack matrix: one row per attack, injected into a running node (memnet) by a raw peer.
Each row asserts its specific error (class and where it was found) and that the node still
answers a good invocation afterwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import pytest
from actor_world import (
    KEYS,
    MALLORY,
    NODE_A,
    NODE_B,
    ORG,
    USER,
    envelope,
    grant,
    root,
    until,
    world,
)

from nunet.actor.envelope import Envelope
from nunet.actor.handle import Handle
from nunet.actor.runtime import ActorSystem, Message
from nunet.errors import (
    BadSender,
    BrokenChain,
    CapabilityError,
    CapabilityEscalation,
    ChainTooDeep,
    EnvelopeExpired,
    ExpiredError,
    InvalidDID,
    MalformedToken,
    NotYetValid,
    NunetError,
    ReplayError,
    RevokedError,
    SignatureError,
    TokenTooLarge,
    UntrustedRoot,
    WrongAudience,
)
from nunet.net import kinds
from nunet.testing.memnet import mem_addr
from nunet.ucan import Token, revoke, signed_message

ECHO = "/test/echo"
CAPS = ("/test",)


@dataclass
class Ctx:
    victim: ActorSystem
    now: float

    def env(self, sender=MALLORY, **kw: object) -> Envelope:  # type: ignore[no-untyped-def]
        kw.setdefault("nonce", 1000)
        return envelope(sender, root(NODE_B), ECHO, now=self.now, **kw)  # type: ignore[arg-type]

    def to_mallory(self, **kw: object) -> bytes:
        return grant(ORG, MALLORY, self.now, caps=CAPS, **kw)  # type: ignore[arg-type]


def forged_token(now: float) -> bytes:
    """ORG -> MALLORY, but signed by MALLORY."""
    tok = Token(action="delegate", issuer=ORG.did, subject=ORG.did, audience=MALLORY.did,
                capabilities=CAPS, topics=(), nonce=b"n" * 16, not_before=int(now) - 60,
                expiry=int(now) + 600, depth=None, proofs=(), signature=bytes(64))
    unsigned = msgspec.msgpack.encode(tok)
    return msgspec.msgpack.encode(
        msgspec.structs.replace(tok, signature=MALLORY.sign(signed_message(unsigned)))
    )


def long_chain(n: int, now: float) -> list[bytes]:
    """ORG -> k1 -> ... -> MALLORY, n links, leaf first."""
    holders = [KEYS[7 + i % 5] for i in range(n - 1)] + [MALLORY]
    links: list[bytes] = []
    issuer = ORG
    for holder in holders:
        links.append(grant(issuer, holder, now, caps=CAPS, parent=links[-1] if links else None))
        issuer = holder
    return links[::-1]


def escalated(c: Ctx) -> list[bytes]:
    parent = grant(ORG, USER, c.now, caps=("/test/other",))
    return [c.env(caps=(grant(USER, MALLORY, c.now, caps=CAPS, parent=parent), parent)).encode()]


def broken(c: Ctx) -> list[bytes]:
    parent = grant(ORG, USER, c.now, caps=CAPS)
    leaf = grant(NODE_A, MALLORY, c.now, caps=CAPS, parent=parent)  # NODE_A is not the audience
    return [c.env(caps=(leaf, parent)).encode()]


def revoked(c: Ctx) -> list[bytes]:
    parent = grant(ORG, USER, c.now, caps=CAPS)
    c.victim.trust.add_revocation(revoke(ORG, parent, not_before=int(c.now) - 60), c.now)
    return [c.env(caps=(grant(USER, MALLORY, c.now, caps=CAPS, parent=parent), parent)).encode()]


def replayed(c: Ctx) -> list[bytes]:
    # A genuine signed envelope of the user's, relayed twice by Mallory.
    genuine = c.env(USER, caps=(grant(ORG, USER, c.now, caps=CAPS),), sign=True).encode()
    return [genuine, genuine]


def foreign_signature(c: Ctx) -> list[bytes]:
    env = c.env(USER, caps=(grant(ORG, USER, c.now, caps=CAPS),))
    return [msgspec.structs.replace(env, signature=MALLORY.sign(env.signing_bytes())).encode()]


def deep_dos(c: Ctx) -> list[bytes]:
    return [c.env(caps=tuple(long_chain(1000, c.now))).encode()]


Attack = Callable[[Ctx], list[bytes]]
ROWS: list[tuple[str, Attack, type[NunetError], str | None]] = [
    ("forged envelope signature", foreign_signature, SignatureError, "signature"),
    ("forged token signature", lambda c: [c.env(caps=(forged_token(c.now),)).encode()],
     SignatureError, "chain[0].signature"),
    ("expired token", lambda c: [c.env(caps=(c.to_mallory(nb=int(c.now) - 7200,
                                                        exp=int(c.now) - 3600),)).encode()],
     ExpiredError, "chain[0].expiry"),
    ("not-yet-valid token", lambda c: [c.env(caps=(c.to_mallory(nb=int(c.now) + 3600,
                                                              exp=int(c.now) + 7200),)).encode()],
     NotYetValid, "chain[0].not_before"),
    ("wrong audience", lambda c: [c.env(caps=(grant(ORG, USER, c.now, caps=CAPS),)).encode()],
     WrongAudience, "chain[0].audience"),
    ("capability escalation", escalated, CapabilityEscalation, "chain[0].capabilities[0]"),
    ("broken chain", broken, BrokenChain, "chain[0].issuer"),
    ("untrusted root", lambda c: [c.env(caps=(grant(MALLORY, MALLORY, c.now, caps=CAPS),))
                                  .encode()], UntrustedRoot, "chain[0].issuer"),
    ("revoked parent", revoked, RevokedError, "chain[1]"),
    ("replayed nonce", replayed, ReplayError, "nonce"),
    ("expired envelope", lambda c: [c.env(caps=(c.to_mallory(),), ttl=-1).encode()],
     EnvelopeExpired, "options.expiry"),
    ("oversize token list", lambda c: [c.env(caps=(c.to_mallory(), b"\x00" * 16500)).encode()],
     TokenTooLarge, "chain"),
    ("chain deeper than the limit", lambda c: [c.env(caps=tuple(long_chain(17, c.now)))
                                               .encode()], ChainTooDeep, "chain"),
    ("chain of depth 1000", deep_dos, TokenTooLarge, "chain"),
    ("garbage token", lambda c: [c.env(caps=(b"\x93garbage",)).encode()], MalformedToken,
     "chain[0]"),
    ("malformed DID", lambda c: [c.env(handle=Handle.for_actor("did:key:z6MkNotAKey", "x", "r"),
                                       caps=(c.to_mallory(),)).encode()], InvalidDID, "from.did"),
    ("direct envelope claiming another sender",
     lambda c: [c.env(USER, caps=(grant(ORG, USER, c.now, caps=CAPS),)).encode()],
     BadSender, "from.did"),
    ("no capability at all", lambda c: [c.env().encode()], CapabilityError, "capabilities"),
]


def echo(message: Message) -> bytes:
    return b"echo:" + message.payload


@pytest.mark.parametrize(("attack", "expected", "path"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
async def test_attack_is_refused_and_the_node_stays_healthy(
    attack: Attack, expected: type[NunetError], path: str | None
) -> None:
    async with world([NODE_A, NODE_B], roots=lambda k: [ORG.did, NODE_A.did]) as w:
        a, victim = w[0], w[1]
        handled: list[Message] = []
        victim.root.add_behavior(ECHO, lambda m: (handled.append(m), b"ok")[1])
        attacker = w.hub.node(MALLORY.did)
        await attacker.connect(mem_addr(NODE_B.did))
        verifier = victim.trust.verifier
        signatures, decoded = verifier.signatures_verified, verifier.links_decoded
        frames = attack(Ctx(victim, victim.clock()))
        for frame in frames:
            await attacker.send(NODE_B.did, kinds.ACTOR, frame)
        await until(lambda: sum(victim.rejections.values()) >= 1)
        assert sum(victim.rejections.values()) == 1
        peer, error = victim.recent_rejections[-1]
        assert peer == MALLORY.did
        assert type(error) is expected, error
        assert error.path == path, error
        assert len(handled) == len(frames) - 1  # only the genuine first copy of a replay
        if expected is TokenTooLarge:
            # Refused before any token was decoded, let alone a signature verified.
            assert (verifier.signatures_verified, verifier.links_decoded) == (signatures, decoded)
        # Still healthy: a good invocation is answered.
        victim.root.add_behavior("/test/good", echo)
        assert await a.root.invoke(victim.root.handle, "/test/good", b"!") == b"echo:!"
