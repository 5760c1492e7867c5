# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Stream framing, compiled. Same interface and invariants as the pure-Python twin
`nunet/_native/_reference/framing.py`, which is the readable specification: read it first.

Where the time goes, and why the code is shaped so:
- One flat read-only memoryview of the fed data is made per `feed`; headers are parsed from its raw
  `const unsigned char *`. Each complete frame's payload is a new view of that memoryview
  (`PyMemoryView_FromObject`, which registers it with the same managed buffer, so `.obj` is the
  fed object and the data stays alive) narrowed in place to the payload, exactly as CPython's
  own slicing (`init_slice`) does for a 1-D step-1 slice, but without building two ints and a
  slice object per frame. One memoryview and one tuple per frame is the whole per-frame cost.
- Those two objects would make the cyclic GC run a gen-0 pass every ~350 frames and walk them all.
  When the fed object is a bytes or bytearray, a frame tuple cannot be part of a reference cycle
  (tuple -> int, memoryview -> managed buffer -> bytes), so it is untracked, as CPython itself does
  for tuples of atomic values; the memoryview must stay tracked (its dealloc assumes so).
- The pending frame's payload grows in a bytearray sized to the bytes received, never to the
  declared length, so a peer cannot make us reserve memory it has not sent.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    void PyObject_GC_UnTrack(object op)

from nunet.errors import DecodeError, FrameTooLarge, LocalProtocolError

DEFAULT_MAX_FRAME_SIZE = 1 << 20
cdef uint64_t MAX_VARINT = (<uint64_t>1 << 62) - 1
cdef unsigned char[9] VARINT_PREFIX = [0, 0x00, 0x40, 0, 0x80, 0, 0, 0, 0xC0]


cdef inline Py_ssize_t _varint_size(uint64_t value) noexcept nogil:
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    return 8


cdef inline void _write_varint(unsigned char *out, uint64_t value, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size - 1, -1, -1):
        out[i] = value & 0xFF
        value >>= 8
    out[0] |= VARINT_PREFIX[size]


cdef inline uint64_t _read_varint(const unsigned char *p, Py_ssize_t size) noexcept nogil:
    cdef uint64_t value = p[0] & 0x3F
    cdef Py_ssize_t i
    for i in range(1, size):
        value = (value << 8) | p[i]
    return value


cdef object _byte_view(object data, str what):
    """`data` as a flat, contiguous, read-only memoryview of unsigned bytes, without copying."""
    cdef object view
    try:
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B" or view.strides != (1,):
            view = view.cast("B")
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(
            f"{what} must be a contiguous bytes-like object, not {type(data).__name__}"
        ) from exc
    return view if view.readonly else view.toreadonly()


cdef int _get_payload(object payload, Py_buffer *buf) except -1:
    try:
        PyObject_GetBuffer(payload, buf, PyBUF_SIMPLE)
    except (TypeError, BufferError) as exc:
        raise LocalProtocolError(
            f"payload must be a contiguous bytes-like object, not {type(payload).__name__}"
        ) from exc
    return 0


cdef unsigned char _frame_type(object ftype) except? 0:
    if not isinstance(ftype, int) or not 0 <= ftype <= 0xFF:
        raise LocalProtocolError(f"frame type must be an int in 0..255, not {ftype!r}")
    return <unsigned char>ftype


cdef Py_ssize_t _header_size(Py_ssize_t length) except -1:
    if <uint64_t>length > MAX_VARINT:
        raise LocalProtocolError(f"payload of {length} bytes is over the 2**62-1 limit")
    return _varint_size(<uint64_t>length) + 1


def encode_frame(ftype, payload):
    """One frame: `[varint len(payload)][ftype][payload]`."""
    cdef Py_buffer buf
    cdef Py_ssize_t hsize
    cdef unsigned char *p
    cdef unsigned char t
    _get_payload(payload, &buf)
    try:
        t = _frame_type(ftype)
        hsize = _header_size(buf.len)
        out = PyBytes_FromStringAndSize(NULL, hsize + buf.len)
        p = <unsigned char *>PyBytes_AS_STRING(out)
        _write_varint(p, <uint64_t>buf.len, hsize - 1)
        p[hsize - 1] = t
        memcpy(p + hsize, buf.buf, buf.len)
    finally:
        PyBuffer_Release(&buf)
    return out


