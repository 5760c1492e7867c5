"""The dispatch core, sans-I/O: two paired cores (node A's and node B's), envelopes built as the
runtime builds them, every check in its order, the registry, one-shots, limits, replay memory."""

from __future__ import annotations

import msgspec
import pytest
from actor_world import CHILD, MALLORY, NODE_A, NODE_B, T0, USER, envelope, grant, root, self_root

from nunet.actor.dispatch import Dispatcher, Limits, Registration
from nunet.actor.envelope import decode
from nunet.actor.handle import ROOT_INBOX, Handle
from nunet.actor.replay import ReplayGuard
from nunet.errors import (
    AlreadyExists,
    BadSender,
    CapabilityError,
    EnvelopeExpired,
    InvalidDID,
    LocalProtocolError,
    NotFound,
    RateLimited,
    ReplayError,
    SignatureError,
    UntrustedRoot,
    WrongAudience,
)
from nunet.ucan import TrustContext

HELLO = "/public/hello"


def ok(_message: object) -> bytes:
    return b"ok"


def core(key=NODE_B, roots=(NODE_A.did,), **kwargs: object) -> Dispatcher:  # type: ignore[no-untyped-def]
    d = Dispatcher(key.did, TrustContext(roots, did=key.did), **kwargs)  # type: ignore[arg-type]
    d.add_inbox(ROOT_INBOX, key.did)
    d.register(ROOT_INBOX, HELLO, Registration(ok, capability=HELLO))
    return d


CAP_A = (self_root(NODE_A),)


def good(nonce: int = 1, **kw: object) -> object:
    return envelope(NODE_A, root(NODE_B), HELLO, nonce=nonce, caps=CAP_A, **kw)  # type: ignore[arg-type]


def test_a_session_authenticated_envelope_is_admitted() -> None:
    b = core()
    env = good(payload=b"hi")
    admitted = b.admit(env, session_did=NODE_A.did, now=T0)  # type: ignore[arg-type]
    assert [inbox for inbox, _ in admitted.targets] == [ROOT_INBOX]
    (message,) = admitted.messages()
    assert message.payload == b"hi"
    assert message.sender == NODE_A.did
    assert message.capability is not None
    assert message.capability.token.issuer == NODE_A.did
    assert message.session_did == NODE_A.did
    assert message.inbox == ROOT_INBOX
    assert b.in_flight() == 1
    b.release(admitted)
    assert b.in_flight() == 0


def test_checks_come_in_their_order() -> None:
    b = core()
    # Expired AND foreign AND without capability: expiry first.
    expired = envelope(MALLORY, root(NODE_B), HELLO, now=T0 - 100)
    with pytest.raises(EnvelopeExpired):
        b.admit(expired, session_did=NODE_A.did, now=T0)
    # Unsigned from someone else than the session's peer: sender, before capability.
    with pytest.raises(BadSender):
        b.admit(envelope(MALLORY, root(NODE_B), HELLO), session_did=NODE_A.did, now=T0)
    # Relayed (no session) and unsigned, even from the right DID.
    with pytest.raises(BadSender):
        b.admit(good(), session_did=None, now=T0)  # type: ignore[arg-type]
    # A signature by someone else: signature, before capability.
    forged = msgspec.structs.replace(
        envelope(USER, root(NODE_B), HELLO), signature=MALLORY.sign(b"x") * 1
    )
    with pytest.raises(SignatureError):
        b.admit(forged, session_did=None, now=T0)
    # Signed, no capability: the nonce is recorded first, so the replay is a ReplayError even
    # though the first copy was refused for its capability.
    signed = envelope(USER, root(NODE_B), HELLO, nonce=9, sign=True)
    with pytest.raises(CapabilityError, match="denied by default"):
        b.admit(signed, session_did=None, now=T0)
    with pytest.raises(ReplayError):
        b.admit(signed, session_did=None, now=T0)


