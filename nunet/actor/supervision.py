"""Supervision: a parent actor watches its children and restarts them (Erlang/OTP style).

`SupervisorCore` is the state machine (sans-I/O, `now` passed in): it says when to ping which
child (`Ping`), and what to do when one fails (`Restart`: which to stop, in which order, which
to start again) or when failures come too often (`Escalate`). A child fails when it stops with a
reason (`Actor.stop(reason)`) or misses `max_misses` healthchecks in a row; a child that stops
without a reason has finished and is no longer supervised.

Strategies: `one_for_one` restarts the failed child; `one_for_all` stops every child (last
started first) and starts them all again; `rest_for_one` does that for the failed child and those
started after it. More than `max_restarts` restarts within `within_s` escalate instead.

`Supervisor` is the asyncio adapter and a daemon component: it pings each child's
`/dms/actor/healthcheck` through the parent (every `interval_s`, default 30 s), restarts children
through the factories they were started with, and escalates by stopping the parent with a
`SupervisionError`, which reaches the parent's own supervisor the same way.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec

from nunet.actor.runtime import HEALTHCHECK, Actor
from nunet.errors import (
    AlreadyExists,
    LocalProtocolError,
    NotFound,
    NunetError,
    SupervisionError,
)

DEFAULT_INTERVAL_S = 30.0
DEFAULT_MAX_MISSES = 3


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Ping(msgspec.Struct, frozen=True):
    """Call `child`'s healthcheck; report `pong` or `missed`."""

    child: str


class Restart(msgspec.Struct, frozen=True):
    """Stop `stop` (in that order), then start `start` (in that order); report `restarted`."""

    stop: tuple[str, ...]
    start: tuple[str, ...]
    reason: str


class Escalate(msgspec.Struct, frozen=True):
    """Failures beyond what this supervisor may repair: its parent fails."""

    reason: str


Action = Ping | Restart | Escalate


class _Child:
    __slots__ = ("due", "misses", "pinging")

    def __init__(self, due: float) -> None:
        self.due = due
        self.misses = 0
        self.pinging = False


class SupervisorCore:
    def __init__(
        self,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_misses: int = DEFAULT_MAX_MISSES,
        max_restarts: int = 3,
        within_s: float = 60.0,
    ) -> None:
        if interval_s <= 0 or max_misses < 1 or max_restarts < 0 or within_s <= 0:
            raise LocalProtocolError("supervision intervals and limits must be positive")
        self.strategy = strategy
        self.interval_s = interval_s
        self.max_misses = max_misses
        self.max_restarts = max_restarts
        self.within_s = within_s
        self._children: dict[str, _Child] = {}  # in start order
        self._restarts: deque[float] = deque()
        self.escalated = False

    @property
    def children(self) -> tuple[str, ...]:
        return tuple(self._children)

    def add(self, name: str, now: float) -> None:
        if name in self._children:
            raise AlreadyExists(f"child {name!r} is supervised already", path="name")
        self._children[name] = _Child(now + self.interval_s)

    def remove(self, name: str) -> None:
        """`name` finished (or was taken away): no longer supervised."""
        self._children.pop(name, None)

    def next_due(self) -> float | None:
        due = [c.due for c in self._children.values() if not c.pinging]
        return min(due) if due else None

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for name, child in self._children.items():
            if not child.pinging and child.due <= now:
                child.pinging = True
                actions.append(Ping(name))
        return actions

    def pong(self, name: str, now: float) -> None:
        child = self._children.get(name)
        if child is not None:
            child.pinging = False
            child.misses = 0
            child.due = now + self.interval_s

    def missed(self, name: str, now: float) -> list[Action]:
        child = self._children.get(name)
        if child is None:
            return []
        child.pinging = False
        child.misses += 1
        child.due = now + self.interval_s
        if child.misses >= self.max_misses:
            return self.failed(name, f"{child.misses} healthchecks missed", now)
        return []

    def failed(self, name: str, reason: str, now: float) -> list[Action]:
        if name not in self._children or self.escalated:
            return []
        restarts = self._restarts
        while restarts and restarts[0] <= now - self.within_s:
            restarts.popleft()
        if len(restarts) >= self.max_restarts:
            self.escalated = True
            return [Escalate(f"child {name!r} failed ({reason}) after {len(restarts)} restarts "
                             f"within {self.within_s:g} s")]
        restarts.append(now)
        order = list(self._children)
        if self.strategy is Strategy.ONE_FOR_ONE:
            affected = [name]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            affected = order
        else:
            affected = order[order.index(name) :]
        for n in affected:
            child = self._children[n]
            child.misses = 0
            child.pinging = False
            child.due = now + self.interval_s
        return [Restart(stop=tuple(reversed(affected)), start=tuple(affected), reason=reason)]


