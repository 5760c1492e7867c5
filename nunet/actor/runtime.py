"""`ActorSystem`: the asyncio adapter of the dispatch core, over a `Network` (kind ACTOR) and,
for broadcasts, a `GossipService`.

A daemon component (`run(started)`): it takes the ACTOR messages of the network, decodes and
admits each envelope (`Dispatcher`), runs the handler and sends the reply (an envelope to the
caller's reply behaviour, one-way, never a network request). Handlers may be plain functions
(run inline: the fast path, no task) or coroutine functions (one task each); what they raise
becomes an error reply, never a crashed actor. Envelopes to an actor of this node never touch the
network. Refusals are counted by error code (`rejections`) and the latest are kept with the
peer they came from (`recent_rejections`), never logged one by one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nunet.actor import chains
from nunet.actor.caps import CapabilityProvider
from nunet.actor.dispatch import (
    DEFAULT_REPLAY_WINDOW_S,
    Admitted,
    Dispatcher,
    Handler,
    Limits,
    Message,
    Registration,
)
from nunet.actor.envelope import (
    Envelope,
    Options,
    check_bounds,
    decode,
    encode_bare,
    error_of,
    error_payload,
    reply_payload,
    reply_result,
)
from nunet.actor.handle import NO_HANDLE, ROOT_INBOX, Handle
from nunet.crypto.keys import KeyPair
from nunet.errors import (
    ActorStopped,
    AlreadyExists,
    BadSender,
    DecodeError,
    EnvelopeExpired,
    LocalProtocolError,
    NunetError,
    RemoteActorError,
    RequestTimeout,
    UnknownChain,
    ValidationError,
)
from nunet.net import kinds
from nunet.net.api import Network
from nunet.net.gossip.actions import Message as GossipMessage
from nunet.net.gossip.actions import Verdict
from nunet.net.gossip.service import GossipService
from nunet.ucan import TrustContext

__all__ = ["HEALTHCHECK", "Actor", "ActorSystem", "Handler", "Limits", "Message"]

log = logging.getLogger("nunet.actor")

HEALTHCHECK = "/dms/actor/healthcheck"
REPLY_PREFIX = "/dms/actor/replyto/"
_MAX_OUTBOX = 65536  # queued replies per peer; beyond, the oldest are dropped and counted
_RECENT = 64


class Actor:
    """One actor: an inbox of behaviours, a key, a handle. Made by `ActorSystem.spawn`."""

    def __init__(
        self,
        system: ActorSystem,
        inbox: str,
        keypair: KeyPair,
        parent: Actor | None,
        provider: CapabilityProvider,
    ) -> None:
        self.system = system
        self.inbox = inbox
        self.keypair = keypair
        self.parent = parent
        self.children: list[Actor] = []
        self.handle = Handle.for_actor(keypair.did, system.did, inbox)
        self.capabilities = provider
        # A child's envelopes to other nodes carry its own signature: the session proves its
        # host only.
        self._signer = keypair if keypair.did != system.did else None
        self._pending: set[asyncio.Future[Any]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._topics: set[str] = set()
        self._exit: list[Callable[[Actor, NunetError | None], None]] = []
        self.stopped = False

    def __repr__(self) -> str:
        return f"<Actor {self.inbox} {self.keypair.did}>"

    @property
    def did(self) -> str:
        return self.keypair.did

    # --- behaviours ------------------------------------------------------------------------------

    def add_behavior(
        self,
        name: str,
        handler: Handler,
        *,
        capability: str | None = None,
        one_shot: bool = False,
        expiry: float | None = None,
        limit: int | None = None,
    ) -> None:
        """`handler(message)` for envelopes to `name`; callers' chains must grant `capability`
        (default: `name`). `expiry`: seconds from now after which it is removed; `one_shot`:
        removed after its first message; `limit`: messages in flight (default
        `Limits.public`). Allowed before the system runs."""
        self._check_alive()
        deadline = None if expiry is None else self.system.clock() + expiry
        self.system.dispatcher.register(
            self.inbox,
            name,
            Registration(
                handler,
                capability=name if capability is None else capability,
                one_shot=one_shot,
                expiry=deadline,
                limit=limit,
            ),
        )

    def remove_behavior(self, name: str) -> None:
        self.system.dispatcher.unregister(self.inbox, name)

    def behaviors(self) -> tuple[str, ...]:
        return self.system.dispatcher.behaviors(self.inbox)

    def subscribe(self, topic: str) -> None:
        """Receive broadcasts on `topic` (each goes to the behaviour it names)."""
        self._check_alive()
        self.system.dispatcher.subscribe(self.inbox, topic)
        self._topics.add(topic)
        self.system._follow(topic)

    def unsubscribe(self, topic: str) -> None:
        self.system.dispatcher.unsubscribe(self.inbox, topic)
        self._topics.discard(topic)
        self.system._unfollow(topic)

    def on_exit(self, listener: Callable[[Actor, NunetError | None], None]) -> None:
        """`listener(actor, reason)` once the actor stops (`reason` None: stopped normally)."""
        self._exit.append(listener)

    # --- messages out ----------------------------------------------------------------------------

    async def send(
        self,
        to: Handle,
        behavior: str,
        payload: bytes,
        *,
        expiry: float = 30.0,
        topic: str = "",
        sign: bool = False,
        capability: str | None = None,
    ) -> None:
        """Fire and forget. With `topic`, the envelope is published on that topic instead (signed)
        and goes to its subscribers. `sign`: sign even where the session would do (evidence).
        `capability`: the path whose chain to present when the receiver registered the behaviour
        under another capability than its own name (default: `behavior`)."""
        self._check_running()
        env = self._envelope(to, behavior, payload, expiry, "", topic, self.system.nonce(), sign,
                             capability)
        if topic:
            self.system._publish(env)
        else:
            await self.system._deliver(env, self._signer)

    async def invoke(
        self,
        to: Handle,
        behavior: str,
        payload: bytes,
        *,
        timeout: float = 30.0,
        sign: bool = False,
        capability: str | None = None,
    ) -> bytes:
        """Call `behavior` of `to` and return its reply. RequestTimeout when none comes within
        `timeout` (also the envelope's lifetime), RemoteActorError with the remote code when it
        answers with an error, PeerUnreachable, ActorStopped if this actor stops meanwhile; a
        local target's refusal is raised as is."""
        self._check_running()
        system = self.system
        nonce = system.nonce()
        path = REPLY_PREFIX + str(nonce)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def resolve(message: Message) -> None:
            if not future.done():
                future.set_result(message.payload)

        system.dispatcher.register(
            self.inbox,
            path,
            Registration(
                resolve,
                capability=None,
                one_shot=True,
                expiry=system.clock() + timeout,
                # The host may answer for the actors it runs (e.g. "no such actor").
                expected_senders=(to.did, to.address.host_id),
            ),
        )
        self._pending.add(future)
        try:
            env = self._envelope(to, behavior, payload, timeout, path, "", nonce, sign, capability)
            await system._deliver(env, self._signer)
            try:
                async with asyncio.timeout(timeout):
                    reply = await future
            except TimeoutError:
                raise RequestTimeout(
                    f"no reply from {to.did} to {behavior} within {timeout:g} s"
                ) from None
        finally:
            self._pending.discard(future)
            system.dispatcher.unregister(self.inbox, path)
        return reply_result(reply)

    async def broadcast(
        self, topic: str, behavior: str, payload: bytes, *, timeout: float = 30.0
    ) -> list[tuple[Handle, bytes]]:
        """Publish `behavior` on `topic` (signed) and collect the replies that come within
        `timeout` (the envelope's lifetime): (replier, data) pairs; error replies are left out."""
        self._check_running()
        system = self.system
        nonce = system.nonce()
        path = REPLY_PREFIX + str(nonce)
        replies: list[tuple[Handle, bytes]] = []
        stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def collect(message: Message) -> None:
            try:
                replies.append((message.envelope.sender, reply_result(message.payload)))
            except (RemoteActorError, DecodeError):
                system.counters["broadcast_error_replies"] += 1

        system.dispatcher.register(
            self.inbox,
            path,
            Registration(collect, capability=None, expiry=system.clock() + timeout),
        )
        self._pending.add(stopped)
        try:
            env = self._envelope(NO_HANDLE, behavior, payload, timeout, path, topic, nonce, True,
                                 None)
            system._publish(env)
            try:
                async with asyncio.timeout(timeout):
                    await stopped
            except TimeoutError:
                pass
        finally:
            self._pending.discard(stopped)
            system.dispatcher.unregister(self.inbox, path)
        return replies

    def _envelope(
        self,
        to: Handle,
        behavior: str,
        payload: bytes,
        lifetime: float,
        reply_to: str,
        topic: str,
        nonce: int,
        sign: bool,
        capability: str | None,
    ) -> Envelope:
        now = self.system.clock()
        env = Envelope(
            to,
            behavior,
            self.handle,
            nonce,
            Options(int((now + lifetime) * 1e9), reply_to, topic),
            payload,
            self.capabilities.tokens(capability or behavior, topic or None, now),
        )
        check_bounds(env)
        if sign or topic:
            env = env.sign(self.keypair)
        return env

    # --- life ------------------------------------------------------------------------------------

    async def stop(self, reason: NunetError | None = None) -> None:
        """Stop this actor and its children: its behaviours go, its running handlers are
        cancelled, its pending calls fail with ActorStopped; `reason` (a failure) goes to the
        exit listeners (its supervisor)."""
        if self.stopped:
            return
        self.stopped = True
        for child in list(self.children):
            await child.stop()
        self.system._forget(self)
        error = ActorStopped(f"actor {self.inbox} stopped")
        for future in list(self._pending):
            if not future.done():
                future.set_exception(error)
        for task in list(self._tasks):
            task.cancel()
        if self.parent is not None and self in self.parent.children:
            self.parent.children.remove(self)
        for listener in self._exit:
            listener(self, reason)

    def _check_alive(self) -> None:
        if self.stopped:
            raise ActorStopped(f"actor {self.inbox} stopped")

    def _check_running(self) -> None:
        self._check_alive()
        self.system._check_running()


class ActorSystem:
    """The actors of one node: the root actor (inbox `root`, the node's key) and its children."""

    def __init__(
        self,
        network: Network,
        keypair: KeyPair,
        trust: TrustContext,
        *,
        gossip: GossipService | None = None,
        clock: Callable[[], float] = time.time,
        limits: Limits | None = None,
        replay_window_s: float = DEFAULT_REPLAY_WINDOW_S,
        sweep_interval_s: float = 1.0,
    ) -> None:
        if keypair.did != network.local_did:
            raise LocalProtocolError("the actor system's key must be the network's node key")
        self._net = network
        self.keypair = keypair
        self.did = keypair.did
        self.trust = trust
        self.gossip = gossip
        self.clock = clock
        self.dispatcher = Dispatcher(
            keypair.did, trust, replay_window_s=replay_window_s, limits=limits
        )
        self._sweep_interval = sweep_interval_s
        self._rng = random.Random(secrets.randbits(64))
        self._actors: dict[str, Actor] = {}
        self._followed: dict[str, int] = {}  # gossip topic -> local subscriptions
        self._outbox: dict[str, deque[bytes]] = {}
        # Chains sent by reference on each peer's session (nunet/actor/chains.py).
        self._chains_out: dict[str, chains.ChainSender] = {}
        self._chains_in: dict[str, chains.ChainReceiver] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ran = False
        self.rejections: Counter[str] = Counter()
        self.recent_rejections: deque[tuple[str | None, NunetError]] = deque(maxlen=_RECENT)
        self.counters: Counter[str] = Counter()
        self.root = self._new_actor(ROOT_INBOX, keypair, None, CapabilityProvider(trust, keypair))

    # --- component -------------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        if self._ran:
            raise LocalProtocolError("an ActorSystem runs once")
        self._ran = True
        self._net.on_message(kinds.ACTOR, self._on_message)
        self._net.on_peer(self._on_peer)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._loop = asyncio.get_running_loop()
                try:
                    started()
                    while True:
                        await asyncio.sleep(self._sweep_interval)
                        self.dispatcher.sweep(self.clock())
                finally:
                    # Before the group cancels the handlers: what they do on the way out (an
                    # "actor stopped" reply) must not start new tasks in a closing group.
                    self._tg = None
        finally:
            for actor in list(self._actors.values()):
                await actor.stop()

    @property
    def running(self) -> bool:
        return self._tg is not None

    # --- actors ----------------------------------------------------------------------------------

    def spawn(
        self,
        inbox: str | None = None,
        *,
        keypair: KeyPair | None = None,
        parent: Actor | None = None,
    ) -> Actor:
        """A child actor of `parent` (default: the root) with its own key (a fresh one unless
        given) and inbox. Its parent may call its healthcheck without a capability."""
        parent = parent or self.root
        if parent.stopped:
            raise ActorStopped(f"actor {parent.inbox} stopped")
        keypair = keypair or KeyPair.generate()
        if keypair.did == self.did:
            raise LocalProtocolError("a child actor has its own key, not the node's")
        provider = CapabilityProvider(self.trust, keypair, parent=parent.capabilities)
        actor = self._new_actor(inbox or "actor/" + secrets.token_hex(8), keypair, parent, provider)
        parent.children.append(actor)
        return actor

    def actor(self, inbox: str) -> Actor | None:
        return self._actors.get(inbox)

    def all_actors(self) -> list[Actor]:
        return list(self._actors.values())

    def _new_actor(
        self, inbox: str, keypair: KeyPair, parent: Actor | None, provider: CapabilityProvider
    ) -> Actor:
        self.dispatcher.add_inbox(inbox, keypair.did)
        actor = Actor(self, inbox, keypair, parent, provider)
        self._actors[inbox] = actor
        self.dispatcher.register(
            inbox,
            HEALTHCHECK,
            Registration(
                _healthy,
                capability=HEALTHCHECK if parent is None else None,
                expected_senders=() if parent is None else (parent.did,),
            ),
        )
        return actor

    def _forget(self, actor: Actor) -> None:
        self.dispatcher.remove_inbox(actor.inbox)
        self._actors.pop(actor.inbox, None)
        for topic in actor._topics:
            self._unfollow(topic)
        actor._topics.clear()

    def nonce(self) -> int:
        return self._rng.getrandbits(64)

    # --- the local API ---------------------------------------------------------------------------

    def external_handle(self, did: str, inbox: str | None = None) -> Handle:
        """A handle for a user whose key is not here (the local API's caller): envelopes it
        signs with `from` = this handle get their replies back through `deliver_local`."""
        return Handle.for_actor(did, self.did, inbox or "user/" + secrets.token_hex(8))

    async def deliver_local(
        self, env: Envelope, *, reply: Callable[[Envelope], None] | None = None
    ) -> None:
        """Inject an envelope signed by a user key (the local API): checked as a relayed
        envelope (it must be signed), then dispatched here, sent to its host, or published on its
        topic. With `reply` and a `reply_to`, each reply envelope (one for an invocation, any
        number for a broadcast until its expiry) is handed to `reply`; the sender's handle must
        then be hosted here (`external_handle`). Refusals here raise."""
        self._check_running()
        check_bounds(env)
        if not env.signature:
            raise BadSender("an envelope from the local API must be signed by its sender",
                            path="signature")
        now = self.clock()
        self.dispatcher.authenticate(env, session_did=None, now=now)
        registered = None
        if reply is not None and env.options.reply_to:
            registered = self._expect_reply(env, reply)
        try:
            if env.is_broadcast:
                self._publish(env, authenticated=True)
            elif env.to.address.host_id == self.did:
                admitted = self.dispatcher.authorize(env, session_did=None, now=now)
                self._schedule(admitted)
            else:
                await self._net.send(env.to.address.host_id, kinds.ACTOR, env.encode())
        except BaseException:
            if registered is not None:
                self.dispatcher.unregister(*registered)
            raise

    def _expect_reply(
        self, env: Envelope, reply: Callable[[Envelope], None]
    ) -> tuple[str, str]:
        sender = env.sender
        if sender.address.host_id != self.did:
            raise ValidationError(
                "replies come back only to a handle hosted by this node", path="from.address"
            )
        inbox = sender.address.inbox_address
        if not self.dispatcher.has_inbox(inbox):
            self.dispatcher.add_inbox(inbox, sender.did, external=True)
        elif self.dispatcher.inbox_did(inbox) != sender.did or inbox in self._actors:
            raise AlreadyExists(f"inbox {inbox!r} belongs to another actor", path="from.address")
        broadcast = env.is_broadcast
        self.dispatcher.register(
            inbox,
            env.options.reply_to,
            Registration(
                lambda message: reply(message.envelope),
                capability=None,
                one_shot=not broadcast,
                expiry=env.options.expiry / 1e9,
                expected_senders=() if broadcast else (env.to.did, env.to.address.host_id),
            ),
        )
        return inbox, env.options.reply_to

    # --- sending ---------------------------------------------------------------------------------

    async def _deliver(self, env: Envelope, signer: KeyPair | None) -> None:
        """Send an envelope one of our actors made: to a local actor directly (it was made here,
        so there is nothing to authenticate), else over the network, signed by `signer` (a
        child) where the session does not prove the sender."""
        host = env.to.address.host_id
        if host == self.did:
            self._schedule(self.dispatcher.authorize(env, session_did=self.did, now=self.clock()))
            return
        if signer is not None and not env.signature:
            env = env.sign(signer)
        if env.signature or not env.capabilities:
            await self._net.send(host, kinds.ACTOR, env.encode())
            return
        # Unsigned over our own session: the chain goes once, then by reference.
        out = self._chains_out.get(host)
        if out is None:
            out = self._chains_out[host] = chains.ChainSender()
        await self._net.send(host, kinds.ACTOR,
                             out.frame_prefix(env.capabilities) + encode_bare(env))

    def _publish(self, env: Envelope, *, authenticated: bool = False) -> None:
        """A signed broadcast: to the gossip topic, and to this node's own subscribers (gossip
        does not deliver our own messages)."""
        topic = env.options.topic
        now = self.clock()
        if self.gossip is not None:
            self.gossip.publish(topic, env.encode())
        if not self.dispatcher.subscribers(topic):
            return
        try:
            if not authenticated:
                self.dispatcher.authenticate(env, session_did=None, now=now)
            admitted = self.dispatcher.authorize(env, session_did=None, now=now)
        except NunetError as exc:
            self._rejected(None, exc)
            return
        self._schedule(admitted)

    def _post(self, host: str, data: bytes) -> None:
        """Queue a reply for `host` (from a callback, which cannot await the send)."""
        tg = self._tg
        if tg is None:
            return
        queue = self._outbox.get(host)
        if queue is None:
            queue = self._outbox[host] = deque()
            tg.create_task(self._drain(host, queue))
        elif len(queue) >= _MAX_OUTBOX:
            queue.popleft()
            self.counters["reply_drops"] += 1
        queue.append(data)

    async def _drain(self, host: str, queue: deque[bytes]) -> None:
        try:
            while queue:
                try:
                    await self._net.send(host, kinds.ACTOR, queue.popleft())
                except NunetError:
                    self.counters["reply_send_failures"] += 1 + len(queue)
                    queue.clear()
        finally:
            if self._outbox.get(host) is queue:
                del self._outbox[host]

    def _reply(self, env: Envelope, inbox: str, payload: bytes) -> None:
        """Send `payload` as the reply to `env`, from the actor at `inbox` (or, if there is
        none, from this node: the host answers for its inboxes)."""
        actor = self._actors.get(inbox)
        sender = self.root.handle if actor is None else actor.handle
        reply = Envelope(
            env.sender,
            env.options.reply_to,
            sender,
            self.nonce(),
            Options(env.options.expiry),
            payload,
            (),
        )
        host = env.sender.address.host_id
        if host == self.did:
            try:
                admitted = self.dispatcher.authorize(reply, session_did=self.did, now=self.clock())
            except NunetError as exc:
                self._rejected(self.did, exc)
                return
            self._schedule(admitted)
            return
        if actor is not None and actor._signer is not None:
            reply = reply.sign(actor._signer)
        self._post(host, reply.encode())

    # --- receiving -------------------------------------------------------------------------------

    def _on_message(self, peer: str, data: memoryview) -> None:
        if self._tg is None:
            return
        raw: memoryview | None = data
        try:
            if data and data[0] < 0x80:  # a chain frame, not a bare envelope (msgpack 0x9N)
                raw = None
                found = self._unframe(peer, bytes(data))
                if found is None:
                    return
                env = found
            else:
                env = decode(data)
        except NunetError as exc:
            self._rejected(peer, exc)
            return
        now = self.clock()
        dispatcher = self.dispatcher
        try:
            dispatcher.authenticate(env, session_did=peer, now=now, raw=raw)
        except NunetError as exc:
            self._rejected(peer, exc)
            return
        try:
            admitted = dispatcher.authorize(env, session_did=peer, now=now)
        except NunetError as exc:
            self._rejected(peer, exc)
            if env.options.reply_to and not env.options.topic:
                self._reply(env, env.to.address.inbox_address, error_of(exc))
            return
        self._run(admitted)

    def _unframe(self, peer: str, data: bytes) -> Envelope | None:
        """The envelope of a chain frame with its chain put back; None for a control frame
        (ACK, NACK) or an unknown reference (refused, and the peer asked to define it again)."""
        tag = data[0]
        if tag in (chains.ACK, chains.NACK):
            cid = data[1 : 1 + chains.ID_SIZE]
            out = self._chains_out.get(peer)
            if out is not None and len(cid) == chains.ID_SIZE:
                (out.acked if tag == chains.ACK else out.nacked)(cid)
            return None
        table = self._chains_in.get(peer)
        if table is None:
            table = self._chains_in[peer] = chains.ChainReceiver()
        if tag == chains.DEFINE:
            cid, chain, body = chains.split_define(data)
            table.define(cid, chain)
            self._post(peer, chains.control(chains.ACK, cid))
        elif tag == chains.REF:
            cid, body = chains.split_ref(data)
            found = table.resolve(cid)
            if found is None:
                self._post(peer, chains.control(chains.NACK, cid))
                raise UnknownChain(f"no chain {cid.hex()} from {peer}", path="chain")
            chain = found
        else:
            raise DecodeError(f"unknown actor frame {tag:#04x}", path="envelope")
        return decode(body, chain)

    def _on_peer(self, peer: str, connected: bool) -> None:
        if not connected:
            self._chains_out.pop(peer, None)
            self._chains_in.pop(peer, None)

    def _on_gossip(self, message: GossipMessage) -> None:
        if self._tg is None:
            return
        try:
            env = _topic_envelope(message)
            admitted = self.dispatcher.admit(
                env, session_did=None, now=self.clock(), raw=message.data
            )
        except NunetError as exc:
            self._rejected(message.source, exc)
            return
        self._run(admitted)

    def _rejected(self, peer: str | None, exc: NunetError) -> None:
        self.rejections[exc.code] += 1
        self.recent_rejections.append((peer, exc))

    def _follow(self, topic: str) -> None:
        count = self._followed.get(topic, 0)
        self._followed[topic] = count + 1
        if count == 0 and self.gossip is not None:
            self.gossip.subscribe(topic, self._on_gossip)
            self.gossip.set_validator(topic, self._vet)

    def _vet(self, message: GossipMessage) -> Verdict:
        """Gossip's validator for our topics: an envelope that is not signed by its sender, or
        whose chain does not grant what our subscribers ask, is not passed on (and its relayer
        is penalised); an expired one is dropped without blame. What this node published
        passes: it was made here, or authenticated by `deliver_local` before it was published
        (the gossip publisher is proven by gossip's own signature, unlike the envelope's handle)."""
        if message.publisher == self.did:
            return Verdict.ACCEPT
        try:
            env = _topic_envelope(message)
            self.dispatcher.vet_broadcast(env, now=self.clock(), raw=message.data)
        except EnvelopeExpired:
            return Verdict.IGNORE
        except NunetError as exc:
            self._rejected(message.source, exc)
            return Verdict.REJECT
        return Verdict.ACCEPT

    def _unfollow(self, topic: str) -> None:
        count = self._followed.get(topic, 0) - 1
        if count > 0:
            self._followed[topic] = count
            return
        self._followed.pop(topic, None)
        if count == 0 and self.gossip is not None:
            self.gossip.set_validator(topic, None)
            self.gossip.unsubscribe(topic, self._on_gossip)

    # --- running handlers ------------------------------------------------------------------------

    def _schedule(self, admitted: Admitted) -> None:
        """Run the handlers on the next tick, as if the envelope had come from the network."""
        assert self._loop is not None
        self._loop.call_soon(self._run, admitted)

    def _run(self, admitted: Admitted) -> None:
        env, session_did, link = admitted.envelope, admitted.session_did, admitted.link
        for inbox, reg in admitted.targets:
            try:
                result = reg.handler(Message(env, session_did, inbox, link))
            except Exception as exc:
                self._done(admitted, inbox, None, exc)
                continue
            if result is None or type(result) is bytes:
                self._done(admitted, inbox, result, None)
            elif isinstance(result, Awaitable):
                self._start(admitted, inbox, result)
            else:
                self._done(admitted, inbox, result, None)

    def _start(self, admitted: Admitted, inbox: str, result: Awaitable[object]) -> None:
        tg = self._tg
        actor = self._actors.get(inbox)
        if tg is None:
            _close(result)
            self.dispatcher.release(admitted)
            return
        task = tg.create_task(self._await(admitted, inbox, result))
        if actor is not None:
            actor._tasks.add(task)
            task.add_done_callback(actor._tasks.discard)

    async def _await(self, admitted: Admitted, inbox: str, result: Awaitable[object]) -> None:
        try:
            value = await result
        except asyncio.CancelledError:
            self._done(admitted, inbox, None, ActorStopped(f"actor {inbox} stopped"))
            raise
        except Exception as exc:
            self._done(admitted, inbox, None, exc)
        else:
            self._done(admitted, inbox, value, None)

    def _done(
        self, admitted: Admitted, inbox: str, value: object, error: BaseException | None
    ) -> None:
        admitted.remaining -= 1
        if admitted.remaining == 0:
            self.dispatcher.release(admitted)
        env = admitted.envelope
        if error is None and (value is None or type(value) is bytes):
            # The common case, first: a reply payload is made only when one is asked for.
            if env.options.reply_to:
                self._reply(env, inbox, reply_payload(value))
            return
        if error is None and isinstance(value, bytearray | memoryview):
            payload = reply_payload(bytes(value))
        else:
            if error is None:
                error = LocalProtocolError(
                    f"{env.behavior} returned {type(value).__name__}, not bytes or None"
                )
            self.counters["handler_errors"] += 1
            if isinstance(error, NunetError):
                payload = error_of(error)
            else:
                log.error("handler of %s in %s failed", env.behavior, inbox, exc_info=error)
                payload = error_payload("internal", f"internal error in {env.behavior}")
        if env.options.reply_to:
            self._reply(env, inbox, payload)

    def _check_running(self) -> None:
        if self._tg is None:
            raise LocalProtocolError("the actor system is not running")

    def stats(self) -> dict[str, object]:
        return {
            "actors": len(self._actors),
            "in_flight": self.dispatcher.in_flight(),
            "rejections": dict(self.rejections),
            **self.counters,
        }


def _topic_envelope(message: GossipMessage) -> Envelope:
    """The envelope a gossip message carries, refused unless it names the topic it came on."""
    env = decode(message.data)
    if env.options.topic != message.topic:
        raise DecodeError(
            f"an envelope for {env.options.topic or 'no topic'} on {message.topic}",
            path="options.topic",
        )
    return env


def _healthy(_message: Message) -> bytes:
    return b"ok"


def _close(result: Awaitable[object]) -> None:
    if isinstance(result, Coroutine):
        result.close()