def test_malformed_sender_did() -> None:
    b = core()
    bad = Handle.for_actor("did:key:zNotAKey", NODE_A.did, ROOT_INBOX)
    env = envelope(NODE_A, root(NODE_B), HELLO, handle=bad, caps=CAP_A)
    with pytest.raises(InvalidDID) as info:
        b.admit(env, session_did=NODE_A.did, now=T0)
    assert info.value.path == "from.did"


def test_signature_is_checked_from_the_raw_bytes_too() -> None:
    b = core(roots=(USER.did,))
    env = envelope(USER, root(NODE_B), HELLO, caps=(self_root(USER),), sign=True)
    raw = env.encode()
    admitted = b.admit(decode(raw), session_did=NODE_A.did, now=T0, raw=memoryview(raw))
    assert admitted.envelope.sender.did == USER.did
    tampered = bytearray(raw)
    tampered[raw.index(b"/public/hello") + 1] = ord("q")  # still a valid path: /qublic/hello
    with pytest.raises(SignatureError):
        b.admit(decode(bytes(tampered)), session_did=NODE_A.did, now=T0, raw=bytes(tampered))


def test_capability_chain_is_bound_to_sender_and_receiver() -> None:
    b = core(roots=(NODE_A.did,))
    # Node A delegated to the user: the user presents it (holder = user).
    to_user = grant(NODE_A, USER, caps=("/public",))
    env = envelope(USER, root(NODE_B), HELLO, caps=(to_user,), sign=True)
    b.release(b.admit(env, session_did=None, now=T0))
    # The same chain presented by someone else.
    stolen = envelope(MALLORY, root(NODE_B), HELLO, caps=(to_user,), sign=True, nonce=2)
    with pytest.raises(WrongAudience):
        b.admit(stolen, session_did=None, now=T0)
    # An invocation token for another receiver.
    invoke = grant(NODE_A, NODE_A, action="invoke", caps=("/public",))
    aimed = envelope(NODE_A, root(NODE_B), HELLO, caps=(invoke,), nonce=3)
    with pytest.raises(WrongAudience):
        b.admit(aimed, session_did=NODE_A.did, now=T0)
    # Roots not trusted by B.
    with pytest.raises(UntrustedRoot):
        b.admit(envelope(USER, root(NODE_B), HELLO, caps=(self_root(USER),), sign=True, nonce=4),
                session_did=None, now=T0)


def test_custom_capability_path_and_lookup_after_capability() -> None:
    b = core()
    b.register(ROOT_INBOX, "/dms/node/peers/list", Registration(ok, capability="/dms/node"))
    narrow = (grant(NODE_A, NODE_A, caps=("/dms/node",)),)
    b.trust.add_root(NODE_A.did)
    env = envelope(NODE_A, root(NODE_B), "/dms/node/peers/list", caps=narrow)
    b.release(b.admit(env, session_did=NODE_A.did, now=T0))
    # Unknown behaviour: without a grant for it, a capability error (probing learns nothing)...
    with pytest.raises(CapabilityError):
        b.admit(envelope(NODE_A, root(NODE_B), "/secret", caps=narrow), session_did=NODE_A.did,
                now=T0)
    # ...with one, NotFound.
    with pytest.raises(NotFound, match="no behaviour"):
        b.admit(envelope(NODE_A, root(NODE_B), "/dms/node/none", caps=narrow),
                session_did=NODE_A.did, now=T0)


@pytest.mark.parametrize(
    ("to", "match"),
    [
        (Handle.for_actor(NODE_B.did, NODE_B.did, "nope"), "no actor"),
        (Handle.for_actor(NODE_A.did, NODE_B.did, ROOT_INBOX), "no actor"),
        (Handle.for_actor(NODE_B.did, NODE_A.did, ROOT_INBOX), "this is"),
    ],
)
def test_lookup_refuses_other_hosts_and_unknown_actors(to: Handle, match: str) -> None:
    b = core()
    invokable = (self_root(NODE_A),)
    with pytest.raises(NotFound, match=match):
        b.admit(envelope(NODE_A, to, HELLO, caps=invokable), session_did=NODE_A.did, now=T0)


