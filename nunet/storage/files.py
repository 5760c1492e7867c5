"""Local file plumbing shared by the backends: read a tree safely, build in a private staging
directory, then commit by renames.

Sources are untrusted (a container's output directory): symlinks, FIFOs and devices are never
followed or opened, only regular files are read, and each is re-checked on the open file
descriptor (`O_NOFOLLOW`, `fstat`) so a swap between walk and open cannot smuggle one in.
Destinations are built complete in `.nunet-part-<random>` beside the target and moved into place
only when every byte is there, so a failure (disk full, a bad key, cancellation) leaves nothing
partial. Everything here is blocking: callers run it with `run_blocking`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from nunet.errors import (
    NotFound,
    NunetError,
    StorageDenied,
    StorageError,
    StorageFull,
    UnsafePath,
    ValidationError,
)
from nunet.fsutil import fsync_dir

CHUNK = 8 << 20
_OPEN_SOURCE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

T = TypeVar("T")


class Aborted(Exception):
    """The awaiting task was cancelled; the worker thread stops at its next chunk."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    key: str  # relative to the upload root; "" when the root itself is the file
    path: Path
    size: int


async def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args, abort)` in a worker thread. Cancelling the caller sets `abort`, which the
    copy loops check, so a cancelled transfer stops and cleans up instead of running on."""
    abort = threading.Event()
    try:
        return await asyncio.to_thread(fn, *args, abort)
    except asyncio.CancelledError:
        abort.set()
        raise


def os_error(exc: OSError, what: str) -> NunetError:
    """An OSError as the NunetError a caller can act on."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"no space left writing {what}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageDenied(f"{what}: {exc.strerror}")
    if exc.errno == errno.ENAMETOOLONG:
        return UnsafePath(f"name too long: {what}")
    if exc.errno == errno.ELOOP:
        return UnsafePath(f"{what} is a symlink")
    return StorageError(f"{what}: {exc.strerror or exc}")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise os_error(exc, what) from exc


def scan_source(
    root: Path, abort: threading.Event | None = None
) -> tuple[list[SourceFile], list[str]]:
    """The regular files an upload of `root` (a file or a directory) sends, sorted by key, and
    the entries it skips."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise NotFound(f"{root} does not exist", path="local_path") from None
    except OSError as exc:
        raise os_error(exc, str(root)) from exc
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{root} is a symlink; refusing to follow it", path="local_path")
    if stat.S_ISREG(st.st_mode):
        return [SourceFile("", root, st.st_size)], []
    if not stat.S_ISDIR(st.st_mode):
        raise ValidationError(f"{root} is neither a file nor a directory", path="local_path")
    files: list[SourceFile] = []
    skipped: list[str] = []
    stack: list[tuple[Path, str]] = [(root, "")]
    with translated(str(root)):
        while stack:
            if abort is not None and abort.is_set():
                raise Aborted
            directory, rel = stack.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    key = f"{rel}/{entry.name}" if rel else entry.name
                    est = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(est.st_mode):
                        stack.append((Path(entry.path), key))
                    elif stat.S_ISREG(est.st_mode) and _utf8(key):
                        files.append(SourceFile(key, Path(entry.path), est.st_size))
                    else:
                        skipped.append(key.encode("utf-8", "backslashreplace").decode())
    files.sort(key=lambda f: f.key)
    skipped.sort()
    return files, skipped


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def open_source(path: Path) -> int:
    """A read fd on a regular file, refusing a symlink or anything else swapped in."""
    fd = os.open(path, _OPEN_SOURCE)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{path} is no longer a regular file")
    return fd


def copy_file(src: Path, dst: Path, abort: threading.Event, *, durable: bool) -> int:
    """Copy `src` (a regular file, not followed) to a new file `dst`; the bytes copied."""
    src_fd = open_source(src)
    try:
        dst_fd = os.open(dst, _OPEN_NEW, 0o644)
        try:
            copied = 0
            while True:
                if abort.is_set():
                    raise Aborted
                n = os.sendfile(dst_fd, src_fd, None, CHUNK)
                if n == 0:
                    break
                copied += n
            if durable:
                os.fsync(dst_fd)
            return copied
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


class Staging:
    """A private directory beside a destination, on the same filesystem so commits are
    renames. Removed, with whatever it still holds, by `cleanup`."""

    def __init__(self, parent: Path) -> None:
        self.root = parent / f".nunet-part-{secrets.token_hex(8)}"
        os.mkdir(self.root, 0o700)

    def path_for(self, parts: tuple[str, ...]) -> Path:
        """Where the file at `parts` (relative to the staging root) is written."""
        target = self.root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def commit_file(src: Path, dest: Path) -> None:
    """Move the staged file `src` to `dest`, replacing a file (or a symlink itself, never
    its target) but not a directory."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(dest).st_mode):
            raise ValidationError(f"{dest} is a directory; cannot replace it with a file")
    os.replace(src, dest)
    fsync_dir(dest.parent)


def commit_tree(src: Path, dest: Path) -> None:
    """Merge the staged tree `src` into `dest` (created if missing). Conflicts (a file where
    a directory goes, a symlink on the way) are found before anything moves."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        os.rename(src, dest)
        fsync_dir(dest.parent)
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{dest} is a symlink; refusing to write through it")
    if not stat.S_ISDIR(st.st_mode):
        raise ValidationError(f"{dest} is a file; cannot merge a directory into it")
    _check_merge(src, dest)
    _merge(src, dest)


def _check_merge(src: Path, dest: Path) -> None:
    with os.scandir(src) as entries:
        for entry in entries:
            target = dest / entry.name
            try:
                mode = os.lstat(target).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode) and entry.is_dir(follow_symlinks=False):
                raise UnsafePath(f"{target} is a symlink; refusing to write through it")
            if entry.is_dir(follow_symlinks=False):
                if not stat.S_ISDIR(mode):
                    raise ValidationError(f"{target} is a file; a directory goes there")
                _check_merge(Path(entry.path), target)
            elif stat.S_ISDIR(mode):
                raise ValidationError(f"{target} is a directory; a file goes there")


def _merge(src: Path, dest: Path) -> None:
    with os.scandir(src) as entries:
        for entry in entries:
            target = dest / entry.name
            if entry.is_dir(follow_symlinks=False) and os.path.lexists(target):
                _merge(Path(entry.path), target)
            else:
                os.replace(entry.path, target)
    fsync_dir(dest)


def tree_size(root: Path) -> int:
    """Bytes in the regular files below `root`, symlinks not followed."""
    total = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def copy_files(
    files: list[SourceFile],
    staging: Staging,
    under: tuple[str, ...],
    abort: threading.Event,
    *,
    durable: bool,
) -> int:
    """Copy `files` into `staging` below `under`; the bytes copied."""
    total = 0
    for f in files:
        parts = (*under, *f.key.split("/")) if f.key else under
        with translated(f"{f.path} -> {'/'.join(parts)}"):
            total += copy_file(f.path, staging.path_for(parts), abort, durable=durable)
    if abort.is_set():
        raise Aborted
    return total
