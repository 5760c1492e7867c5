"""An allocation's files on the provider: `<work_dir>/allocations/<deployment>/<allocation>/`
with `logs/` (what the container printed, kept after the container is removed), `inputs/` (S3
inputs staged for it) and `outputs/` (what it leaves for its S3 outputs). They stay until the
deployment is deleted, so logs and results can be read after the allocation actor is gone.

Logs are three append-only files (`both`, `stdout`, `stderr`), each capped at `max_bytes` (the
head is kept and one truncation note appended: offsets stay valid for readers that follow).
Results are read from directories a container wrote, so they are untrusted: a key naming a
symlink anywhere on its way, or anything but a regular file, is refused (`UnsafePath`).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Literal

from nunet.errors import NotFound, UnsafePath
from nunet.storage.files import open_source, scan_source, translated
from nunet.storage.paths import check_name, split_key

LogStream = Literal["both", "stdout", "stderr"]
STREAMS: tuple[LogStream, ...] = ("both", "stdout", "stderr")
MAX_CHUNK = 512 * 1024  # a reply stays well inside one actor message
MAX_LISTING_BYTES = 256 * 1024


def deployment_dir(work_dir: Path, deployment_id: str) -> Path:
    return work_dir / "allocations" / check_name(deployment_id, "deployment_id")


def allocation_dir(work_dir: Path, deployment_id: str, allocation: str) -> Path:
    return deployment_dir(work_dir, deployment_id) / check_name(allocation, "allocation")


class LogFiles:
    """The bounded log files of one allocation. Blocking but small writes (page cache)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        with translated(str(directory)):
            directory.mkdir(parents=True, exist_ok=True)
        self._paths = {s: directory / f"{s}.log" for s in STREAMS}
        self._max = max_bytes
        self._files: dict[LogStream, BinaryIO] = {}
        self._sizes = {s: _size(p) for s, p in self._paths.items()}

    def sizes(self) -> tuple[int, int, int]:
        return self._sizes["both"], self._sizes["stdout"], self._sizes["stderr"]

    def truncate(self, base: tuple[int, int, int]) -> None:
        """Back to `base` (the sizes when the current execution began): a re-adopted container
        replays its whole log."""
        self.close()
        for s, size in zip(STREAMS, base, strict=True):
            if self._sizes[s] > size:
                with translated(str(self._paths[s])):
                    os.truncate(self._paths[s], size)
                self._sizes[s] = size

    def write(self, stream: Literal["stdout", "stderr"], data: bytes) -> None:
        for s in ("both", stream):
            self._append(s, data)

    def _append(self, s: LogStream, data: bytes) -> None:
        size = self._sizes[s]
        if size >= self._max:
            return
        if size + len(data) > self._max:
            data = data[: self._max - size] + f"\n[nunet: log truncated at {self._max} bytes]\n"\
                .encode()
        f = self._files.get(s)
        with translated(str(self._paths[s])):
            if f is None:
                f = self._files[s] = open(self._paths[s], "ab")  # noqa: SIM115 - kept open
            f.write(data)
            f.flush()
        self._sizes[s] = size + len(data)

    def read(self, stream: LogStream, offset: int, limit: int) -> tuple[bytes, int]:
        """Up to `limit` bytes from `offset`, and the file's size."""
        size = self._sizes[stream]
        if offset >= size:
            return b"", size
        with translated(str(self._paths[stream])), open(self._paths[stream], "rb") as f:
            f.seek(max(0, offset))
            return f.read(max(0, min(limit, MAX_CHUNK, size - offset))), size

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def list_results(roots: Mapping[str, Path], offset: int) -> tuple[tuple[str, ...], int, bool]:
    """The files under each root as `<root name>/<key>`, sorted, from index `offset`, as many as
    fit in a reply: (files, next offset, whether the list is complete)."""
    keys: list[str] = []
    for name in sorted(roots):
        root = roots[name]
        if not os.path.isdir(root) or os.path.islink(root):
            continue
        files, _skipped = scan_source(root)
        keys.extend(f"{name}/{f.key}" for f in files)
    out: list[str] = []
    used = 0
    i = max(0, offset)
    while i < len(keys) and used + len(keys[i]) <= MAX_LISTING_BYTES:
        out.append(keys[i])
        used += len(keys[i]) + 8
        i += 1
    return tuple(out), i, i >= len(keys)


def read_result(
    roots: Mapping[str, Path], key: str, offset: int, limit: int
) -> tuple[bytes, int, bool]:
    """Bytes of the result file `key` (`<root name>/<path>`) from `offset`: (data, next offset,
    eof). A key that leaves its root or passes a symlink is `UnsafePath`; a missing file
    `NotFound`."""
    parts = split_key(key, "path")
    if len(parts) < 2 or parts[0] not in roots:
        raise NotFound(f"no result file {key!r}", path="path")
    path = roots[parts[0]]
    for i, part in enumerate(parts[1:], start=2):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise NotFound(f"no result file {key!r}", path="path") from None
        except OSError as exc:
            raise UnsafePath(f"{'/'.join(parts[:i])}: {exc.strerror}", path="path") from None
        if stat.S_ISLNK(mode):
            raise UnsafePath(f"{'/'.join(parts[:i])} is a symlink", path="path")
        if i < len(parts) and not stat.S_ISDIR(mode):
            raise NotFound(f"no result file {key!r}", path="path")
    with translated(key):
        fd = open_source(path)
        try:
            size = os.fstat(fd).st_size
            start = max(0, offset)
            data = os.pread(fd, max(0, min(limit, MAX_CHUNK)), start) if start < size else b""
        finally:
            os.close(fd)
    end = start + len(data)
    return data, end, end >= size


def remove_tree(path: Path) -> None:
    """Delete a directory tree (no-op when missing); symlinks inside are removed, not followed."""
    if not os.path.lexists(path):
        return
    with translated(str(path)):
        shutil.rmtree(path)
