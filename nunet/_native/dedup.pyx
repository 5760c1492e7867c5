# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Message de-duplication, compiled. Same interface and invariants as the pure-Python twin
`nunet/_native/_reference/dedup.py`, which is the readable specification: read it first.

Layout (no Python object per entry):
- `ring`: a C array of `capacity` entries `{32-byte id, deadline}` (40 bytes), used as a FIFO.
  Insertion order is expiry order (the cache's clock never goes backwards), so both expiry and
  capacity eviction pop the head.
- `table`: an open-addressing hash table (linear probing, load <= 3/4) of 64-bit slots:
  `tag << 32 | ring index + 1`, 0 meaning empty. The hash is a seeded splitmix64 finaliser of the
  id's first 8 bytes; `tag` is its high 32 bits and the home slot is the tag's top `bits` bits, so
  a probe compares tags inside the table and touches the ring (and `memcmp`s all 32 bytes) only on
  a tag match: exact, with about one cache miss per lookup.
- Removal is backward-shift deletion (no tombstones), so the table never degrades with churn.
- Both arrays start small and double (ring re-laid from slot 0, table rebuilt) until the ring
  holds `capacity` entries: a node that sees little traffic keeps a small cache, and the bound
  stays exact.
- The seed comes from `os.urandom` per cache: ids are blake3 digests of peer-chosen content, and a
  peer who could predict slots could grind contents that pile up in one probe run.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY, isfinite
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

import math
import os

from nunet.errors import LocalProtocolError, ValidationError

ID_SIZE = 32
DEFAULT_CAPACITY = 100_000
DEFAULT_TTL = 120.0
MAX_CAPACITY = 1 << 26

cdef int _ID_SIZE = 32
cdef Py_ssize_t _FIRST_ALLOC = 1024
cdef uint64_t _LOW32 = 0xFFFFFFFFULL  # a slot's low half: ring index + 1


ctypedef struct Entry:
    unsigned char id[32]
    double deadline


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef tuple _check_config(object capacity, object ttl):
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise ValidationError("capacity must be an integer", path="capacity")
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ValidationError(f"capacity must be in 1..{MAX_CAPACITY}", path="capacity")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ValidationError("ttl must be a number of seconds", path="ttl")
    try:
        seconds = float(ttl)
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValidationError("ttl must be a finite number of seconds above 0", path="ttl")
    return capacity, seconds


cdef double _slow_time(object now) except? -1.0:
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise LocalProtocolError(f"now must be a number, not {type(now).__name__}")
    try:
        value = float(now)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise LocalProtocolError("now must be a finite number")
    return value


cdef inline double _time(object now) except? -1.0:
    cdef double t
    if type(now) is float:
        t = PyFloat_AS_DOUBLE(now)
        if isfinite(t):
            return t
    return _slow_time(now)


cdef Py_ssize_t _table_slots(Py_ssize_t entries) noexcept nogil:
    """Slots for `entries` at a load factor of at most 3/4 (a power of two, at least 2)."""
    cdef Py_ssize_t slots = 2
    while slots * 3 < entries * 4:
        slots <<= 1
    return slots


cdef class SeenCache:
    """Exact, time-bounded, size-bounded set of 32-byte message ids."""

    cdef Entry *_ring
    cdef uint64_t *_table
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _alloc      # entries the ring has room for now (grows up to _capacity)
    cdef Py_ssize_t _head
    cdef Py_ssize_t _count
    cdef uint64_t _mask
    cdef int _shift        # 64 - bits: hash >> _shift is the home slot
    cdef int _tag_shift    # 32 - bits: tag >> _tag_shift is the home slot
    cdef uint64_t _seed
    cdef double _ttl
    cdef double _clock
    # A slow-path id (not an exact bytes object) is copied here before use.
    cdef unsigned char _scratch[32]

    def __cinit__(self, capacity=DEFAULT_CAPACITY, ttl=DEFAULT_TTL):
        cap, seconds = _check_config(capacity, ttl)
        self._capacity = cap
        self._ttl = seconds
        self._clock = -INFINITY
        self._seed = int.from_bytes(os.urandom(8), "little")
        self._resize(min(self._capacity, _FIRST_ALLOC))

    def __dealloc__(self):
        PyMem_Free(self._ring)
        PyMem_Free(self._table)

    @property
    def capacity(self):
        return self._capacity

    @property
    def ttl(self):
        return self._ttl

    @property
    def bytes_per_entry(self):
        """Memory one entry costs, at full capacity: its ring entry and its share of the table."""
        cdef Py_ssize_t slots = _table_slots(self._capacity)
        return sizeof(Entry) + (<double>slots * sizeof(uint64_t)) / self._capacity

    def __len__(self):
        return self._count

    # --- internals -------------------------------------------------------------------------------

    cdef inline const unsigned char *_id(self, object msg_id) except NULL:
        cdef Py_ssize_t size
        if type(msg_id) is bytes:
            if PyBytes_GET_SIZE(msg_id) == _ID_SIZE:
                return <const unsigned char *>PyBytes_AS_STRING(msg_id)
            key = msg_id
        elif isinstance(msg_id, (bytes, bytearray, memoryview)):
            try:
                key = bytes(msg_id)
            except ValueError as exc:
                raise LocalProtocolError(f"msg_id is not readable: {exc}") from None
        else:
            raise LocalProtocolError(f"msg_id must be bytes, not {type(msg_id).__name__}")
        size = PyBytes_GET_SIZE(key)
        if size != _ID_SIZE:
            raise LocalProtocolError(f"msg_id must be {ID_SIZE} bytes, got {size}")
        memcpy(self._scratch, PyBytes_AS_STRING(key), 32)
        return self._scratch

    cdef inline uint64_t _hash(self, const unsigned char *key) noexcept nogil:
        cdef uint64_t first
        memcpy(&first, key, 8)
        return _mix(first ^ self._seed)

    cdef inline void _advance(self, double t) noexcept nogil:
        """Moves the clock to `t` (never back) and drops what has expired by then."""
        if t > self._clock:
            self._clock = t
        else:
            t = self._clock
        while self._count > 0 and self._ring[self._head].deadline <= t:
            self._pop_head()

    cdef inline Py_ssize_t _find(self, const unsigned char *key, uint64_t h) noexcept nogil:
        """The ring index holding `key`, or -1."""
        cdef uint64_t i = h >> self._shift
        cdef uint64_t tag = h >> 32
        cdef uint64_t slot
        while True:
            slot = self._table[i]
            if slot == 0:
                return -1
            if (slot >> 32) == tag:
                if memcmp(self._ring[(slot & _LOW32) - 1].id, key, 32) == 0:
                    return <Py_ssize_t>(slot & _LOW32) - 1
            i = (i + 1) & self._mask

    cdef inline void _pop_head(self) noexcept nogil:
        """Removes the oldest entry from the ring and its slot from the table."""
        cdef uint64_t want = <uint64_t>self._head + 1
        cdef uint64_t i = self._hash(self._ring[self._head].id) >> self._shift
        cdef uint64_t j, k, slot
        while (self._table[i] & _LOW32) != want:
            i = (i + 1) & self._mask
        # Backward-shift deletion: pull later members of the probe run into the hole when their
        # home slot does not lie cyclically in (hole, their slot].
        j = i
        while True:
            j = (j + 1) & self._mask
            slot = self._table[j]
            if slot == 0:
                break
            k = <uint32_t>(slot >> 32) >> self._tag_shift
            if (i <= j and i < k <= j) or (i > j and (k > i or k <= j)):
                continue
            self._table[i] = slot
            i = j
        self._table[i] = 0
        self._head += 1
        if self._head == self._alloc:
            self._head = 0
        self._count -= 1

    cdef int _resize(self, Py_ssize_t alloc) except -1:
        """Room for `alloc` entries: a new ring holding the live entries from slot 0, and a
        table rebuilt for it."""
        cdef Py_ssize_t slots = _table_slots(alloc)
        cdef int bits = 0
        cdef Py_ssize_t i, pos
        cdef Entry *ring = <Entry *>PyMem_Malloc(alloc * sizeof(Entry))
        cdef uint64_t *table = <uint64_t *>PyMem_Calloc(slots, sizeof(uint64_t))
        if ring == NULL or table == NULL:
            PyMem_Free(ring)
            PyMem_Free(table)
            raise MemoryError()
        for i in range(self._count):
            pos = self._head + i
            if pos >= self._alloc:
                pos -= self._alloc
            ring[i] = self._ring[pos]
        PyMem_Free(self._ring)
        PyMem_Free(self._table)
        self._ring = ring
        self._table = table
        self._alloc = alloc
        self._head = 0
        while (<Py_ssize_t>1 << bits) < slots:
            bits += 1
        self._mask = <uint64_t>(slots - 1)
        self._shift = 64 - bits
        self._tag_shift = 32 - bits
        for i in range(self._count):
            self._place(self._hash(ring[i].id), i)
        return 0

    cdef inline void _place(self, uint64_t h, Py_ssize_t pos) noexcept nogil:
        cdef uint64_t i = h >> self._shift
        while self._table[i] != 0:
            i = (i + 1) & self._mask
        self._table[i] = ((h >> 32) << 32) | (<uint64_t>pos + 1)

    cdef inline int _insert(self, const unsigned char *key, uint64_t h) except -1:
        cdef Py_ssize_t pos
        if self._count == self._capacity:
            self._pop_head()
        elif self._count == self._alloc:
            self._resize(min(2 * self._alloc, self._capacity))
        pos = self._head + self._count
        if pos >= self._alloc:
            pos -= self._alloc
        memcpy(self._ring[pos].id, key, 32)
        self._ring[pos].deadline = self._clock + self._ttl
        self._place(h, pos)
        self._count += 1
        return 0

    # --- API -------------------------------------------------------------------------------------

    def check_and_add(self, msg_id, now):
        """True if `msg_id` was not live (it is now added), False if it was already seen."""
        cdef const unsigned char *key = self._id(msg_id)
        cdef double t = _time(now)
        cdef uint64_t h
        self._advance(t)
        h = self._hash(key)
        if self._find(key, h) >= 0:
            return False
        self._insert(key, h)
        return True

    def contains(self, msg_id, now):
        """Whether `msg_id` is live at `now` (expired entries are dropped first)."""
        cdef const unsigned char *key = self._id(msg_id)
        cdef double t = _time(now)
        self._advance(t)
        return self._find(key, self._hash(key)) >= 0

    def expire(self, now):
        """Drops the entries that have expired by `now`; returns how many."""
        cdef double t = _time(now)
        cdef Py_ssize_t before = self._count
        self._advance(t)
        return before - self._count

    def clear(self):
        """Forgets every entry (the clock is kept) and gives the memory back."""
        self._count = 0
        self._resize(min(self._capacity, _FIRST_ALLOC))
