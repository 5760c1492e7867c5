"""Message de-duplication: every case runs against the compiled module and its pure-Python twin
(the `dedup` fixture); a differential hypothesis test holds the two to identical results."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nunet._native._reference import dedup as reference
from nunet.errors import LocalProtocolError, ValidationError

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def mid(n: int, prefix: bytes = b"") -> bytes:
    """A 32-byte id; ids sharing `prefix` (8 bytes) share their hash, so they pile up in one
    probe run and only the full 32-byte compare tells them apart."""
    body = n.to_bytes(32, "big")
    return (prefix + body[len(prefix) :]) if prefix else body[::-1]


SAME_HASH = b"\xab" * 8


# --- basics ---------------------------------------------------------------------------------------


def test_new_then_seen(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(10, 5.0)
    assert len(cache) == 0
    assert cache.check_and_add(mid(1), 0.0) is True
    assert cache.check_and_add(mid(1), 1.0) is False
    assert cache.contains(mid(1), 1.0) is True
    assert cache.contains(mid(2), 1.0) is False
    assert len(cache) == 1


def test_defaults(dedup: ModuleType) -> None:
    cache = dedup.SeenCache()
    assert cache.capacity == dedup.DEFAULT_CAPACITY == 100_000
    assert cache.ttl == dedup.DEFAULT_TTL == 120.0
    assert dedup.ID_SIZE == 32
    keyword = dedup.SeenCache(capacity=7, ttl=3)
    assert (keyword.capacity, keyword.ttl) == (7, 3.0)
    assert isinstance(keyword.ttl, float)


def test_ttl_deadline_is_exclusive(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(10, 5.0)
    cache.check_and_add(mid(1), 10.0)
    assert cache.contains(mid(1), 14.999)
    assert not cache.contains(mid(1), 15.0)
    assert len(cache) == 0
    assert cache.check_and_add(mid(1), 15.0) is True


def test_seen_again_does_not_refresh(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(10, 5.0)
    cache.check_and_add(mid(1), 0.0)
    assert cache.check_and_add(mid(1), 4.0) is False
    assert cache.check_and_add(mid(1), 5.0) is True  # 5 s after the first sighting


def test_expire_counts_and_drops_oldest_first(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(10, 10.0)
    for i in range(5):
        cache.check_and_add(mid(i), float(i))
    assert cache.expire(9.0) == 0
    assert cache.expire(11.5) == 2  # added at 0 and 1
    assert len(cache) == 3
    assert not cache.contains(mid(1), 11.5)
    assert cache.contains(mid(2), 11.5)
    assert cache.expire(100.0) == 3
    assert len(cache) == 0


def test_clock_never_goes_back(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(10, 5.0)
    cache.check_and_add(mid(1), 10.0)
    assert cache.contains(mid(1), 0.0)  # 0 is taken as 10
    cache.contains(mid(9), 20.0)  # the clock moves to 20: mid(1) is gone
    assert not cache.contains(mid(1), 12.0)
    assert cache.check_and_add(mid(2), 12.0) is True  # added at 20, not 12
    assert cache.contains(mid(2), 24.9)
    assert not cache.contains(mid(2), 25.0)


def test_full_cache_evicts_the_oldest(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(3, 100.0)
    for i in range(3):
        assert cache.check_and_add(mid(i), 0.0)
    assert cache.check_and_add(mid(0), 1.0) is False  # a duplicate evicts nothing
    assert len(cache) == 3
    assert cache.check_and_add(mid(3), 1.0) is True
    assert len(cache) == 3
    assert [cache.contains(mid(i), 1.0) for i in range(4)] == [False, True, True, True]
    # The evicted id is new again, and evicts the next oldest.
    assert cache.check_and_add(mid(0), 1.0) is True
    assert [cache.contains(mid(i), 1.0) for i in range(4)] == [True, False, True, True]


def test_capacity_one(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(1, 100.0)
    assert cache.check_and_add(mid(1), 0.0)
    assert not cache.check_and_add(mid(1), 0.0)
    assert cache.check_and_add(mid(2), 0.0)
    assert not cache.contains(mid(1), 0.0)
    assert len(cache) == 1


def test_ids_with_the_same_hash_are_told_apart(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(64, 100.0)
    ids = [mid(i, SAME_HASH) for i in range(64)]
    assert len(set(ids)) == 64
    assert all(cache.check_and_add(x, 0.0) for x in ids)
    assert not any(cache.check_and_add(x, 0.0) for x in ids)
    assert not cache.contains(mid(999, SAME_HASH), 0.0)
    # Evicting from the middle of one long probe run keeps every other member reachable.
    for i in range(64, 96):
        assert cache.check_and_add(mid(i, SAME_HASH), 1.0)
        assert not cache.contains(mid(i - 64, SAME_HASH), 1.0)
        assert all(cache.contains(mid(j, SAME_HASH), 1.0) for j in range(i - 63, i + 1))


def test_ids_differing_in_the_last_byte(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(300, 100.0)
    base = bytearray(b"\x11" * 32)
    ids = []
    for i in range(256):
        base[31] = i
        ids.append(bytes(base))
    assert all(cache.check_and_add(x, 0.0) for x in ids)
    assert len(cache) == 256


def test_bytes_like_ids_are_the_same_key(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(10, 5.0)
    cache.check_and_add(bytearray(mid(1)), 0.0)
    assert cache.contains(mid(1), 0.0)
    assert cache.contains(memoryview(mid(1)), 0.0)
    strided = memoryview(bytes(x for b in mid(2) for x in (b, 0)))[::2]
    assert cache.check_and_add(mid(2), 0.0)
    assert cache.contains(strided, 0.0)

    class Digest(bytes):
        pass

    assert cache.contains(Digest(mid(1)), 0.0)


def test_caller_may_reuse_its_buffer(dedup: ModuleType) -> None:
    """The cache copies the id: mutating the caller's bytearray afterwards changes nothing."""
    cache = dedup.SeenCache(10, 5.0)
    buf = bytearray(mid(1))
    cache.check_and_add(buf, 0.0)
    buf[0] ^= 0xFF
    assert cache.contains(mid(1), 0.0)
    assert not cache.contains(bytes(buf), 0.0)


