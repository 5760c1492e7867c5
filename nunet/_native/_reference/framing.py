"""Stream framing, pure Python: the readable specification of `nunet/_native/framing.pyx`.

Wire format: a frame is `[varint length][u8 type][payload]`. `length` counts the payload only (not
the type byte). The varint is QUIC's variable-length integer (RFC 9000 §16): the two high bits of
the first byte give the encoded size (00: 1 byte, 01: 2, 10: 4, 11: 8) and the remaining bits,
big-endian, the value (at most 2**62 - 1). Encoders write the shortest form; decoders accept any
form, as the RFC allows.

Decoder invariants (both twins keep them; the tests hold them to it):
- Zero copy for complete frames: a payload that lies wholly inside one `feed(data)` is a read-only
  memoryview slice of `data` itself (`payload.obj is data`). A bytearray fed in must therefore not
  be mutated while its payloads are in use.
- Only an incomplete tail is copied, into pending state: a header of at most 9 bytes and a payload
  buffer that grows with the bytes actually received. The next feed finishes that frame by copying
  only the bytes it still needs, then goes on zero-copy over the rest of the new data.
- Limits are checked as early as possible: a declared length over `max_frame_size` raises
  `FrameTooLarge` as soon as the length varint is complete, before any payload is buffered; an
  unknown type raises `DecodeError` as soon as the type byte arrives.
- A failed decoder stays failed (a broken stream stays broken): every later `feed` raises
  `DecodeError("decoder failed earlier: ...")`. Frames decoded earlier in the failing call are
  lost with the error; the stream is to be closed anyway.
- Any input, whole or split at any offset, yields frames or `DecodeError`/`FrameTooLarge`, never
  another exception. Passing something that is not a contiguous buffer is the caller's bug:
  `LocalProtocolError`, and the decoder is left as it was.
- `frames_decoded` / `bytes_decoded` count frames handed to the caller and their wire bytes
  (headers included), so after successful feeds `bytes_decoded + buffered` equals the bytes fed.
"""

from __future__ import annotations

from collections.abc import Iterable

from nunet.errors import DecodeError, FrameTooLarge, LocalProtocolError

DEFAULT_MAX_FRAME_SIZE: int = 1 << 20
_MAX_VARINT = (1 << 62) - 1

_Bytes = bytes | bytearray | memoryview


def _varint(value: int) -> bytes:
    if value < 0x40:
        return value.to_bytes(1, "big")
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")