def encode_frames(frames):
    """Many frames in one buffer, so that many small messages share QUIC packets."""
    # A private copy: nothing run while unpacking an item can change the list under us.
    try:
        iterator = iter(frames)
    except TypeError as exc:
        raise LocalProtocolError(f"frames must be iterable, not {type(frames).__name__}") from exc
    cdef list items = list(iterator)
    cdef Py_ssize_t n = len(items)
    # All payload buffers are held until the copy, so their sizes cannot change in between.
    cdef Py_buffer *bufs = <Py_buffer *>PyMem_Malloc((n + 1) * sizeof(Py_buffer))
    cdef unsigned char *types = <unsigned char *>PyMem_Malloc(n + 1)
    cdef Py_ssize_t held = 0, total = 0, i, hsize
    cdef unsigned char *p
    if bufs == NULL or types == NULL:
        PyMem_Free(bufs)
        PyMem_Free(types)
        raise MemoryError()
    try:
        for i in range(n):
            item = items[i]
            if type(item) is tuple and len(<tuple>item) == 2:
                ftype = (<tuple>item)[0]
                payload = (<tuple>item)[1]
            else:
                try:
                    ftype, payload = item
                except (TypeError, ValueError) as exc:
                    raise LocalProtocolError(
                        f"frames must be (type, payload) pairs, not {type(item).__name__}"
                    ) from exc
            _get_payload(payload, &bufs[i])
            held += 1
            types[i] = _frame_type(ftype)
            hsize = _header_size(bufs[i].len)
            if bufs[i].len > PY_SSIZE_T_MAX - hsize - total:
                raise OverflowError("encoded frames would be longer than a bytes object can be")
            total += hsize + bufs[i].len
        out = PyBytes_FromStringAndSize(NULL, total)
        p = <unsigned char *>PyBytes_AS_STRING(out)
        for i in range(n):
            hsize = _varint_size(<uint64_t>bufs[i].len)
            _write_varint(p, <uint64_t>bufs[i].len, hsize)
            p[hsize] = types[i]
            p += hsize + 1
            memcpy(p, bufs[i].buf, bufs[i].len)
            p += bufs[i].len
    finally:
        for i in range(held):
            PyBuffer_Release(&bufs[i])
        PyMem_Free(bufs)
        PyMem_Free(types)
    return out