def test_dynamic_registration() -> None:
    b = core()
    b.register(ROOT_INBOX, "/x", Registration(ok, capability="/x"))
    assert "/x" in b.behaviors(ROOT_INBOX)
    b.release(b.admit(envelope(NODE_A, root(NODE_B), "/x", caps=CAP_A), session_did=NODE_A.did,
                      now=T0))
    assert b.unregister(ROOT_INBOX, "/x") is not None
    with pytest.raises(NotFound):
        b.admit(envelope(NODE_A, root(NODE_B), "/x", caps=CAP_A, nonce=2),
                session_did=NODE_A.did, now=T0)
    with pytest.raises(LocalProtocolError):
        b.register(ROOT_INBOX, "bad path", Registration(ok, capability="/x"))
    with pytest.raises(LocalProtocolError):
        Registration(ok, capability="nope")
    with pytest.raises(AlreadyExists):
        b.add_inbox(ROOT_INBOX, NODE_B.did)
    with pytest.raises(NotFound):
        b.register("missing", "/x", Registration(ok, capability="/x"))


def test_one_shot_reply_takes_only_its_sender_once_and_expires() -> None:
    # A's core waits for B's reply.
    a = core(NODE_A, roots=())
    path = "/dms/actor/replyto/77"
    a.register(ROOT_INBOX, path, Registration(ok, capability=None, one_shot=True, expiry=T0 + 30,
                                              expected_senders=(NODE_B.did,)))
    impostor = envelope(MALLORY, root(NODE_A), path, sign=True)
    with pytest.raises(CapabilityError, match="takes messages from"):
        a.admit(impostor, session_did=None, now=T0)
    reply = envelope(NODE_B, root(NODE_A), path)  # no capability needed
    a.release(a.admit(reply, session_did=NODE_B.did, now=T0))
    assert path not in a.behaviors(ROOT_INBOX)
    with pytest.raises(CapabilityError):  # gone: now it is an ordinary, ungranted behaviour
        a.admit(envelope(NODE_B, root(NODE_A), path, nonce=2), session_did=NODE_B.did, now=T0)
    # Expiry: refused after it, swept away.
    a.register(ROOT_INBOX, path, Registration(ok, capability=None, one_shot=True, expiry=T0 + 1))
    with pytest.raises(CapabilityError):
        a.admit(envelope(NODE_B, root(NODE_A), path, nonce=3, now=T0 + 2),
                session_did=NODE_B.did, now=T0 + 2)
    assert a.sweep(T0 + 2) == 1
    assert path not in a.behaviors(ROOT_INBOX)


def test_external_inboxes_are_swept_when_empty() -> None:
    a = core(NODE_A, roots=())
    a.add_inbox("user/1", USER.did, external=True)
    a.register("user/1", "/r", Registration(ok, capability=None, expiry=T0 + 5))
    assert a.sweep(T0) == 0
    assert a.has_inbox("user/1")
    assert a.sweep(T0 + 6) == 1
    assert not a.has_inbox("user/1")


def test_concurrency_limits_per_behaviour_and_peer() -> None:
    b = core(limits=Limits(peer=3))
    b.register(ROOT_INBOX, "/slow", Registration(ok, capability="/slow", limit=1))
    first = b.admit(envelope(NODE_A, root(NODE_B), "/slow", caps=CAP_A), session_did=NODE_A.did,
                    now=T0)
    with pytest.raises(RateLimited, match="rate limited"):
        b.admit(envelope(NODE_A, root(NODE_B), "/slow", caps=CAP_A, nonce=2),
                session_did=NODE_A.did, now=T0)
    b.release(first)
    held = [b.admit(envelope(NODE_A, root(NODE_B), HELLO, caps=CAP_A, nonce=n),
                    session_did=NODE_A.did, now=T0) for n in range(3)]
    with pytest.raises(RateLimited, match="peer"):
        b.admit(envelope(NODE_A, root(NODE_B), HELLO, caps=CAP_A, nonce=5),
                session_did=NODE_A.did, now=T0)
    for h in held:
        b.release(h)
    assert b.in_flight() == 0