def test_clear(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(4, 5.0)
    for i in range(6):
        cache.check_and_add(mid(i), 10.0)
    cache.clear()
    assert len(cache) == 0
    assert not cache.contains(mid(5), 10.0)
    assert cache.check_and_add(mid(5), 0.0)  # the clock is kept: added at 10
    assert not cache.contains(mid(5), 15.0)


def test_bytes_per_entry(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(300_000, 120.0)
    per_entry = cache.bytes_per_entry
    assert isinstance(per_entry, float)
    if dedup is reference:
        assert per_entry > 100
    else:
        # 40-byte ring entry + an 8-byte slot at load factor 3/8..3/4
        assert 40 + 8 * 4 / 3 <= per_entry <= 40 + 8 * 8 / 3


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [b"", b"x" * 31, b"x" * 33, bytearray(33), "x" * 32, 32, None, [0] * 32, 1.5]
)
def test_bad_id_is_a_local_error_and_changes_nothing(dedup: ModuleType, bad: Any) -> None:
    cache = dedup.SeenCache(2, 5.0)
    cache.check_and_add(mid(1), 1.0)
    cache.check_and_add(mid(2), 1.0)
    for call in (cache.check_and_add, cache.contains):
        with pytest.raises(LocalProtocolError, match="msg_id"):
            call(bad, 100.0)
    # Neither the clock nor the entries moved.
    assert len(cache) == 2
    assert cache.contains(mid(1), 1.0)


def test_released_memoryview_is_a_local_error(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(2, 5.0)
    view = memoryview(mid(1))
    view.release()
    with pytest.raises(LocalProtocolError, match="msg_id"):
        cache.check_and_add(view, 0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**400, "1", None, True, b"1"])
def test_bad_now_is_a_local_error_and_changes_nothing(dedup: ModuleType, bad: Any) -> None:
    cache = dedup.SeenCache(2, 5.0)
    cache.check_and_add(mid(1), 1.0)
    for call in (
        lambda: cache.check_and_add(mid(2), bad),
        lambda: cache.contains(mid(1), bad),
        lambda: cache.expire(bad),
    ):
        with pytest.raises(LocalProtocolError, match="now"):
            call()
    assert len(cache) == 1
    assert cache.contains(mid(1), 1.0)


def test_integer_now_is_accepted(dedup: ModuleType) -> None:
    cache = dedup.SeenCache(2, 5)
    assert cache.check_and_add(mid(1), 3)
    assert cache.contains(mid(1), 7)
    assert cache.expire(8) == 1


@pytest.mark.parametrize(
    ("capacity", "ttl", "field"),
    [
        (0, 1.0, "capacity"),
        (-1, 1.0, "capacity"),
        ((1 << 26) + 1, 1.0, "capacity"),
        (10**30, 1.0, "capacity"),
        (1.0, 1.0, "capacity"),
        (True, 1.0, "capacity"),
        ("10", 1.0, "capacity"),
        (10, 0, "ttl"),
        (10, -1.0, "ttl"),
        (10, math.nan, "ttl"),
        (10, math.inf, "ttl"),
        (10, 10**400, "ttl"),
        (10, "1", "ttl"),
        (10, True, "ttl"),
        (10, None, "ttl"),
    ],
)
def test_bad_config_is_a_validation_error(
    dedup: ModuleType, capacity: Any, ttl: Any, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        dedup.SeenCache(capacity, ttl)
    assert info.value.path == field


def test_max_capacity_is_accepted(dedup: ModuleType) -> None:
    assert dedup.MAX_CAPACITY == 1 << 26
    if dedup is reference:
        assert dedup.SeenCache(dedup.MAX_CAPACITY, 1.0).capacity == 1 << 26
    # The compiled cache reserves its arrays up front (lazily mapped); 1 << 26 would be 3.5 GiB
    # of address space, so the native half checks the bound with a smaller neighbour.
    else:
        assert dedup.SeenCache(1 << 20, 1.0).capacity == 1 << 20


# --- differential -------------------------------------------------------------------------------

POOL = [mid(i) for i in range(12)] + [mid(i, SAME_HASH) for i in range(12)]

op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, len(POOL) - 1), st.floats(-1.0, 3.0)),
    st.tuples(st.just("has"), st.integers(0, len(POOL) - 1), st.floats(-1.0, 3.0)),
    st.tuples(st.just("expire"), st.just(0), st.floats(-1.0, 6.0)),
    st.tuples(st.just("clear"), st.just(0), st.just(0.0)),
)


