"""The native-module selector (`nunet._native.load`) and the layout every native module follows:
`NAME.pyx` + `NAME.pyi` + the twin `_reference/NAME.py`, with the same public names."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import nunet._native
from nunet._native import NativeFallbackWarning, is_native, load

NATIVE_DIR = Path(nunet._native.__file__).parent
NATIVE_NAMES = sorted(p.stem for p in NATIVE_DIR.glob("*.pyx"))


def api(module: ModuleType) -> set[str]:
    """Public names the module defines itself: its functions, classes and plain constants."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (
            getattr(value, "__module__", None) == module.__name__
            or isinstance(value, int | float | str | bytes)
        )
    }


def test_there_are_native_modules() -> None:
    assert "framing" in NATIVE_NAMES


@pytest.mark.parametrize("name", NATIVE_NAMES)
def test_each_native_module_has_a_stub_and_a_twin(name: str) -> None:
    assert (NATIVE_DIR / f"{name}.pyi").is_file()
    assert (NATIVE_DIR / "_reference" / f"{name}.py").is_file()


@pytest.mark.parametrize("name", NATIVE_NAMES)
def test_native_module_is_built_when_required(name: str) -> None:
    """CI sets NUNET_REQUIRE_NATIVE=1 after building: a missing extension fails there."""
    if os.environ.get("NUNET_REQUIRE_NATIVE", "") in ("", "0"):
        pytest.skip("NUNET_REQUIRE_NATIVE is not set")
    module = importlib.import_module(f"nunet._native.{name}")
    assert is_native(module)
    assert module.__file__ is not None
    assert not module.__file__.endswith(".py")


@pytest.mark.parametrize("name", NATIVE_NAMES)
def test_twins_export_the_same_names(name: str, native: Callable[[str], ModuleType]) -> None:
    compiled = native(name)
    twin = importlib.import_module(f"nunet._native._reference.{name}")
    assert api(twin)
    assert api(compiled) == api(twin)


def test_no_native_env_gives_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUNET_NO_NATIVE", "1")
    module = load("framing")
    assert module.__name__ == "nunet._native._reference.framing"
    assert not is_native(module)


@pytest.mark.parametrize("value", ["", "0"])
def test_native_is_the_default(
    monkeypatch: pytest.MonkeyPatch, native: Callable[[str], ModuleType], value: str
) -> None:
    compiled = native("framing")
    monkeypatch.setenv("NUNET_NO_NATIVE", value)
    module = load("framing")
    assert module is compiled
    assert is_native(module)


def test_missing_native_module_warns_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NUNET_NO_NATIVE", raising=False)
    # A None entry makes the import fail exactly as an unbuilt extension does (ImportError).
    monkeypatch.setitem(sys.modules, "nunet._native.framing", None)
    with pytest.warns(NativeFallbackWarning, match=r"nunet\._native\._reference\.framing"):
        module = load("framing")
    assert module.__name__ == "nunet._native._reference.framing"
    assert not is_native(module)


@pytest.fixture
def reload_wire_framing() -> Iterator[ModuleType]:
    """`nunet.wire.framing`, to be reloaded under a patched environment; restored afterwards.
    Importing it where the extension is not built warns; that warning is tested above."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NativeFallbackWarning)
        import nunet.wire.framing as wire_framing
    yield wire_framing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NativeFallbackWarning)
        importlib.reload(wire_framing)


def test_wire_framing_follows_the_selector(
    monkeypatch: pytest.MonkeyPatch, reload_wire_framing: ModuleType
) -> None:
    monkeypatch.setenv("NUNET_NO_NATIVE", "1")
    wire = importlib.reload(reload_wire_framing)
    assert wire.impl.__name__ == "nunet._native._reference.framing"
    assert wire.NATIVE is False
    assert wire.FrameDecoder is wire.impl.FrameDecoder
    assert wire.encode_frame(1, b"x") == b"\x01\x01x"


def test_wire_framing_uses_native_when_built(
    monkeypatch: pytest.MonkeyPatch,
    reload_wire_framing: ModuleType,
    native: Callable[[str], ModuleType],
) -> None:
    compiled = native("framing")
    monkeypatch.delenv("NUNET_NO_NATIVE", raising=False)
    wire = importlib.reload(reload_wire_framing)
    assert wire.impl is compiled
    assert wire.NATIVE is True
    assert wire.FrameDecoder is compiled.FrameDecoder
    assert wire.DEFAULT_MAX_FRAME_SIZE == 1 << 20