def test_broadcasts_go_to_subscribers_signed_and_with_topic_rights() -> None:
    b = core(limits=Limits(topic=1, broadcast=2))
    b.add_inbox("alloc", CHILD.did)
    b.register("alloc", "/dms/deployment/request", Registration(ok, capability="/dms/deployment"))
    b.register(ROOT_INBOX, "/dms/deployment/request",
               Registration(ok, capability="/dms/deployment"))
    b.subscribe(ROOT_INBOX, "/nunet/deployment")
    b.subscribe("alloc", "/nunet/deployment")
    assert b.subscribers("/nunet/deployment") == (ROOT_INBOX, "alloc")
    cast = envelope(NODE_A, Handle("", "", root(NODE_A).address), "/dms/deployment/request",
                    topic="/nunet/deployment", caps=CAP_A, sign=True)
    with pytest.raises(BadSender):  # gossip: no session, so it must be signed
        b.admit(msgspec.structs.replace(cast, signature=b""), session_did=None, now=T0)
    admitted = b.admit(cast, session_did=None, now=T0)
    assert {inbox for inbox, _ in admitted.targets} == {ROOT_INBOX, "alloc"}
    with pytest.raises(RateLimited, match="/nunet/deployment"):
        b.admit(msgspec.structs.replace(cast, nonce=2).sign(NODE_A), session_did=None, now=T0)
    b.release(admitted)
    # A chain without the topic.
    no_topic = (grant(NODE_A, NODE_A, caps=("/",), topics=("/other",)),)
    with pytest.raises(CapabilityError, match="topic"):
        b.admit(envelope(NODE_A, cast.to, cast.behavior, topic="/nunet/deployment",
                         caps=no_topic, sign=True, nonce=3), session_did=None, now=T0)
    b.unsubscribe(ROOT_INBOX, "/nunet/deployment")
    b.unsubscribe("alloc", "/nunet/deployment")
    with pytest.raises(NotFound):
        b.admit(msgspec.structs.replace(cast, nonce=4).sign(NODE_A), session_did=None, now=T0)


# --- replay memory --------------------------------------------------------------------------

NS = 10**9


def test_replay_guard_bounded_per_sender_never_lets_a_replay_through() -> None:
    g = ReplayGuard(window_ns=100 * NS, per_sender=2)
    now = int(T0) * NS
    g.check("s", 1, now + 10 * NS, now)
    g.check("s", 2, now + 11 * NS, now)
    g.check("s", 3, now + 12 * NS, now)  # evicts nonce 1; watermark = its expiry
    assert len(g) == 2
    with pytest.raises(ReplayError, match="older"):
        g.check("s", 1, now + 10 * NS, now)  # the evicted one: still refused
    with pytest.raises(ReplayError, match="already used"):
        g.check("s", 3, now + 12 * NS, now)
    with pytest.raises(ReplayError, match="at most"):
        g.check("s", 4, now + 101 * NS, now)
    g.check("other", 1, now + 10 * NS, now)  # per sender
    assert g.sweep(now + 20 * NS) == 3


def test_replay_guard_forgets_senders_behind_a_global_watermark() -> None:
    g = ReplayGuard(window_ns=100 * NS, max_senders=2)
    now = int(T0) * NS
    g.check("a", 1, now + 50 * NS, now)
    g.check("b", 1, now + 10 * NS, now)
    g.check("c", 1, now + 20 * NS, now)  # forgets "a" (least recently seen)
    with pytest.raises(ReplayError):
        g.check("a", 1, now + 50 * NS, now)  # would be a replay: refused by the watermark
    g.check("d", 1, now + 60 * NS, now)  # a new sender, newer than the watermark: fine
