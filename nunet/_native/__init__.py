"""Native (Cython) hot paths and their selector.

Each module `nunet/_native/NAME.pyx` has a pure-Python twin `nunet/_native/_reference/NAME.py`
with the same interface (and a `NAME.pyi` stub). `load(NAME)` returns the compiled module unless
`NUNET_NO_NATIVE=1` is set; when the compiled module is missing it warns once, naming the fallback,
so a slow build never goes unnoticed.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType


class NativeFallbackWarning(RuntimeWarning):
    """A compiled module is missing and its pure-Python twin is used instead."""


def native_disabled() -> bool:
    return os.environ.get("NUNET_NO_NATIVE", "") not in ("", "0")


def load(name: str) -> ModuleType:
    """The compiled module `nunet._native.NAME`, or its reference twin."""
    if native_disabled():
        return importlib.import_module(f"nunet._native._reference.{name}")
    try:
        return importlib.import_module(f"nunet._native.{name}")
    except ImportError as exc:
        warnings.warn(
            f"nunet: native module nunet._native.{name} is not built ({exc}); falling back to "
            f"the pure-Python nunet._native._reference.{name}, which is much slower. "
            "Run `make build` (or `pip install -e .`) to compile it.",
            NativeFallbackWarning,
            stacklevel=2,
        )
        return importlib.import_module(f"nunet._native._reference.{name}")


def is_native(module: ModuleType) -> bool:
    return not module.__name__.startswith("nunet._native._reference.")
