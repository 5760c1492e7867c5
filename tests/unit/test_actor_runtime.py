"""ActorSystem over memnet (with a gossip service each): send, invoke, timeouts, remote errors,
dynamic and one-shot behaviours, rate limits, stop, child actors, local dispatch, broadcast,
and envelopes injected through the local API."""

from __future__ import annotations

import asyncio

import pytest
from actor_world import (
    NODE_A,
    NODE_B,
    NODE_C,
    T0,
    USER,
    envelope,
    root,
    self_root,
    until,
    world,
)

from nunet.actor.envelope import Envelope, reply_result
from nunet.actor.runtime import HEALTHCHECK, ActorSystem, Message
from nunet.crypto.keys import KeyPair
from nunet.errors import (
    ActorStopped,
    BadSender,
    LocalProtocolError,
    PeerUnreachable,
    RemoteActorError,
    RequestTimeout,
    ValidationError,
)
from nunet.testing.memnet import MemoryHub
from nunet.ucan import TrustContext

ECHO = "/test/echo"


def echo(message: Message) -> bytes:
    return b"echo:" + message.payload


async def test_send_and_invoke_between_two_nodes() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]
        got: list[Message] = []
        done = asyncio.Event()

        async def record(message: Message) -> None:
            got.append(message)
            done.set()

        b.root.add_behavior("/test/record", record)
        b.root.add_behavior(ECHO, echo)
        await a.root.send(b.root.handle, "/test/record", b"one way")
        await asyncio.wait_for(done.wait(), 5)
        assert got[0].payload == b"one way"
        assert got[0].sender == NODE_A.did
        assert got[0].session_did == NODE_A.did
        assert got[0].envelope.signature == b""  # the session proves the root's key
        assert await a.root.invoke(b.root.handle, ECHO, b"x") == b"echo:x"
        assert b.stats()["in_flight"] == 0
        assert not a.rejections
        assert not b.rejections


async def test_remote_errors_carry_their_code() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]

        async def invalid(_m: Message) -> bytes:
            raise ValidationError("bad input", path="payload.x")

        def crash(_m: Message) -> bytes:
            raise RuntimeError("secret detail")

        def wrong_type(_m: Message) -> str:
            return "not bytes"

        b.root.add_behavior("/test/invalid", invalid)
        b.root.add_behavior("/test/crash", crash)
        b.root.add_behavior("/test/type", wrong_type)  # type: ignore[arg-type]
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, "/test/invalid", b"")
        assert info.value.remote_code == "validation_error"
        assert info.value.message == "payload.x: bad input"
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, "/test/crash", b"")
        assert info.value.remote_code == "internal"
        assert "secret" not in info.value.message
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, "/test/type", b"")
        assert info.value.remote_code == "local_protocol_error"
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, "/test/none", b"")
        assert info.value.remote_code == "not_found"
        assert b.counters["handler_errors"] == 3
        # The actor still answers.
        b.root.add_behavior(ECHO, echo)
        assert await a.root.invoke(b.root.handle, ECHO, b"y") == b"echo:y"


async def test_deny_by_default_without_a_trusted_chain() -> None:
    async with world([NODE_A, NODE_B], roots=lambda k: []) as w:
        a, b = w[0], w[1]
        b.root.add_behavior(ECHO, echo)
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, ECHO, b"")
        assert info.value.remote_code == "untrusted_root"
        assert b.rejections["untrusted_root"] == 1


async def test_timeout_and_unreachable() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]
        never = asyncio.Event()

        async def hang(_m: Message) -> bytes:
            await never.wait()
            return b""

        b.root.add_behavior("/test/hang", hang)
        with pytest.raises(RequestTimeout):
            await a.root.invoke(b.root.handle, "/test/hang", b"", timeout=0.2)
        assert not any(p.startswith("/dms/actor/replyto/") for p in a.root.behaviors())
        stranger = KeyPair.from_seed(b"\x99" * 32)
        with pytest.raises(PeerUnreachable):
            await a.root.invoke(root(stranger), ECHO, b"")
        with pytest.raises(PeerUnreachable):
            await a.root.send(root(stranger), ECHO, b"")


