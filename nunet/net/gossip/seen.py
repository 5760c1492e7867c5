"""The de-duplication cache gossip uses: `nunet._native.dedup` (compiled) unless
`NUNET_NO_NATIVE=1` is set or it is not built, then its pure-Python twin (with a
`NativeFallbackWarning`). Behaviour and limits are documented in the twin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nunet._native import is_native, load

if TYPE_CHECKING:
    from nunet._native._reference import dedup as impl
else:
    impl = load("dedup")

SeenCache = impl.SeenCache
NATIVE: bool = is_native(impl)

__all__ = ["NATIVE", "SeenCache", "impl"]
