"""Amounts of compute resources and their exact arithmetic.

Invariants: every amount is finite and non-negative and a GPU index appears at most once
(checked on construction and on decode). Arithmetic results keep GPUs sorted by index and drop a
GPU whose VRAM reaches 0, so a fully used GPU cannot be requested again and
`capacity - capacity == Resources()`. CPU cores are floats rounded to 3 decimals after each
operation, so that 0.1 + 0.2 cores is 0.3 cores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from nunet.errors import ValidationError

GIB = 1 << 30
_CPU_DECIMALS = 3


def gib(x: float) -> int:
    """GiB to bytes, rounded to the nearest byte."""
    return round(x * GIB)


def to_gib(n: int) -> float:
    return n / GIB


def format_gib(n: int) -> str:
    """Bytes as GiB for people: "2 GiB", "23.4 GiB"."""
    return f"{_plain(to_gib(n))} GiB"


def _plain(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


class GPU(msgspec.Struct, frozen=True):
    index: int
    vendor: str
    model: str
    vram_bytes: int


class Resources(msgspec.Struct, frozen=True):
    cpu_cores: float = 0.0
    ram_bytes: int = 0
    disk_bytes: int = 0
    gpus: tuple[GPU, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cpu_cores) and self.cpu_cores >= 0):
            raise ValidationError(
                f"must be finite and >= 0, got {self.cpu_cores}", path="cpu_cores"
            )
        for name in ("ram_bytes", "disk_bytes"):
            if getattr(self, name) < 0:
                raise ValidationError(f"must be >= 0, got {getattr(self, name)}", path=name)
        seen: set[int] = set()
        for pos, g in enumerate(self.gpus):
            if g.index in seen:
                raise ValidationError(f"GPU {g.index} listed twice", path=f"gpus[{pos}].index")
            if g.vram_bytes < 0:
                raise ValidationError(
                    f"must be >= 0, got {g.vram_bytes}", path=f"gpus[{pos}].vram_bytes"
                )
            seen.add(g.index)

    def __add__(self, other: Resources) -> Resources:
        return self.add(other)

    def __sub__(self, other: Resources) -> Resources:
        return self.subtract(other)

    def add(self, other: Resources) -> Resources:
        """Sum; GPUs with the same index have their VRAM added (vendor and model from `self`)."""
        gpus = {g.index: g for g in other.gpus}
        for g in self.gpus:
            if (o := gpus.get(g.index)) is not None:
                g = msgspec.structs.replace(g, vram_bytes=g.vram_bytes + o.vram_bytes)
            gpus[g.index] = g
        return Resources(
            cpu_cores=round(self.cpu_cores + other.cpu_cores, _CPU_DECIMALS),
            ram_bytes=self.ram_bytes + other.ram_bytes,
            disk_bytes=self.disk_bytes + other.disk_bytes,
            gpus=_normal(gpus.values()),
        )

    def subtract(self, other: Resources) -> Resources:
        """Difference; raises ValidationError (path of the first short field) on underflow."""
        if short := self.shortfalls(other):
            path, message = short[0]
            raise ValidationError(f"cannot subtract: {message}", path=path)
        mine = {g.index: g for g in self.gpus}
        for o in other.gpus:
            g = mine[o.index]
            mine[o.index] = msgspec.structs.replace(g, vram_bytes=g.vram_bytes - o.vram_bytes)
        return Resources(
            cpu_cores=round(self.cpu_cores - other.cpu_cores, _CPU_DECIMALS),
            ram_bytes=self.ram_bytes - other.ram_bytes,
            disk_bytes=self.disk_bytes - other.disk_bytes,
            gpus=_normal(mine.values()),
        )

    def fits(self, other: Resources) -> bool:
        """Whether `self` can hold `other` (each GPU of `other` matched by index)."""
        return not self.shortfalls(other)

    def shortfalls(self, other: Resources) -> list[tuple[str, str]]:
        """(path, message) for each part of `other` that `self` cannot hold; [] when it fits."""
        out: list[tuple[str, str]] = []
        if round(self.cpu_cores - other.cpu_cores, _CPU_DECIMALS) < 0:
            out.append(("cpu_cores", f"{other.cpu_cores:g} cores needed, {self.cpu_cores:g} there"))
        for name in ("ram_bytes", "disk_bytes"):
            need, have = getattr(other, name), getattr(self, name)
            if need > have:
                out.append((name, _needed(need, have)))
        mine = {g.index: g for g in self.gpus}
        for pos, o in enumerate(other.gpus):
            g = mine.get(o.index)
            if g is None:
                out.append((f"gpus[{pos}].index", f"no GPU {o.index} here"))
            elif o.vram_bytes > g.vram_bytes:
                vram = _needed(o.vram_bytes, g.vram_bytes)
                out.append((f"gpus[{pos}].vram_bytes", f"GPU {o.index}: VRAM {vram}"))
        return out

    def is_zero(self) -> bool:
        vram = (g.vram_bytes for g in self.gpus)
        return not any((self.cpu_cores, self.ram_bytes, self.disk_bytes, *vram))


def _needed(need: int, have: int) -> str:
    shown = format_gib(need), format_gib(have)
    if shown[0] == shown[1]:  # a difference too small to see in GiB
        shown = f"{need} bytes", f"{have} bytes"
    return f"{shown[0]} needed, {shown[1]} there"


def _normal(gpus: Iterable[GPU]) -> tuple[GPU, ...]:
    return tuple(sorted((g for g in gpus if g.vram_bytes > 0), key=lambda g: g.index))