async def test_dynamic_and_one_shot_behaviours() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]
        b.root.add_behavior(ECHO, echo)
        assert await a.root.invoke(b.root.handle, ECHO, b"1") == b"echo:1"
        b.root.remove_behavior(ECHO)
        with pytest.raises(RemoteActorError, match="no behaviour"):
            await a.root.invoke(b.root.handle, ECHO, b"2")
        b.root.add_behavior("/test/once", echo, one_shot=True)
        assert await a.root.invoke(b.root.handle, "/test/once", b"3") == b"echo:3"
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, "/test/once", b"4")
        assert info.value.remote_code == "not_found"
        b.root.add_behavior("/test/brief", echo, expiry=0.05)
        await asyncio.sleep(0.1)
        with pytest.raises(RemoteActorError, match="no behaviour"):
            await a.root.invoke(b.root.handle, "/test/brief", b"5")


async def test_rate_limited_reply() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]
        release = asyncio.Event()

        async def slow(_m: Message) -> bytes:
            await release.wait()
            return b"done"

        b.root.add_behavior("/test/slow", slow, limit=1)
        first = asyncio.create_task(a.root.invoke(b.root.handle, "/test/slow", b""))
        await until(lambda: b.stats()["in_flight"] == 1)
        with pytest.raises(RemoteActorError, match="rate limited") as info:
            await a.root.invoke(b.root.handle, "/test/slow", b"")
        assert info.value.remote_code == "rate_limited"
        release.set()
        assert await first == b"done"
        assert await a.root.invoke(b.root.handle, "/test/slow", b"") == b"done"


async def test_stop_fails_pending_callers_and_cancels_handlers() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]
        never = asyncio.Event()
        cancelled = asyncio.Event()

        async def hang(_m: Message) -> bytes:
            try:
                await never.wait()
            finally:
                cancelled.set()
            return b""

        b.root.add_behavior("/test/hang", hang)
        caller = a.spawn("caller")
        pending = asyncio.create_task(caller.invoke(b.root.handle, "/test/hang", b""))
        await until(lambda: b.stats()["in_flight"] == 1)
        await caller.stop()
        with pytest.raises(ActorStopped, match="stopped"):
            await pending
        with pytest.raises(ActorStopped):
            await caller.invoke(b.root.handle, ECHO, b"")
        assert a.actor("caller") is None
        # A stopped callee: its running handler is cancelled, its caller gets "actor stopped".
        callee = b.spawn("callee")
        callee.add_behavior("/test/hang", hang, capability="/test")
        cancelled.clear()
        call = asyncio.create_task(a.root.invoke(callee.handle, "/test/hang", b""))
        await until(lambda: b.stats()["in_flight"] == 2)  # the root's first call still hangs
        await callee.stop()
        await asyncio.wait_for(cancelled.wait(), 5)
        with pytest.raises(RemoteActorError) as info:
            await call
        assert info.value.remote_code == "actor_stopped"


async def test_child_actors_sign_and_carry_a_delegation() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]
        seen: list[Message] = []

        def record(message: Message) -> bytes:
            seen.append(message)
            return b"ok"

        b.root.add_behavior("/test/who", record)
        child = a.spawn("alloc/1")
        assert child.handle.address.host_id == NODE_A.did
        assert child.did != NODE_A.did
        assert await child.invoke(b.root.handle, "/test/who", b"") == b"ok"
        env = seen[0].envelope
        assert env.sender == child.handle
        assert len(env.signature) == 64
        assert seen[0].session_did == NODE_A.did
        link = seen[0].capability
        assert link is not None
        assert link.token.audience == child.did
        assert link.root.token.issuer == NODE_A.did  # the node's chain, delegated to the child
        # B calls the child back through A.
        child.add_behavior(ECHO, echo)
        assert await b.root.invoke(child.handle, ECHO, b"c") == b"echo:c"


async def test_local_targets_skip_the_network() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a = w[0]
        child = a.spawn()
        child.add_behavior(ECHO, echo)
        sent = w.hub.messages_sent
        assert await a.root.invoke(child.handle, ECHO, b"l") == b"echo:l"
        assert await child.invoke(a.root.handle, HEALTHCHECK, b"") == b"ok"
        assert w.hub.messages_sent == sent
        # The parent may call its child's healthcheck without any capability; others may not.
        assert await a.root.invoke(child.handle, HEALTHCHECK, b"") == b"ok"
        with pytest.raises(RemoteActorError, match="takes messages from"):
            await w[1].root.invoke(child.handle, HEALTHCHECK, b"")
        # A local refusal is raised as is.
        with pytest.raises(Exception, match="no behaviour"):
            await a.root.invoke(child.handle, "/test/none", b"")


