"""Crash-safe file writes: a reader sees the old file or the new one, never a torn one.

The pattern: write a uniquely named temp file in the target's directory, fsync it, move it into
place (rename, or a hard link where overwriting must be impossible), then fsync the directory so
the move itself survives a crash. Errors are plain OSErrors: callers translate them into their
own NunetError with the path that matters to the user.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def write_temp(directory: Path, name: str, data: bytes, mode: int) -> Path:
    """A fully written, fsynced temp file beside `directory/name`; removed again on failure."""
    tmp = directory / f"{name}.tmp-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it: say exactly what we mean
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable. Best effort: some filesystems cannot fsync a
    directory, and the file itself is already durable, so failing would misreport the write."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `target` with `data` atomically. `mode` defaults to the existing file's mode
    (0644 for a new file)."""
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = 0o644
    tmp = write_temp(target.parent, target.name, data, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
