"""Stream framing: the compiled decoder/encoder against hand-written `struct` loops.

Decode benchmarks feed what QUIC hands over: a stream of many frames cut into 64 KiB chunks
(bytes objects), so frames straddle chunk boundaries and the pending-frame path is exercised; each
`feed` result is dropped, as a consumer would after dispatching it.

Baselines (same payloads, same frame count, same 64 KiB chunking; Python's `struct` cannot read a
QUIC varint, so they use a fixed `>IB` header: 4-byte length, 1-byte type):
- `struct-loop`: what one would write without nunet's module: the same output (a list of
  `(type, memoryview payload)` per feed, zero-copy) with the incomplete tail carried over to the
  next chunk. No size or type checks, which only favours the baseline.
- `struct-scan`: the bare `struct.unpack_from` loop quoted in performance.md (6.5-7.3M frames/s
  there): it only walks the headers and counts frames, producing no payload objects.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from bench._harness import BenchContext, Metric, compare, speedup

# One interleaved run of four decoders at 64 B gives these four metrics.
DECODE_64B = (
    "frame.decode.64B",
    "frame.decode.pure.64B",
    "frame.decode_vs_scan.64B",
    "frame.native_vs_pure.64B",
)
METRICS = (
    *DECODE_64B,
    "frame.decode.1KiB",
    "frame.decode.64KiB",
    "frame.encode.64B",
    "frame.encode.single.64B",
)

CHUNK = 64 * 1024
STREAM_BYTES = {64: 1 << 20, 1024: 2 << 20, 64 * 1024: 8 << 20}
ENCODE_BATCH = 1000
HEADER = struct.Struct(">IB")
Frames = list[tuple[int, bytes]]


def _native() -> ModuleType:
    try:
        from nunet._native import framing
    except ImportError as exc:
        raise RuntimeError(
            f"nunet._native.framing is not built ({exc}): run `make build` first"
        ) from exc
    return framing


def _frames(size: int) -> Frames:
    count = max(STREAM_BYTES[size] // size, 1)
    payload = bytes(i % 251 for i in range(size))
    return [(i % 4, payload) for i in range(count)]


def _chunks(stream: bytes) -> list[bytes]:
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def _struct_stream(frames: Frames) -> bytes:
    return b"".join(HEADER.pack(len(p), t) + p for t, p in frames)


class StructLoopDecoder:
    """The `struct-loop` baseline: same output as FrameDecoder.feed, fixed `>IB` headers."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[tuple[int, memoryview]]:
        if self._tail:
            data = self._tail + data
        view = memoryview(data).toreadonly()
        unpack = HEADER.unpack_from
        out: list[tuple[int, memoryview]] = []
        pos = 0
        end = len(data)
        while end - pos >= 5:
            length, ftype = unpack(data, pos)
            stop = pos + 5 + length
            if stop > end:
                break
            out.append((ftype, view[pos + 5 : stop]))
            pos = stop
        self._tail = data[pos:]
        return out


def _struct_scan(chunks: list[bytes]) -> int:
    """The `struct-scan` baseline: header walk only, tail carried over."""
    unpack = HEADER.unpack_from
    count = 0
    tail = b""
    for chunk in chunks:
        data = tail + chunk if tail else chunk
        pos = 0
        end = len(data)
        while end - pos >= 5:
            length, _ = unpack(data, pos)
            stop = pos + 5 + length
            if stop > end:
                break
            count += 1
            pos = stop
        tail = data[pos:]
    return count


def _decode_with(make: Callable[[], Any], chunks: list[bytes], expected: int) -> Callable[[], int]:
    def once() -> int:
        feed = make().feed
        count = 0
        for chunk in chunks:
            count += len(feed(chunk))
        if count != expected:
            raise AssertionError(f"decoded {count} frames, expected {expected}")
        return count

    return once


def _decode_samples(ctx: BenchContext, size: int, with_pure: bool) -> dict[str, list[float]]:
    from nunet._native._reference import framing as pure

    native = _native()
    frames = _frames(size)
    chunks = _chunks(native.encode_frames(frames))
    struct_chunks = _chunks(_struct_stream(frames))
    n = len(frames)
    candidates = {
        "native": ctx.rate(_decode_with(native.FrameDecoder, chunks, n)),
        "struct-loop": ctx.rate(_decode_with(StructLoopDecoder, struct_chunks, n)),
    }
    if with_pure:
        candidates["pure"] = ctx.rate(_decode_with(pure.FrameDecoder, chunks, n))
        candidates["struct-scan"] = ctx.rate(lambda: _struct_scan(struct_chunks))
    return ctx.interleave(candidates)


def _encode_samples(ctx: BenchContext, batched: bool) -> dict[str, list[float]]:
    native = _native()
    frames = _frames(64)[:ENCODE_BATCH]
    pack = HEADER.pack
    encode_frame = native.encode_frame
    encode_frames = native.encode_frames

    def native_batch() -> int:
        encode_frames(frames)
        return len(frames)

    def struct_batch() -> int:
        parts = []
        for t, p in frames:
            parts.append(pack(len(p), t))
            parts.append(p)
        b"".join(parts)
        return len(frames)

    def native_single() -> int:
        for t, p in frames:
            encode_frame(t, p)
        return len(frames)

    def struct_single() -> int:
        for t, p in frames:
            pack(len(p), t) + p
        return len(frames)

    if batched:
        return ctx.interleave(
            {"native": ctx.rate(native_batch), "struct-loop": ctx.rate(struct_batch)}
        )
    return ctx.interleave(
        {"native": ctx.rate(native_single), "struct-loop": ctx.rate(struct_single)}
    )


def run(ctx: BenchContext) -> Iterator[Metric]:
    with ctx.pinned(0):
        if any(ctx.wants(name) for name in DECODE_64B):
            s = _decode_samples(ctx, 64, with_pure=True)
            native, loop = s["native"], s["struct-loop"]
            yield compare("frame.decode.64B", "frames/s", native, "struct-loop", loop)
            yield compare("frame.decode.pure.64B", "frames/s", s["pure"], "struct-loop", loop)
            yield compare(
                "frame.decode_vs_scan.64B", "frames/s", native, "struct-scan", s["struct-scan"]
            )
            yield speedup("frame.native_vs_pure.64B", native, "pure-python-twin", s["pure"])
        for size, label in ((1024, "1KiB"), (64 * 1024, "64KiB")):
            name = f"frame.decode.{label}"
            if ctx.wants(name):
                s = _decode_samples(ctx, size, with_pure=False)
                yield compare(name, "frames/s", s["native"], "struct-loop", s["struct-loop"])
        for name, batched in (("frame.encode.64B", True), ("frame.encode.single.64B", False)):
            if ctx.wants(name):
                s = _encode_samples(ctx, batched)
                yield compare(name, "frames/s", s["native"], "struct-loop", s["struct-loop"])