async def test_broadcast_collects_replies_from_subscribers() -> None:
    topic = "/nunet/deployment"
    async with world([NODE_A, NODE_B, NODE_C]) as w:
        a, b, c = w[0], w[1], w[2]
        for system, name in ((b, b"b"), (c, b"c")):
            system.root.add_behavior("/dms/deployment/request",
                                     lambda m, name=name: b"bid from " + name)
            system.root.subscribe(topic)
        local = a.spawn("orchestrator")
        local.add_behavior("/dms/deployment/request", lambda m: b"bid from a")
        local.subscribe(topic)
        assert a.gossip is not None
        await until(lambda: len(a.gossip.router.topic_peers(topic)) == 2)  # type: ignore[union-attr]
        replies = await a.root.broadcast(topic, "/dms/deployment/request", b"req", timeout=2.0)
        assert sorted(data for _, data in replies) == [b"bid from a", b"bid from b",
                                                       b"bid from c"]
        assert {h.did for h, _ in replies} == {NODE_B.did, NODE_C.did, local.did}
        # A one-way broadcast through send(topic=...).
        got = asyncio.Event()
        c.root.add_behavior("/dms/notice", lambda m: got.set())
        await a.root.send(root(NODE_C), "/dms/notice", b"", topic=topic)
        await asyncio.wait_for(got.wait(), 5)


async def test_deliver_local_relays_user_envelopes_and_returns_replies() -> None:
    async with world([NODE_A, NODE_B],
                     roots=lambda k: [NODE_A.did, NODE_B.did, USER.did]) as w:
        a, b = w[0], w[1]
        b.root.add_behavior(ECHO, echo)
        a.root.add_behavior(ECHO, echo)
        me = a.external_handle(USER.did)
        replies: list[Envelope] = []
        for target, nonce in ((b.root.handle, 11), (a.root.handle, 12)):
            env = envelope(USER, target, ECHO, now=a.clock(), nonce=nonce, payload=b"u",
                           caps=(self_root(USER, a.clock()),), handle=me, sign=True,
                           reply_to=f"/dms/actor/replyto/{nonce}")
            done = asyncio.Event()
            await a.deliver_local(env, reply=lambda e, d=done: (replies.append(e), d.set()))
            await asyncio.wait_for(done.wait(), 5)
        assert [reply_result(e.payload) for e in replies] == [b"echo:u", b"echo:u"]
        assert replies[0].sender.did == NODE_B.did
        assert replies[0].to == me
        # Unsigned, or signed by someone else: refused here, before anything is sent.
        unsigned = envelope(USER, b.root.handle, ECHO, now=a.clock(), handle=me)
        with pytest.raises(BadSender):
            await a.deliver_local(unsigned)
        await until(lambda: not a.dispatcher.has_inbox(me.address.inbox_address), timeout=3)


async def test_lifecycle_errors() -> None:
    hub = MemoryHub()
    net = hub.node(NODE_A.did)
    with pytest.raises(LocalProtocolError):
        ActorSystem(net, NODE_B, TrustContext())
    system = ActorSystem(net, NODE_A, TrustContext())
    system.root.add_behavior(ECHO, echo)  # behaviours may be given before the system runs
    assert ECHO in system.root.behaviors()
    with pytest.raises(LocalProtocolError, match="not running"):
        await system.root.send(root(NODE_B), ECHO, b"")
    with pytest.raises(LocalProtocolError):
        system.spawn(keypair=NODE_A)
    child = system.spawn()
    await child.stop()
    with pytest.raises(ActorStopped):
        child.add_behavior(ECHO, echo)
    with pytest.raises(ActorStopped):
        system.spawn(parent=child)
    ready = asyncio.Event()
    task = asyncio.create_task(system.run(ready.set))
    await ready.wait()
    with pytest.raises(LocalProtocolError, match="runs once"):
        await system.run(lambda: None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert system.root.stopped
    assert T0 > 0