def apply(cache: Any, ops: list[tuple[str, int, float]], start: float) -> list[object]:
    """Runs `ops` with time moving by each op's delta (negative deltas try to go back)."""
    now = start
    out: list[object] = []
    for name, index, delta in ops:
        now += delta
        if name == "add":
            out.append(cache.check_and_add(POOL[index], now))
        elif name == "has":
            out.append(cache.contains(POOL[index], now))
        elif name == "expire":
            out.append(cache.expire(now))
        else:
            cache.clear()
            out.append(None)
        out.append(len(cache))
    return out


@FUZZ
@given(
    capacity=st.integers(1, 9),
    ttl=st.sampled_from([0.5, 1.0, 2.5, 4.0]),
    ops=st.lists(op, max_size=120),
    start=st.sampled_from([0.0, 1e9, -50.0]),
)
def test_native_matches_reference(
    native: Callable[[str], ModuleType],
    capacity: int,
    ttl: float,
    ops: list[tuple[str, int, float]],
    start: float,
) -> None:
    compiled = native("dedup")
    got = apply(compiled.SeenCache(capacity, ttl), ops, start)
    want = apply(reference.SeenCache(capacity, ttl), ops, start)
    assert got == want


@pytest.mark.parametrize("capacity", [1000, 3000])
def test_native_matches_reference_under_churn(
    native: Callable[[str], ModuleType], capacity: int
) -> None:
    """Long random run at a realistic fill: table wrap-around, long probe runs, growth of the
    compiled cache's arrays (they start at 1024 entries), eviction and expiry interleaved."""
    compiled = native("dedup")
    rng = random.Random(capacity)
    ids = [rng.randbytes(32) for _ in range(3 * capacity)] + [mid(i, SAME_HASH) for i in range(200)]
    a = compiled.SeenCache(capacity, 3.0)
    b = reference.SeenCache(capacity, 3.0)
    now = 0.0
    for step in range(60_000):
        if step == 30_000:
            a.clear()
            b.clear()
        now += rng.random() * 3.0 / capacity
        x = rng.choice(ids)
        if rng.random() < 0.7:
            assert a.check_and_add(x, now) == b.check_and_add(x, now)
        else:
            assert a.contains(x, now) == b.contains(x, now)
    assert len(a) == len(b)
    assert a.expire(now + 10) == b.expire(now + 10)
