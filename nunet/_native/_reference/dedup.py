"""Message de-duplication, pure Python: the readable specification of `nunet/_native/dedup.pyx`.

`SeenCache` remembers 32-byte message ids (blake3 digests) for a while, so that gossip forwards
and delivers each message once.

Invariants (both twins keep them; the differential tests hold them to it):
- Exact: an id is reported seen only if that very id was added and is still held. No false
  positives (a Bloom filter would drop a genuine message now and then), no false negatives
  while the entry is live and has not been evicted.
- Time-bounded: an id added at `now = t` is live while `now < t + ttl` and gone from
  `now >= t + ttl` on (the deadline itself is outside). Adding an id that is already live does
  not refresh it: time counts from the first sighting, as in gossipsub.
- No clock reads: every call takes `now` (seconds, any epoch). Time never goes backwards inside
  the cache: a `now` older than the latest one seen is taken as the latest, so a clock step back
  cannot resurrect or reorder entries.
- Bounded memory: at most `capacity` entries. Adding a new id to a full cache evicts the oldest
  one (first-in, first-out, which is also the order of expiry). Every call first drops the
  entries that have expired by `now`, oldest first, so `len()` counts live entries only.
- Errors: a `msg_id` that is not a bytes-like object of exactly 32 bytes, or a `now` that is not
  a finite real number, is the caller's bug: `LocalProtocolError`, and the cache is unchanged.
  A bad `capacity` or `ttl` is a `ValidationError` naming the field.
"""

from __future__ import annotations

import math
from collections import deque

from nunet.errors import LocalProtocolError, ValidationError

ID_SIZE = 32
DEFAULT_CAPACITY = 100_000
DEFAULT_TTL = 120.0
MAX_CAPACITY = 1 << 26

# What one entry costs this twin: RSS growth measured filling 100k..1M entries on CPython 3.11
# (226-237 B): the id's bytes object (which the cache keeps alive), the float, the (deadline, id)
# tuple, the dict slot with its share of the index, the deque's pointer. The compiled module
# copies ids into a C array and reports its exact figure.
_PURE_BYTES_PER_ENTRY = 230.0

_Bytes = bytes | bytearray | memoryview


def _check_config(capacity: object, ttl: object) -> tuple[int, float]:
    """`capacity` and `ttl` checked and normalised; ValidationError names the bad one."""
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise ValidationError("capacity must be an integer", path="capacity")
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ValidationError(f"capacity must be in 1..{MAX_CAPACITY}", path="capacity")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ValidationError("ttl must be a number of seconds", path="ttl")
    try:
        seconds = float(ttl)
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValidationError("ttl must be a finite number of seconds above 0", path="ttl")
    return capacity, seconds


def _key(msg_id: object) -> bytes:
    if type(msg_id) is bytes:
        key = msg_id
    elif isinstance(msg_id, bytes | bytearray | memoryview):
        try:
            key = bytes(msg_id)
        except ValueError as exc:  # a released memoryview
            raise LocalProtocolError(f"msg_id is not readable: {exc}") from None
    else:
        raise LocalProtocolError(f"msg_id must be bytes, not {type(msg_id).__name__}")
    if len(key) != ID_SIZE:
        raise LocalProtocolError(f"msg_id must be {ID_SIZE} bytes, got {len(key)}")
    return key


def _time(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise LocalProtocolError(f"now must be a number, not {type(now).__name__}")
    try:
        value = float(now)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise LocalProtocolError("now must be a finite number")
    return value


class SeenCache:
    """Exact, time-bounded, size-bounded set of 32-byte message ids."""

    __slots__ = ("_capacity", "_clock", "_deadlines", "_order", "_ttl")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, ttl: float = DEFAULT_TTL) -> None:
        self._capacity, self._ttl = _check_config(capacity, ttl)
        self._deadlines: dict[bytes, float] = {}
        self._order: deque[tuple[float, bytes]] = deque()
        self._clock = -math.inf

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def bytes_per_entry(self) -> float:
        """Memory one entry costs, at full capacity."""
        return _PURE_BYTES_PER_ENTRY

    def __len__(self) -> int:
        return len(self._deadlines)

    def _advance(self, now: object) -> float:
        t = _time(now)
        if t > self._clock:
            self._clock = t
        else:
            t = self._clock
        order = self._order
        while order and order[0][0] <= t:
            del self._deadlines[order.popleft()[1]]
        return t

    def check_and_add(self, msg_id: _Bytes, now: float) -> bool:
        """True if `msg_id` was not live (it is now added), False if it was already seen."""
        key = _key(msg_id)
        t = self._advance(now)
        if key in self._deadlines:
            return False
        if len(self._deadlines) >= self._capacity:
            del self._deadlines[self._order.popleft()[1]]
        deadline = t + self._ttl
        self._deadlines[key] = deadline
        self._order.append((deadline, key))
        return True

    def contains(self, msg_id: _Bytes, now: float) -> bool:
        """Whether `msg_id` is live at `now` (expired entries are dropped first)."""
        key = _key(msg_id)
        self._advance(now)
        return key in self._deadlines

    def expire(self, now: float) -> int:
        """Drops the entries that have expired by `now`; returns how many."""
        before = len(self._deadlines)
        self._advance(now)
        return before - len(self._deadlines)

    def clear(self) -> None:
        """Forgets every entry (the clock is kept)."""
        self._deadlines.clear()
        self._order.clear()
