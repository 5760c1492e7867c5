"""Checking untrusted, decoded data field by field while collecting every problem.

A `Checker` walks plain data (dicts, lists, scalars from YAML or JSON) and turns it into typed
values; each method returns the value, or None after recording `(path, message)`, so a caller
keeps going and one run reports everything. `error()` bundles the problems, sorted by line, into
one `EnsembleInvalid`. Lines come from `nunet.jobs.document.Marks`; the line of a path that has
none is its nearest parent's.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from nunet.crypto.did import is_did
from nunet.errors import EnsembleInvalid, ValidationError
from nunet.jobs.document import Marks
from nunet.node.resources import GIB

MAX_GIB = float(1 << 20)  # 1 PiB
MAX_LIST = 1024  # cmd, environment, exclude_peers, ...
MAX_PROBLEMS = 200

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")
_UNITS = {
    "": GIB, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h)\s*")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Names people reach for that difflib does not find.
_HINTS = {"args": "cmd", "command": "cmd", "env": "environment", "workdir": "working_directory",
          "memory": "vram", "replicas": "redundancy", "region": "continent"}


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list",
             dict: "a mapping", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _empty(value: object) -> bool:
    return value is None or value is False or (
        isinstance(value, str | list | dict | int | float) and not value
    )


def suggest(name: str, known: Iterable[str]) -> str:
    known = list(known)
    hint = _HINTS.get(name)
    if hint not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = close[0] if close else None
    return f" (did you mean `{hint}`?)" if hint else ""


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(choices)

class Checker:
    """The problems found so far and the line of every path seen."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self.lines: dict[str, int] = {}
        self.problems: list[tuple[str, str]] = []

    def err(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def error(self) -> EnsembleInvalid:
        located = [(self._line(path), path, message) for path, message in self.problems]
        located.sort(key=lambda p: p[0] or math.inf)  # stable: same line keeps discovery order
        out = [ValidationError(f"{m} (line {line})" if line else m, path=p or None)
               for line, p, m in located[:MAX_PROBLEMS]]
        if len(located) > MAX_PROBLEMS:
            out.append(ValidationError(f"... and {len(located) - MAX_PROBLEMS} more problems"))
        return EnsembleInvalid(out)

    def _line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return None

    # --- shapes ---------------------------------------------------------------------------------

    def fields(
        self, value: object, path: str, known: Collection[str], *,
        required: Iterable[str] = (), unsupported: Collection[str] = (),
        aliases: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """The known fields of a mapping; reports a non-mapping, unknown and missing fields."""
        if not isinstance(value, dict):
            self.err(path, f"must be a mapping, got {kind(value)}")
            return None
        lines = self.marks.get(id(value), {})
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.err(path, f"field names must be text, got {kind(key)} {show(key)}")
                continue
            child = join(path, key)
            if key in lines:
                self.lines[child] = lines[key]
            name = (aliases or {}).get(key, key)
            if name != key:
                if name in value:
                    self.err(child, f"`{key}` is the old spelling of `{name}`: give only `{name}`")
                    continue
                if key in lines:
                    self.lines[join(path, name)] = lines[key]
            if name in known:
                out[name] = item
            elif name in unsupported:
                if not _empty(item):
                    self.err(child, "not supported yet")
            else:
                self.err(child, "unknown field" + suggest(name, known))
        for name in required:
            if name not in out:
                self.err(join(path, name), "required")
        return out

    def items(self, value: object, path: str, *, limit: int = MAX_LIST) -> list[tuple[str, Any]]:
        """(path, item) for each element of a list; null is an empty list."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.err(path, f"must be a list, got {kind(value)}")
            return []
        if len(value) > limit:
            self.err(path, f"too many entries: {len(value)}, at most {limit}")
            return []
        lines = self.marks.get(id(value), {})
        out = []
        for i, item in enumerate(value):
            child = join(path, i)
            if i in lines:
                self.lines[child] = lines[i]
            out.append((child, item))
        return out

    def named(self, value: object, path: str, limit: int, what: str, *,
              required: bool = True) -> list[tuple[str, str, Any]]:
        """(name, path, item) for each entry of a mapping of named things."""
        if not isinstance(value, dict):
            self.err(path, f"must be a mapping of {what} by name, got {kind(value)}")
            return []
        if required and not value:
            self.err(path, f"at least one {what.rstrip('s')} is needed")
        if len(value) > limit:
            self.err(path, f"too many {what}: {len(value)}, at most {limit}")
            return []
        lines = self.marks.get(id(value), {})
        out = []
        for key, item in value.items():
            if not isinstance(key, str):
                self.err(path, f"{what} names must be text, got {kind(key)} {show(key)}")
                continue
            child = join(path, key)
            if key in lines:
                self.lines[child] = lines[key]
            out.append((key, child, item))
        return out

    # --- scalars --------------------------------------------------------------------------------

    def text(self, value: object, path: str, *, pattern: re.Pattern[str] | None = None,
             hint: str = "", max_len: int = 256) -> str | None:
        if not isinstance(value, str):
            self.err(path, f"must be text, got {kind(value)}")
            return None
        if not value:
            self.err(path, "must not be empty")
            return None
        if len(value) > max_len:
            self.err(path, f"too long: {len(value)} characters, at most {max_len}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.err(path, f"{hint or 'invalid'}, got {show(value)}")
            return None
        return value

    def texts(self, value: object, path: str, *, non_empty: bool = False) -> tuple[str, ...] | None:
        if isinstance(value, str):
            self.err(path, f'must be a list of texts (exec form), e.g. ["sh", "-c", {show(value)}]')
            return None
        if non_empty and not value:
            self.err(path, "must not be empty")
            return None
        out = []
        ok = True
        for child, item in self.items(value, path):
            if isinstance(item, str):
                out.append(item)
            else:
                self.err(child, f"must be text, got {kind(item)}")
                ok = False
        return tuple(out) if ok and (value is None or isinstance(value, list)) else None

    def number(self, value: object, path: str, *, low: float | None = None,
               low_open: bool = False, high: float | None = None,
               integer: bool = False) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.err(path, f"must be a number, got {kind(value)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.err(path, "must be a finite number")
            return None
        if integer and value != int(value):
            self.err(path, f"must be a whole number, got {value}")
            return None
        if low is not None and (value <= low if low_open else value < low):
            self.err(path, f"must be {'>' if low_open else '>='} {low:g}, got {show(value)}")
            return None
        if high is not None and value > high:
            self.err(path, f"must be at most {high:g}, got {show(value)}")
            return None
        return float(value)

    def integer(self, value: object, path: str, low: int, high: int) -> int | None:
        got = self.number(value, path, low=low, high=high, integer=True)
        return None if got is None else int(got)

    def size(self, value: object, path: str) -> float | None:
        """GiB: a number of GiB, or text with a unit ("512MiB", "2GB", "1.5 GiB")."""
        if isinstance(value, str):
            match = _SIZE.fullmatch(value)
            unit = match and _UNITS.get(match.group(2).lower())
            if not match or unit is None:
                self.err(path, f"must be GiB or a size such as \"512MiB\" or \"2GB\" (units: B, "
                         f"KB, MB, GB, TB, KiB, MiB, GiB, TiB), got {show(value)}")
                return None
            value = float(match.group(1)) * unit / GIB
        got = self.number(value, path, low=0, low_open=True, high=MAX_GIB)
        if got is not None and round(got * GIB) == 0:
            self.err(path, f"must be at least 1 byte, got {show(value)}")
            return None
        return got

    def duration(self, value: object, path: str) -> float | None:
        """Seconds: a number, or text such as "10s", "500ms", "1m"."""
        if isinstance(value, str):
            match = _DURATION.fullmatch(value)
            if not match:
                self.err(path, f'must be seconds or a duration such as "10s", "500ms", "1m", '
                         f"got {show(value)}")
                return None
            value = float(match.group(1)) * _SECONDS[match.group(2)]
        return self.number(value, path, low=0, low_open=True, high=86400)

    def flag(self, value: object, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.err(path, f"must be true or false, got {kind(value)}")
            return None
        return value

    def choice(self, value: object, path: str, choices: Collection[str], *,
               unsupported: Collection[str] = ()) -> str | None:
        got = self.text(value, path)
        if got is None:
            return None
        if got in unsupported:
            self.err(path, f"{got}: not supported yet (use {one_of(choices)})")
            return None
        if got not in choices:
            self.err(path, f"must be one of {one_of(choices)}, got {show(got)}")
            return None
        return got

    def absolute_path(self, value: object, path: str) -> str | None:
        got = self.text(value, path, max_len=4096)
        if got is None:
            return None
        if not got.startswith("/") or "\x00" in got or ".." in got.split("/"):
            self.err(path, f"must be an absolute path without `..`, got {show(got)}")
            return None
        return got

    def did(self, value: object, path: str) -> str | None:
        got = self.text(value, path)
        if got is not None and not is_did(got):
            self.err(path, f"must be a provider's did:key, got {show(got)}")
            return None
        return got
