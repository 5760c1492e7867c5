"""Workload for the framing flame graph: a receive loop over a stream of 64-byte frames.

What QUIC hands the transport (64 KiB chunks of a stream holding many small frames) goes through
`nunet.wire.framing.FrameDecoder`, and each frame is dispatched by type to a handler that touches
its payload, as the transport's receive path will. Usage:

    python profiles/profile_framing.py [SECONDS] [--pure]

`--pure` profiles the pure-Python twin instead of the compiled module.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

if "--pure" in sys.argv:
    os.environ["NUNET_NO_NATIVE"] = "1"

from nunet.wire import framing  # after NUNET_NO_NATIVE is set: the import picks the module

CHUNK = 64 * 1024
PAYLOAD = bytes(range(64))


def make_chunks(frames: int) -> list[bytes]:
    stream = framing.encode_frames([(i % 4, PAYLOAD) for i in range(frames)])
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def receive(chunks: list[bytes], handlers: dict[int, Callable[[memoryview], int]]) -> int:
    decoder = framing.FrameDecoder(known_types=bytes(handlers))
    total = 0
    for chunk in chunks:
        for ftype, payload in decoder.feed(chunk):
            total += handlers[ftype](payload)
    return total


def on_data(payload: memoryview) -> int:
    return len(payload)


def on_control(payload: memoryview) -> int:
    return payload[0]


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seconds = float(args[0]) if args else 5.0
    handlers: dict[int, Callable[[memoryview], int]] = {
        0: on_data,
        1: on_data,
        2: on_data,
        3: on_control,
    }
    chunks = make_chunks(1 << 15)
    deadline = time.monotonic() + seconds
    frames = 0
    start = time.perf_counter()
    while time.monotonic() < deadline:
        receive(chunks, handlers)
        frames += 1 << 15
    elapsed = time.perf_counter() - start
    impl = "native" if framing.NATIVE else "pure"
    print(f"{impl}: {frames} frames in {elapsed:.2f} s, {frames / elapsed / 1e6:.2f}M frames/s")


if __name__ == "__main__":
    main()
