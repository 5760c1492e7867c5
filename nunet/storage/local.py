"""A local volume: the directory `<work_dir>/volumes/<deployment>/<name>`.

Keys are walked component by component with `lstat`, and any symlink on the way is refused: this
code never creates one, so one found inside a volume was planted and may point anywhere. Writes
are staged in `.nunet-part-*` beside the volume (volume names start with a letter or digit, so
they cannot collide) and merged in by renames after every file is fsynced.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
import stat
import threading
from pathlib import Path

from nunet.errors import (
    ObjectNotFound,
    ReadOnlyVolume,
    StorageError,
    UnsafePath,
    ValidationError,
    VolumeNotFound,
)
from nunet.storage.api import TransferStats, VolumeBase, VolumeSpec
from nunet.storage.files import (
    Staging,
    commit_file,
    commit_tree,
    copy_files,
    run_blocking,
    scan_source,
    translated,
    tree_size,
)
from nunet.storage.paths import split_key


class LocalVolume(VolumeBase):
    def __init__(self, spec: VolumeSpec, *, base_dir: Path) -> None:
        self._spec = spec
        self._base = base_dir
        self.root = base_dir / spec.name

    async def close(self) -> None:
        """Nothing to release; here to satisfy `Volume`."""

    async def create(self) -> None:
        await run_blocking(self._create)

    async def upload(self, local_path: Path, key_or_prefix: str = "") -> TransferStats:
        self._writable()
        parts = split_key(key_or_prefix, "key")
        return await run_blocking(self._upload, Path(local_path), parts)

    async def download(self, key_or_prefix: str, local_path: Path) -> TransferStats:
        parts = split_key(key_or_prefix, "key")
        return await run_blocking(self._download, parts, Path(local_path))

    async def size(self) -> int:
        return await run_blocking(self._size)

    async def delete(self) -> None:
        self._writable()
        await run_blocking(self._delete)

    async def list(self, prefix: str = "") -> builtins.list[str]:
        parts = split_key(prefix, "prefix")
        return await run_blocking(self._list, parts)

    # --- blocking halves, run in a worker thread ----------------------------------------------

    def _create(self, abort: threading.Event) -> None:
        if not self._spec.read_only:
            with translated(str(self.root)):
                self._base.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self.root, 0o755)
        self._check_root()

    def _upload(
        self, local_path: Path, parts: tuple[str, ...], abort: threading.Event
    ) -> TransferStats:
        self._check_root()
        files, skipped = scan_source(local_path, abort)
        if not parts and files and files[0].key == "":
            raise ValidationError("uploading a file needs a key", path="key")
        self._lookup(parts)
        with translated(f"volume {self.name!r}"):
            staging = Staging(self._base)
        try:
            total = copy_files(files, staging, parts, abort, durable=True)
            with translated(f"volume {self.name!r}"):
                commit_tree(staging.root, self.root)
        finally:
            staging.cleanup()
        return TransferStats(len(files), total, tuple(skipped))

    def _download(
        self, parts: tuple[str, ...], local_path: Path, abort: threading.Event
    ) -> TransferStats:
        self._check_root()
        path, st = self._lookup(parts)
        if st is None:
            raise ObjectNotFound(f"{'/'.join(parts)!r} is not in volume {self.name!r}", path="key")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise ValidationError(f"{'/'.join(parts)!r} is not a regular file", path="key")
        files, skipped = scan_source(path, abort)
        with translated(str(local_path)):
            local_path.parent.mkdir(parents=True, exist_ok=True)
            staging = Staging(local_path.parent)
        try:
            total = copy_files(files, staging, ("out",), abort, durable=False)
            with translated(str(local_path)):
                if stat.S_ISREG(st.st_mode):
                    commit_file(staging.root / "out", local_path)
                else:
                    (staging.root / "out").mkdir(exist_ok=True)
                    commit_tree(staging.root / "out", local_path)
        finally:
            staging.cleanup()
        return TransferStats(len(files), total, tuple(skipped))

    def _size(self, abort: threading.Event) -> int:
        self._check_root()
        with translated(str(self.root)):
            return tree_size(self.root)

    def _delete(self, abort: threading.Event) -> None:
        try:
            self._check_root()
        except VolumeNotFound:
            return
        # Renamed away first so the volume disappears at once, never half-deleted.
        doomed = self._base / f".nunet-delete-{secrets.token_hex(8)}"
        with translated(str(self.root)):
            os.rename(self.root, doomed)
            shutil.rmtree(doomed)

    def _list(self, parts: tuple[str, ...], abort: threading.Event) -> builtins.list[str]:
        self._check_root()
        path, st = self._lookup(parts)
        if st is None:
            return []
        if stat.S_ISREG(st.st_mode):
            return ["/".join(parts)]
        if not stat.S_ISDIR(st.st_mode):
            return []
        files, _ = scan_source(path, abort)
        return ["/".join((*parts, f.key)) for f in files]

    # --- checks -------------------------------------------------------------------------------

    def _writable(self) -> None:
        if self._spec.read_only:
            raise ReadOnlyVolume(f"volume {self.name!r} is read-only")

    def _check_root(self) -> None:
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            raise VolumeNotFound(f"local volume {self.name!r} does not exist") from None
        except OSError as exc:
            raise StorageError(f"{self.root}: {exc.strerror}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"volume directory {self.root} is a symlink", path="volume.name")
        if not stat.S_ISDIR(st.st_mode):
            raise StorageError(f"volume directory {self.root} is not a directory")

    def _lookup(self, parts: tuple[str, ...]) -> tuple[Path, os.stat_result | None]:
        """The path of `parts` in the volume and its lstat (None when missing); a symlink or a
        file on the way is refused."""
        path = self.root
        with translated(str(self.root)):
            st: os.stat_result | None = os.lstat(path)
            for i, part in enumerate(parts):
                path = path / part
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    return path, None
                key = "/".join(parts[: i + 1])
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafePath(f"{key!r} is a symlink in volume {self.name!r}", path="key")
                if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                    raise ValidationError(f"{key!r} is a file, not a directory", path="key")
        return path, st
