"""The dispatch core (sans-I/O, no clocks: `now` is passed in): which envelope may reach which
handler.

`Dispatcher.admit` checks, in this order, each failure its own error:
1. expiry: `EnvelopeExpired` once `options.expiry` has passed;
2. sender: `InvalidDID` for a malformed sender DID; `BadSender` for an unsigned envelope that is
   not from the authenticated peer of the session it came on (`session_did`; None for gossip,
   relays and the local API, which must always be signed);
3. signature: `SignatureError` unless a present signature verifies against the sender's DID;
4. replay (signed envelopes only: see `nunet.actor.replay`): `ReplayError`;
5. capability: the chain in `capabilities` (leaf first) must grant the behaviour (a broadcast: the
   behaviour and the topic) to the sender, an invocation token must be addressed to the target
   actor; no token at all is `CapabilityError` (deny by default), a bad chain its specific
   `CapabilityError`/`SecurityError`. Registrations made with `capability=None` (replies,
   supervision) skip this and take only their `expected_senders`;
6. lookup: `NotFound` for another host, an unknown inbox or behaviour, an expired one-shot;
7. limits: `RateLimited` when the behaviour, the peer, all broadcasts or the topic already have
   their maximum of messages in flight (released by `release`).
A one-shot registration is removed when admitted; `sweep(now)` drops the expired ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from nunet.actor.envelope import Envelope, signed_message
from nunet.actor.replay import ReplayGuard
from nunet.crypto.did import public_key_from_did
from nunet.errors import (
    AlreadyExists,
    BadSender,
    CapabilityError,
    EnvelopeExpired,
    InvalidDID,
    LocalProtocolError,
    NotFound,
    RateLimited,
    SignatureError,
)
from nunet.ucan import Link, TrustContext, is_path
from nunet.ucan.chain import verify_signature

DEFAULT_REPLAY_WINDOW_S = 300.0


class Limits(msgspec.Struct, frozen=True):
    """Messages in flight (admitted, handler not yet finished). DMS's defaults."""

    public: int = 4096  # per behaviour, unless its registration says otherwise
    peer: int = 1024  # per peer (the session's DID, else the sender's)
    broadcast: int = 1024  # all broadcasts together
    topic: int = 128  # per topic


class Message:
    """What a handler gets: the admitted envelope, the session it came on (None: gossip, relay,
    local API), the inbox it was delivered to and the verified capability (None for replies)."""

    __slots__ = ("capability", "envelope", "inbox", "session_did")

    def __init__(
        self, envelope: Envelope, session_did: str | None, inbox: str, capability: Link | None
    ) -> None:
        self.envelope = envelope
        self.session_did = session_did
        self.inbox = inbox
        self.capability = capability

    @property
    def payload(self) -> bytes:
        return self.envelope.payload

    @property
    def behavior(self) -> str:
        return self.envelope.behavior

    @property
    def sender(self) -> str:
        """The sender's DID (proven by the session or the signature)."""
        return self.envelope.sender.did


Handler = Callable[[Message], "Awaitable[bytes | None] | bytes | None"]


class Registration:
    """A behaviour of an inbox. `capability`: the path a caller's chain must grant (None: no
    capability check; then only `expected_senders` may call it, anyone authenticated if empty);
    `expiry`: Unix seconds after which it is gone; `limit`: messages in flight (None:
    `Limits.public`)."""

    __slots__ = ("capability", "expected_senders", "expiry", "handler", "in_flight", "limit",
                 "one_shot")

    def __init__(
        self,
        handler: Handler,
        *,
        capability: str | None,
        one_shot: bool = False,
        expiry: float | None = None,
        expected_senders: tuple[str, ...] = (),
        limit: int | None = None,
    ) -> None:
        if capability is not None and not is_path(capability):
            raise LocalProtocolError(f"{capability!r} is not a capability path")
        if limit is not None and limit < 1:
            raise LocalProtocolError("a concurrency limit is at least 1")
        self.handler = handler
        self.capability = capability
        self.one_shot = one_shot
        self.expiry = expiry
        self.expected_senders = expected_senders
        self.limit = limit
        self.in_flight = 0


