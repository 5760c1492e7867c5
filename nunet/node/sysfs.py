"""Reading the small text files of /proc and /sys: missing or odd files read as empty or 0,
because detection must work on any machine and never raise."""

from __future__ import annotations

from pathlib import Path


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def read_int(path: Path) -> int:
    try:
        return max(0, int(read_text(path) or 0))
    except ValueError:
        return 0
