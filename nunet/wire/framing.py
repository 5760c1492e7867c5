"""Stream framing `[varint length][u8 type][payload]`: the one import point for the rest of nunet.

The implementation is `nunet._native.framing` (compiled) unless `NUNET_NO_NATIVE=1` is set or it
is not built, then its pure-Python twin `nunet._native._reference.framing` (with a
`NativeFallbackWarning`). `impl` is the module in use; `NATIVE` says which one it is. Behaviour,
limits and the zero-copy contract are documented in the twin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nunet._native import is_native, load

if TYPE_CHECKING:
    from nunet._native._reference import framing as impl
else:
    impl = load("framing")

DEFAULT_MAX_FRAME_SIZE: int = impl.DEFAULT_MAX_FRAME_SIZE
FrameDecoder = impl.FrameDecoder
encode_frame = impl.encode_frame
encode_frames = impl.encode_frames
NATIVE: bool = is_native(impl)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "NATIVE",
    "FrameDecoder",
    "encode_frame",
    "encode_frames",
    "impl",
]
