"""Printing replies: JSON with --json, otherwise readable `key: value` lines."""

from __future__ import annotations

from typing import Any

import click
import msgspec

GIB = 1 << 30


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def emit(data: Any, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(data), indent=2).decode())
        return
    for line in _lines(data, 0):
        click.echo(line)


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and key.endswith("_bytes"):
        return human_bytes(value)
    if isinstance(value, int | float) and key.endswith("_at") and value > 0:
        import datetime

        stamp = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
        return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, float):
        return f"{value:g}"
    if value is None or value == "":
        return "-"
    return str(value)


def _lines(data: Any, depth: int) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            label = key.removesuffix("_bytes").replace("_", " ")
            if isinstance(value, dict | list) and value:
                out.append(f"{pad}{label}:")
                out.extend(_lines(value, depth + 1))
            elif isinstance(value, dict | list):
                out.append(f"{pad}{label}: none")
            else:
                out.append(f"{pad}{label}: {_scalar(key, value)}")
    elif isinstance(data, list):
        if not data:
            out.append(f"{pad}(none)")
        for i, item in enumerate(data):
            if isinstance(item, dict | list):
                out.append(f"{pad}- [{i}]")
                out.extend(_lines(item, depth + 1))
            else:
                out.append(f"{pad}- {_scalar('', item)}")
    else:
        out.append(f"{pad}{_scalar('', data)}")
    return out