cdef class FrameDecoder:
    """Turns a byte stream, fed in pieces of any size, into `(type, payload)` frames."""

    cdef uint64_t _max
    cdef unsigned char _allowed[256]
    # Pending frame: `_head` collects the header (varint + type byte, 9 bytes at most); once it is
    # complete `_body` (a bytearray) collects the payload, growing only as bytes arrive.
    cdef unsigned char _head[9]
    cdef Py_ssize_t _head_len
    cdef object _body
    cdef uint64_t _body_size
    cdef object _error
    cdef unsigned long long _frames
    cdef unsigned long long _bytes

    def __init__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE, known_types=None):
        if (
            not isinstance(max_frame_size, int)
            or isinstance(max_frame_size, bool)
            or not 0 <= max_frame_size <= MAX_VARINT
        ):
            raise LocalProtocolError(
                f"max_frame_size must be an int in 0..2**62-1, not {max_frame_size!r}"
            )
        self._max = <uint64_t>max_frame_size
        if known_types is None:
            memset(self._allowed, 1, 256)
        else:
            memset(self._allowed, 0, 256)
            for t in _byte_view(known_types, "known_types"):
                self._allowed[<unsigned char>t] = 1
        self._head_len = 0
        self._body = None
        self._body_size = 0
        self._error = None
        self._frames = 0
        self._bytes = 0

    @property
    def buffered(self):
        """Bytes held for an incomplete frame (its header and payload received so far)."""
        if self._body is None:
            return self._head_len
        return self._head_len + PyByteArray_GET_SIZE(self._body)

    @property
    def max_frame_size(self):
        return self._max

    @property
    def frames_decoded(self):
        return self._frames

    @property
    def bytes_decoded(self):
        """Wire bytes (headers and payloads) of the frames returned so far."""
        return self._bytes

    def feed(self, data):
        """The frames completed by `data`, in stream order (possibly none)."""
        if self._error is not None:
            raise DecodeError(f"decoder failed earlier: {self._error}")
        cdef object view = _byte_view(data, "data")
        cdef Py_buffer *vb = PyMemoryView_GET_BUFFER(view)
        cdef const unsigned char *p = <const unsigned char *>vb.buf
        cdef Py_ssize_t n = vb.len
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t wire = 0
        cdef list out = []
        try:
            if self._head_len:
                pos = self._absorb(p, n, out, &wire)
            pos = self._scan(view, p, pos, n, out, &wire)
            if pos < n:
                self._absorb(p + pos, n - pos, out, &wire)
        except DecodeError as exc:
            self._error = str(exc)
            raise
        self._frames += len(out)
        self._bytes += wire
        return out

    # -- internals ------------------------------------------------------------------------------

    cdef Py_ssize_t _scan(
        self, object view, const unsigned char *p, Py_ssize_t pos, Py_ssize_t end, list out,
        Py_ssize_t *wire,
    ) except -1:
        """Appends the complete frames from `pos` on as views into `view`; returns where it
        stopped (at `end` or at the start of an incomplete frame)."""
        cdef Py_ssize_t start = pos, size, first
        cdef uint64_t length
        cdef unsigned char ftype
        cdef Py_buffer *pb
        # Any other exporter might hold our frames and close a cycle: then the tuple stays tracked.
        cdef object exporter = view.obj
        cdef bint acyclic = type(exporter) is bytes or type(exporter) is bytearray
        while pos < end:
            size = <Py_ssize_t>1 << (p[pos] >> 6)
            if size > end - pos:
                break
            length = _read_varint(p + pos, size)
            if length > self._max:
                self._too_large(length)
            if size == end - pos:
                break
            ftype = p[pos + size]
            if not self._allowed[ftype]:
                self._unknown_type(ftype)
            first = pos + size + 1
            if length > <uint64_t>(end - first):
                break
            pos = first + <Py_ssize_t>length
            payload = PyMemoryView_FromObject(view)
            pb = PyMemoryView_GET_BUFFER(payload)
            pb.buf = <char *>pb.buf + first
            pb.len = <Py_ssize_t>length
            pb.shape[0] = <Py_ssize_t>length
            frame = (ftype, payload)
            if acyclic:
                PyObject_GC_UnTrack(frame)
            out.append(frame)
        wire[0] += pos - start
        return pos

    cdef Py_ssize_t _absorb(
        self, const unsigned char *p, Py_ssize_t end, list out, Py_ssize_t *wire
    ) except -1:
        """Copies into the pending frame what it needs from `p[:end]`; when that completes it,
        appends it to `out`. Returns the number of bytes taken."""
        cdef Py_ssize_t pos = 0, size, take, have
        cdef uint64_t length, missing
        cdef unsigned char ftype
        if self._body is None:
            if self._head_len == 0:
                if pos == end:
                    return pos
                self._head[0] = p[pos]
                pos += 1
                self._head_len = 1
            size = <Py_ssize_t>1 << (self._head[0] >> 6)
            if self._head_len < size:
                take = min(size - self._head_len, end - pos)
                memcpy(self._head + self._head_len, p + pos, take)
                self._head_len += take
                pos += take
                if self._head_len < size:
                    return pos
            length = _read_varint(self._head, size)
            if length > self._max:
                self._too_large(length)
            if self._head_len == size:
                if pos == end:
                    return pos
                self._head[size] = p[pos]
                pos += 1
                self._head_len += 1
            ftype = self._head[size]
            if not self._allowed[ftype]:
                self._unknown_type(ftype)
            self._body = bytearray()
            self._body_size = length
        body = self._body
        have = PyByteArray_GET_SIZE(body)
        missing = self._body_size - <uint64_t>have
        take = <Py_ssize_t>missing if missing < <uint64_t>(end - pos) else end - pos
        if take:
            PyByteArray_Resize(body, have + take)
            memcpy(PyByteArray_AS_STRING(body) + have, p + pos, take)
            pos += take
        if <uint64_t>(have + take) < self._body_size:
            return pos
        ftype = self._head[self._head_len - 1]
        out.append((ftype, memoryview(body).toreadonly()))
        wire[0] += self._head_len + have + take
        self._head_len = 0
        self._body = None
        return pos

    cdef int _too_large(self, uint64_t length) except -1:
        raise FrameTooLarge(
            f"frame declares {length} payload bytes, over max_frame_size {self._max}"
        )

    cdef int _unknown_type(self, unsigned char ftype) except -1:
        raise DecodeError(f"unknown frame type 0x{ftype:02x} ({ftype})")