def _byte_view(data: object, what: str) -> memoryview:
    """`data` as a flat, contiguous, read-only view of unsigned bytes, without copying."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
        if view.ndim != 1 or view.format != "B" or view.strides != (1,):
            view = view.cast("B")
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(
            f"{what} must be a contiguous bytes-like object, not {type(data).__name__}"
        ) from exc
    return view if view.readonly else view.toreadonly()


def _header(ftype: object, size: int) -> bytes:
    if not isinstance(ftype, int) or not 0 <= ftype <= 0xFF:
        raise LocalProtocolError(f"frame type must be an int in 0..255, not {ftype!r}")
    if size > _MAX_VARINT:
        raise LocalProtocolError(f"payload of {size} bytes is over the 2**62-1 limit")
    return _varint(size) + bytes((ftype,))


def encode_frame(ftype: int, payload: _Bytes) -> bytes:
    """One frame: `[varint len(payload)][ftype][payload]`."""
    view = _byte_view(payload, "payload")
    return _header(ftype, view.nbytes) + view


def encode_frames(frames: Iterable[tuple[int, _Bytes]]) -> bytes:
    """Many frames in one buffer, so that many small messages share QUIC packets."""
    try:
        items = iter(frames)
    except TypeError as exc:
        raise LocalProtocolError(f"frames must be iterable, not {type(frames).__name__}") from exc
    parts: list[bytes | memoryview] = []
    for item in list(items):  # a snapshot, as the compiled twin takes
        try:
            ftype, payload = item
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(
                f"frames must be (type, payload) pairs, not {type(item).__name__}"
            ) from exc
        view = _byte_view(payload, "payload")
        parts.append(_header(ftype, view.nbytes))
        parts.append(view)
    return b"".join(parts)


class FrameDecoder:
    """Turns a byte stream, fed in pieces of any size, into `(type, payload)` frames."""

    def __init__(
        self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, known_types: bytes | None = None
    ) -> None:
        if (
            not isinstance(max_frame_size, int)
            or isinstance(max_frame_size, bool)
            or not 0 <= max_frame_size <= _MAX_VARINT
        ):
            raise LocalProtocolError(
                f"max_frame_size must be an int in 0..2**62-1, not {max_frame_size!r}"
            )
        self._max = max_frame_size
        if known_types is None:
            self._allowed = [True] * 256
        else:
            self._allowed = [False] * 256
            for t in _byte_view(known_types, "known_types"):
                self._allowed[t] = True
        # Pending frame: `_head` collects the header (varint + type byte, 9 bytes at most);
        # once it is complete `_body` collects the payload, growing only as bytes arrive.
        self._head = bytearray()
        self._body: bytearray | None = None
        self._body_size = 0
        self._error: str | None = None
        self._frames = 0
        self._bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (its header and payload received so far)."""
        return len(self._head) + (len(self._body) if self._body is not None else 0)

    @property
    def max_frame_size(self) -> int:
        return self._max

    @property
    def frames_decoded(self) -> int:
        return self._frames

    @property
    def bytes_decoded(self) -> int:
        """Wire bytes (headers and payloads) of the frames returned so far."""
        return self._bytes

    def feed(self, data: _Bytes) -> list[tuple[int, memoryview]]:
        """The frames completed by `data`, in stream order (possibly none)."""
        if self._error is not None:
            raise DecodeError(f"decoder failed earlier: {self._error}")
        view = _byte_view(data, "data")
        out: list[tuple[int, memoryview]] = []
        try:
            wire = 0
            pos = 0
            if self._head:
                pos, wire = self._absorb(view, 0, out)
            pos, scanned = self._scan(view, pos, out)
            wire += scanned
            if pos < len(view):
                self._absorb(view, pos, out)
        except DecodeError as exc:
            self._error = str(exc)
            raise
        self._frames += len(out)
        self._bytes += wire
        return out

    # -- internals ------------------------------------------------------------------------------

    def _scan(
        self, view: memoryview, pos: int, out: list[tuple[int, memoryview]]
    ) -> tuple[int, int]:
        """Appends the complete frames from `pos` on as slices of `view`; returns (end, bytes)."""
        start = pos
        end = len(view)
        while pos < end:
            size = 1 << (view[pos] >> 6)
            if pos + size > end:
                break
            length = _read_varint(view, pos, size)
            self._check_length(length)
            if pos + size >= end:
                break
            ftype = view[pos + size]
            self._check_type(ftype)
            first = pos + size + 1
            if length > end - first:
                break
            out.append((ftype, view[first : first + length]))
            pos = first + length
        return pos, pos - start

    def _absorb(
        self, view: memoryview, pos: int, out: list[tuple[int, memoryview]]
    ) -> tuple[int, int]:
        """Copies into the pending frame what it needs from `view[pos:]`; when that completes it,
        appends it to `out`. Returns (position after the bytes taken, wire bytes completed)."""
        end = len(view)
        head = self._head
        if self._body is None:
            if not head:
                if pos == end:
                    return pos, 0
                head.append(view[pos])
                pos += 1
            size = 1 << (head[0] >> 6)
            if len(head) < size:
                take = min(size - len(head), end - pos)
                head += view[pos : pos + take]
                pos += take
                if len(head) < size:
                    return pos, 0
            length = _read_varint(head, 0, size)
            self._check_length(length)
            if len(head) == size:
                if pos == end:
                    return pos, 0
                head.append(view[pos])
                pos += 1
            self._check_type(head[size])
            self._body = bytearray()
            self._body_size = length
        body = self._body
        take = min(self._body_size - len(body), end - pos)
        body += view[pos : pos + take]
        pos += take
        if len(body) < self._body_size:
            return pos, 0
        out.append((head[-1], memoryview(body).toreadonly()))
        wire = len(head) + len(body)
        self._head = bytearray()
        self._body = None
        return pos, wire

    def _check_length(self, length: int) -> None:
        if length > self._max:
            raise FrameTooLarge(
                f"frame declares {length} payload bytes, over max_frame_size {self._max}"
            )

    def _check_type(self, ftype: int) -> None:
        if not self._allowed[ftype]:
            raise DecodeError(f"unknown frame type 0x{ftype:02x} ({ftype})")


def _read_varint(buf: memoryview | bytearray, pos: int, size: int) -> int:
    value = buf[pos] & 0x3F
    for i in range(pos + 1, pos + size):
        value = (value << 8) | buf[i]
    return value
