"""Supervision: the state machine with a fake clock, then the adapter on a running node."""

from __future__ import annotations

import asyncio

import pytest
from actor_world import NODE_A, until, world

from nunet.actor.runtime import HEALTHCHECK, Actor, Message
from nunet.actor.supervision import (
    Escalate,
    Ping,
    Restart,
    Strategy,
    Supervisor,
    SupervisorCore,
)
from nunet.errors import AlreadyExists, LocalProtocolError, NotFound, SupervisionError


def core(strategy: Strategy = Strategy.ONE_FOR_ONE, **kw: float) -> SupervisorCore:
    c = SupervisorCore(strategy, interval_s=30, **kw)  # type: ignore[arg-type]
    for name in ("a", "b", "c"):
        c.add(name, 0.0)
    return c


def test_pings_are_due_every_interval_and_not_doubled() -> None:
    c = core()
    assert c.tick(29.9) == []
    assert c.tick(30.0) == [Ping("a"), Ping("b"), Ping("c")]
    assert c.tick(31.0) == []  # in flight
    assert c.next_due() is None
    c.pong("a", 32.0)
    assert c.next_due() == 62.0
    assert c.tick(62.0) == [Ping("a")]


def test_three_misses_restart_one_for_one() -> None:
    c = core()
    now = 0.0
    actions: list[object] = []
    for _ in range(3):
        now += 30
        assert Ping("b") in c.tick(now)
        c.pong("a", now)
        c.pong("c", now)
        actions = c.missed("b", now)  # type: ignore[assignment]
    assert actions == [Restart(stop=("b",), start=("b",), reason="3 healthchecks missed")]
    # A pong in between resets the count.
    c.tick(now + 40)
    c.missed("b", now + 41)
    c.tick(now + 80)
    c.pong("b", now + 81)
    c.tick(now + 120)
    assert c.missed("b", now + 121) == []


@pytest.mark.parametrize(
    ("strategy", "failed", "stop", "start"),
    [
        (Strategy.ONE_FOR_ONE, "b", ("b",), ("b",)),
        (Strategy.ONE_FOR_ALL, "b", ("c", "b", "a"), ("a", "b", "c")),
        (Strategy.REST_FOR_ONE, "b", ("c", "b"), ("b", "c")),
        (Strategy.REST_FOR_ONE, "c", ("c",), ("c",)),
    ],
)
def test_strategies(strategy: Strategy, failed: str, stop: tuple[str, ...],
                    start: tuple[str, ...]) -> None:
    assert core(strategy).failed(failed, "boom", 5.0) == [Restart(stop, start, "boom")]


def test_too_many_restarts_escalate_once() -> None:
    c = core(max_restarts=2, within_s=60)
    assert isinstance(c.failed("a", "x", 0)[0], Restart)
    assert isinstance(c.failed("a", "x", 10)[0], Restart)
    (escalate,) = c.failed("a", "x", 20)
    assert isinstance(escalate, Escalate)
    assert "after 2 restarts" in escalate.reason
    assert c.escalated
    assert c.failed("b", "x", 21) == []
    # Restarts spread out beyond the window do not escalate.
    d = core(max_restarts=1, within_s=60)
    assert isinstance(d.failed("a", "x", 0)[0], Restart)
    assert isinstance(d.failed("a", "x", 61)[0], Restart)


def test_registry_rules() -> None:
    c = core()
    with pytest.raises(AlreadyExists):
        c.add("a", 0)
    c.remove("a")
    assert c.children == ("b", "c")
    assert c.failed("a", "gone", 1) == []
    assert c.missed("a", 1) == []
    with pytest.raises(LocalProtocolError):
        SupervisorCore(interval_s=0)


# --- the adapter ----------------------------------------------------------------------------


async def test_supervisor_restarts_failed_and_silent_children_then_escalates() -> None:
    async with world([NODE_A]) as w:
        system = w[0]
        parent = system.spawn("orchestrator")
        exits: list[object] = []
        parent.on_exit(lambda _a, reason: exits.append(reason))
        sup = Supervisor(parent, Strategy.REST_FOR_ONE, interval_s=0.2, max_restarts=3,
                         within_s=60)
        made: dict[str, int] = {}

        def factory(name: str):  # type: ignore[no-untyped-def]
            def make(p: Actor) -> Actor:
                made[name] = made.get(name, 0) + 1
                return system.spawn(parent=p)

            return make

        ready = asyncio.Event()
        task = asyncio.create_task(sup.run(ready.set))
        await ready.wait()
        first = await sup.start_child("first", factory("first"))
        second = await sup.start_child("second", factory("second"))
        with pytest.raises(AlreadyExists):
            await sup.start_child("first", factory("first"))
        await asyncio.sleep(0.5)  # healthy children answer their healthchecks
        assert made == {"first": 1, "second": 1}
        # A failure of "first" restarts it and the ones started after it (rest_for_one).
        await first.stop(SupervisionError("crashed"))
        await until(lambda: made == {"first": 2, "second": 2})
        assert second.stopped
        assert sup.child("second") is not second
        # A child that stops answering is restarted after 3 missed healthchecks.
        never = asyncio.Event()

        async def hang(_m: Message) -> bytes:
            await never.wait()
            return b""

        silent = sup.child("second")
        silent.add_behavior(HEALTHCHECK, hang)
        await until(lambda: made["second"] == 3, timeout=10)
        assert silent.stopped
        assert made["first"] == 2
        # A child that finishes normally is no longer supervised.
        await sup.child("second").stop()
        with pytest.raises(NotFound):
            sup.child("second")
        # Failures beyond the limit escalate: the parent fails, with its children.
        await sup.child("first").stop(SupervisionError("again"))
        await until(lambda: made["first"] == 3)
        await sup.child("first").stop(SupervisionError("and again"))
        await until(lambda: parent.stopped)
        assert len(exits) == 1
        assert isinstance(exits[0], SupervisionError)
        assert "after 3 restarts" in str(exits[0])
        assert sup.restarts == 3
        await asyncio.wait_for(task, 5)  # the supervisor ends with its parent


async def test_factories_must_spawn_under_the_parent() -> None:
    async with world([NODE_A]) as w:
        system = w[0]
        sup = Supervisor(system.spawn("p"), interval_s=10)
        with pytest.raises(LocalProtocolError):
            await sup.start_child("x", lambda _p: system.spawn())
