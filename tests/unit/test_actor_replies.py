"""What a handler returns becomes its reply (the runtime's fast path and its slower branches):
bytes, None, bytes-like objects, from plain and coroutine handlers, and one-way sends that ask
for no reply at all."""

from __future__ import annotations

import pytest
from actor_world import NODE_A, NODE_B, until, world

from nunet.actor.runtime import Message
from nunet.errors import RemoteActorError


async def test_bytes_like_and_empty_results_are_replies() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]

        async def later(m: Message) -> bytearray:
            return bytearray(b"async:" + m.payload)

        b.root.add_behavior("/test/bytes", lambda m: b"b:" + m.payload)
        b.root.add_behavior("/test/bytearray", lambda m: bytearray(b"ba:" + m.payload))
        b.root.add_behavior("/test/memoryview", lambda m: memoryview(b"mv:" + m.payload))
        b.root.add_behavior("/test/none", lambda m: None)
        b.root.add_behavior("/test/async", later)
        assert await a.root.invoke(b.root.handle, "/test/bytes", b"1") == b"b:1"
        assert await a.root.invoke(b.root.handle, "/test/bytearray", b"2") == b"ba:2"
        assert await a.root.invoke(b.root.handle, "/test/memoryview", b"3") == b"mv:3"
        assert await a.root.invoke(b.root.handle, "/test/none", b"4") == b""
        assert await a.root.invoke(b.root.handle, "/test/async", b"5") == b"async:5"
        assert b.counters["handler_errors"] == 0
        assert b.stats()["in_flight"] == 0


async def test_one_way_results_and_errors_send_nothing_back() -> None:
    async with world([NODE_A, NODE_B]) as w:
        a, b = w[0], w[1]
        got: list[bytes] = []

        def record(m: Message) -> bytes:
            got.append(m.payload)
            return b"nobody asked"

        def wrong(m: Message) -> int:
            got.append(m.payload)
            return 7

        b.root.add_behavior("/test/record", record)
        b.root.add_behavior("/test/wrong", wrong)  # type: ignore[arg-type]
        await a.root.send(b.root.handle, "/test/record", b"x")
        await a.root.send(b.root.handle, "/test/wrong", b"y")
        await until(lambda: len(got) == 2)
        await until(lambda: b.counters["handler_errors"] == 1)
        assert got == [b"x", b"y"]
        assert b.stats()["in_flight"] == 0
        assert not a.rejections  # no reply went back to a behaviour that does not exist
        with pytest.raises(RemoteActorError) as info:
            await a.root.invoke(b.root.handle, "/test/wrong", b"z")
        assert info.value.remote_code == "local_protocol_error"
        assert b.counters["handler_errors"] == 2