class Admitted:
    """An envelope that passed every check, with where it goes (`targets`: (inbox,
    registration) pairs; several for a broadcast) and the slots it holds until `release`."""

    __slots__ = ("envelope", "link", "peer", "remaining", "session_did", "targets")

    def __init__(
        self,
        envelope: Envelope,
        session_did: str | None,
        link: Link | None,
        targets: tuple[tuple[str, Registration], ...],
        peer: str,
    ) -> None:
        self.envelope = envelope
        self.session_did = session_did
        self.link = link
        self.targets = targets
        self.peer = peer
        self.remaining = len(targets)  # handlers not yet finished (the runtime counts down)

    def messages(self) -> list[Message]:
        return [
            Message(self.envelope, self.session_did, inbox, self.link)
            for inbox, _ in self.targets
        ]


class _Inbox:
    __slots__ = ("behaviors", "did", "external", "topics")

    def __init__(self, did: str, external: bool) -> None:
        self.did = did
        self.external = external
        self.behaviors: dict[str, Registration] = {}
        self.topics: set[str] = set()


class Dispatcher:
    def __init__(
        self,
        local_did: str,
        trust: TrustContext,
        *,
        replay_window_s: float = DEFAULT_REPLAY_WINDOW_S,
        limits: Limits | None = None,
        replay_per_sender: int = 4096,
        replay_senders: int = 16384,
    ) -> None:
        public_key_from_did(local_did)
        self.local_did = local_did
        self.trust = trust
        self.limits = limits or Limits()
        self.replay = ReplayGuard(
            window_ns=int(replay_window_s * 1e9),
            per_sender=replay_per_sender,
            max_senders=replay_senders,
        )
        self._inboxes: dict[str, _Inbox] = {}
        self._subscribers: dict[str, list[str]] = {}  # topic -> inboxes
        self._peers: dict[str, int] = {}
        self._topics: dict[str, int] = {}
        self._broadcasts = 0

    # --- registry --------------------------------------------------------------------------------

    def add_inbox(self, inbox: str, did: str, *, external: bool = False) -> None:
        """An inbox for actor `did`; `external`: it belongs to a user whose key is not here (its
        replies are delivered to the local API); `sweep` removes it once it has no behaviour."""
        if inbox in self._inboxes:
            raise AlreadyExists(f"inbox {inbox!r} exists", path="inbox")
        public_key_from_did(did)
        self._inboxes[inbox] = _Inbox(did, external)

    def has_inbox(self, inbox: str) -> bool:
        return inbox in self._inboxes

    def inbox_did(self, inbox: str) -> str:
        return self._known(inbox).did

    def remove_inbox(self, inbox: str) -> None:
        box = self._inboxes.pop(inbox, None)
        if box is not None:
            for topic in box.topics:
                self._drop_subscriber(topic, inbox)

    def register(self, inbox: str, behavior: str, registration: Registration) -> None:
        if not is_path(behavior):
            raise LocalProtocolError(f"{behavior!r} is not a behaviour path")
        self._known(inbox).behaviors[behavior] = registration

    def unregister(self, inbox: str, behavior: str) -> Registration | None:
        box = self._inboxes.get(inbox)
        return None if box is None else box.behaviors.pop(behavior, None)

    def behaviors(self, inbox: str) -> tuple[str, ...]:
        return tuple(self._known(inbox).behaviors)

    def subscribe(self, inbox: str, topic: str) -> None:
        """Deliver broadcasts on `topic` to `inbox` (to the behaviour each names)."""
        if not is_path(topic):
            raise LocalProtocolError(f"{topic!r} is not a topic")
        box = self._known(inbox)
        if topic not in box.topics:
            box.topics.add(topic)
            self._subscribers.setdefault(topic, []).append(inbox)

    def unsubscribe(self, inbox: str, topic: str) -> None:
        box = self._inboxes.get(inbox)
        if box is not None and topic in box.topics:
            box.topics.discard(topic)
            self._drop_subscriber(topic, inbox)

    def subscribers(self, topic: str) -> tuple[str, ...]:
        return tuple(self._subscribers.get(topic, ()))

    def _drop_subscriber(self, topic: str, inbox: str) -> None:
        inboxes = self._subscribers.get(topic, [])
        if inbox in inboxes:
            inboxes.remove(inbox)
        if not inboxes:
            self._subscribers.pop(topic, None)

    def _known(self, inbox: str) -> _Inbox:
        box = self._inboxes.get(inbox)
        if box is None:
            raise NotFound(f"no inbox {inbox!r}", path="inbox")
        return box

    # --- admission -------------------------------------------------------------------------------

    def admit(
        self,
        env: Envelope,
        *,
        session_did: str | None,
        now: float,
        raw: bytes | memoryview | None = None,
    ) -> Admitted:
        """`env` if it may be delivered now: `authenticate` then `authorize` (see the module
        docstring for the checks and their order)."""
        self.authenticate(env, session_did=session_did, now=now, raw=raw)
        return self.authorize(env, session_did=session_did, now=now)

    def authenticate(
        self,
        env: Envelope,
        *,
        session_did: str | None,
        now: float,
        raw: bytes | memoryview | None = None,
    ) -> None:
        """Checks 1-4: alive, from whom it says, not a replay. `raw`: the bytes `env` was
        decoded from, so the signature message is sliced out of them, not re-encoded. Until
        this passes, nobody proven is there to answer to."""
        if self._prove(env, session_did, now, raw):
            # 4. replay
            self.replay.check(env.sender.did, env.nonce, env.options.expiry, int(now * 1e9))

    def vet_broadcast(self, env: Envelope, *, now: float, raw: bytes | memoryview | None) -> None:
        """Whether gossip may pass a broadcast on (its topic's validator): checks 1-3 and the
        capabilities this node's subscribers ask, nothing recorded (the replay check and the
        limits are delivery's), nothing looked up (not subscribing to the behaviour is no fault
        of the sender's)."""
        self._prove(env, None, now, raw)
        self._broadcast_capabilities(env, self._broadcast_targets(env, now), now)

    def _prove(
        self, env: Envelope, session_did: str | None, now: float, raw: bytes | memoryview | None
    ) -> bool:
        """Checks 1-3; True when a signature proved the sender (the envelope may be replayed),
        False when the session did."""
        now_ns = int(now * 1e9)
        options = env.options
        # 1. expiry
        if options.expiry <= now_ns:
            raise EnvelopeExpired(
                f"expired {(now_ns - options.expiry) / 1e9:.3f} s ago", path="options.expiry"
            )
        # 2. sender
        sender = env.sender.did
        signature = env.signature
        if sender == session_did and not signature:
            return False  # the session's handshake proved this key
        try:
            key = public_key_from_did(sender)
        except InvalidDID as exc:
            raise InvalidDID(exc.message, path="from.did") from None
        if not signature:
            where = "outside a session" if session_did is None else f"on {session_did}'s session"
            raise BadSender(f"unsigned envelope from {sender} {where}", path="from.did")
        # 3. signature
        message = env.signing_bytes() if raw is None else signed_message(raw, len(signature))
        if not verify_signature(key, message, signature):
            raise SignatureError(
                f"signature does not verify against the sender {sender}", path="signature"
            )
        return True

    def authorize(self, env: Envelope, *, session_did: str | None, now: float) -> Admitted:
        """Checks 5-7 on an authenticated envelope: capability, lookup, limits."""
        topic = env.options.topic
        behavior = env.behavior
        sender = env.sender.did
        link: Link | None = None
        if topic:
            targets = self._broadcast_targets(env, now)
            link = self._broadcast_capabilities(env, targets, now)
            if not targets:
                raise NotFound(
                    f"no subscriber to {topic} has the behaviour {behavior}", path="behavior"
                )
        else:
            inbox = env.to.address.inbox_address
            box = self._inboxes.get(inbox)
            reg = None if box is None else box.behaviors.get(behavior)
            if reg is not None and reg.expiry is not None and reg.expiry <= now:
                reg = None  # expired: `sweep` removes it
            if reg is None or reg.capability is not None:
                capability = behavior if reg is None else reg.capability
                assert capability is not None
                link = self._verify(env, capability, None, env.to.did, now)
            elif reg.expected_senders and sender not in reg.expected_senders:
                raise CapabilityError(
                    f"{behavior} takes messages from {' or '.join(reg.expected_senders)} only, "
                    f"not {sender}",
                    path="from.did",
                )
            if env.to.address.host_id != self.local_did:
                raise NotFound(
                    f"this is {self.local_did}, not {env.to.address.host_id}",
                    path="to.address.host_id",
                )
            if box is None or box.did != env.to.did:
                raise NotFound(f"no actor {env.to.did} at inbox {inbox!r}", path="to")
            if reg is None:
                raise NotFound(f"{inbox!r} has no behaviour {behavior}", path="behavior")
            targets = [(inbox, reg)]
        # 7. limits
        peer = session_did or sender
        self._acquire(targets, peer, topic)
        for inbox, reg in targets:
            if reg.one_shot:
                self._inboxes[inbox].behaviors.pop(behavior, None)
        return Admitted(env, session_did, link, tuple(targets), peer)

    def _broadcast_targets(self, env: Envelope, now: float) -> list[tuple[str, Registration]]:
        targets: list[tuple[str, Registration]] = []
        behavior = env.behavior
        for inbox in self._subscribers.get(env.options.topic, ()):
            reg = self._inboxes[inbox].behaviors.get(behavior)
            if reg is not None and (reg.expiry is None or reg.expiry > now):
                targets.append((inbox, reg))
        return targets

    def _broadcast_capabilities(
        self, env: Envelope, targets: list[tuple[str, Registration]], now: float
    ) -> Link | None:
        """Every distinct capability asked by a target must be granted; none asked (no
        target): the behaviour's own, so that probing learns nothing without a grant."""
        link: Link | None = None
        asked = {reg.capability for _, reg in targets} if targets else {env.behavior}
        for capability in asked:
            if capability is not None:
                link = self._verify(env, capability, env.options.topic, None, now)
        return link

    def _verify(
        self, env: Envelope, capability: str, topic: str | None, receiver: str | None, now: float
    ) -> Link:
        tokens = env.capabilities
        if not tokens:
            raise CapabilityError(
                f"no capability token for {capability}: denied by default", path="capabilities"
            )
        return self.trust.verifier.verify(
            tokens[0],
            tokens[1:],
            now,
            capability=capability,
            topic=topic,
            holder=env.sender.did,
            receiver=receiver,
        )

    def _acquire(
        self, targets: list[tuple[str, Registration]], peer: str, topic: str
    ) -> None:
        limits = self.limits
        for _, reg in targets:
            if reg.in_flight >= (reg.limit or limits.public):
                raise RateLimited("rate limited: too many messages in flight for this behaviour")
        peers = self._peers.get(peer, 0)
        if peers >= limits.peer:
            raise RateLimited("rate limited: too many messages in flight from this peer")
        if topic:
            if self._broadcasts >= limits.broadcast:
                raise RateLimited("rate limited: too many broadcasts in flight")
            if self._topics.get(topic, 0) >= limits.topic:
                raise RateLimited(f"rate limited: too many broadcasts in flight on {topic}")
            self._broadcasts += 1
            self._topics[topic] = self._topics.get(topic, 0) + 1
        self._peers[peer] = peers + 1
        for _, reg in targets:
            reg.in_flight += 1

    def release(self, admitted: Admitted) -> None:
        """The handlers of `admitted` are done: give its slots back."""
        for _, reg in admitted.targets:
            reg.in_flight -= 1
        peer = admitted.peer
        left = self._peers[peer] - 1
        if left:
            self._peers[peer] = left
        else:
            del self._peers[peer]
        topic = admitted.envelope.options.topic
        if topic:
            self._broadcasts -= 1
            left = self._topics[topic] - 1
            if left:
                self._topics[topic] = left
            else:
                del self._topics[topic]

    def in_flight(self) -> int:
        return sum(self._peers.values())

    # --- upkeep ----------------------------------------------------------------------------------

    def sweep(self, now: float) -> int:
        """Drop expired registrations, behaviour-less external inboxes and expired nonces;
        returns how many registrations went."""
        dropped = 0
        for inbox, box in list(self._inboxes.items()):
            expired = [b for b, r in box.behaviors.items() if r.expiry is not None
                       and r.expiry <= now]
            for behavior in expired:
                del box.behaviors[behavior]
            dropped += len(expired)
            if box.external and not box.behaviors:
                self.remove_inbox(inbox)
        self.replay.sweep(int(now * 1e9))
        return dropped