Factory = Callable[[Actor], "Actor | Awaitable[Actor]"]


class Supervisor:
    """Watches the children of `parent` that it started (`start_child`)."""

    def __init__(
        self,
        parent: Actor,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_misses: int = DEFAULT_MAX_MISSES,
        max_restarts: int = 3,
        within_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parent = parent
        self.core = SupervisorCore(
            strategy,
            interval_s=interval_s,
            max_misses=max_misses,
            max_restarts=max_restarts,
            within_s=within_s,
        )
        self._clock = clock
        self._factories: dict[str, Factory] = {}
        self._actors: dict[str, Actor] = {}
        self._expected: set[Actor] = set()  # children we are stopping ourselves
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self.restarts = 0

    def child(self, name: str) -> Actor:
        actor = self._actors.get(name)
        if actor is None:
            raise NotFound(f"no supervised child {name!r}", path="name")
        return actor

    async def start_child(self, name: str, factory: Factory) -> Actor:
        """Start a child with `factory(parent)` (which spawns it under the parent and gives it
        its behaviours) and supervise it; the same factory restarts it."""
        if name in self._factories:
            raise AlreadyExists(f"child {name!r} is supervised already", path="name")
        actor = await self._make(factory)
        self._factories[name] = factory
        self.core.add(name, self._clock())
        self._watch(name, actor)
        self._wake.set()
        return actor

    async def run(self, started: Callable[[], None]) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                started()
                while not self.parent.stopped:
                    now = self._clock()
                    for action in self.core.tick(now):
                        tg.create_task(self._apply(action))
                    due = self.core.next_due()
                    self._wake.clear()
                    try:
                        wait = None if due is None else max(0.0, due - self._clock())
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
            finally:
                self._tg = None

    # --- adapter ---------------------------------------------------------------------------------

    async def _make(self, factory: Factory) -> Actor:
        made = factory(self.parent)
        actor = await made if inspect.isawaitable(made) else made
        if not isinstance(actor, Actor) or actor.parent is not self.parent:
            raise LocalProtocolError("a child factory must return an actor spawned by the parent")
        return actor

    def _watch(self, name: str, actor: Actor) -> None:
        self._actors[name] = actor
        actor.on_exit(lambda a, reason: self._exited(name, a, reason))

    def _exited(self, name: str, actor: Actor, reason: NunetError | None) -> None:
        if actor in self._expected:
            self._expected.discard(actor)
            return
        if self._actors.get(name) is not actor:
            return
        if reason is None or self.parent.stopped:
            self._forget(name)
            return
        self._act(self.core.failed(name, str(reason), self._clock()))

    def _forget(self, name: str) -> None:
        self.core.remove(name)
        self._actors.pop(name, None)
        self._factories.pop(name, None)

    def _act(self, actions: list[Action]) -> None:
        tg = self._tg
        if tg is not None:
            for action in actions:
                tg.create_task(self._apply(action))

    async def _apply(self, action: Action) -> None:
        if isinstance(action, Ping):
            await self._ping(action.child)
        elif isinstance(action, Restart):
            await self._restart(action)
        else:
            await self.parent.stop(SupervisionError(action.reason))
        self._wake.set()

    async def _ping(self, name: str) -> None:
        actor = self._actors.get(name)
        if actor is None:
            return
        try:
            await self.parent.invoke(actor.handle, HEALTHCHECK, b"", timeout=self.core.interval_s)
        except NunetError:
            if not self.parent.stopped:
                self._act(self.core.missed(name, self._clock()))
        else:
            self.core.pong(name, self._clock())

    async def _restart(self, action: Restart) -> None:
        for name in action.stop:
            actor = self._actors.get(name)
            if actor is not None and not actor.stopped:
                self._expected.add(actor)
                await actor.stop()
        for name in action.start:
            factory = self._factories.get(name)
            if factory is None or self.parent.stopped:
                continue
            try:
                actor = await self._make(factory)
            except Exception as exc:
                await self.parent.stop(
                    SupervisionError(f"child {name!r} could not be restarted: {exc}")
                )
                return
            self._watch(name, actor)
        self.restarts += 1
