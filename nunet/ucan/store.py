"""Capability state on disk: one file per context, `<user_dir>/cap/<context>.cap` (as DMS keeps
`~/.nunet/cap/<context>.cap`), so `nunet cap` can change a context while the node runs.

The file is msgpack (`CapFile`): a format version, root DIDs, require anchors, provide anchors
(token + proofs), revocations, and tokens kept for `nunet cap list`, each list in the order the
records were added. Every change takes an exclusive `flock` on `<context>.cap.lock`, re-reads the
file, applies itself and replaces the file atomically (`write_atomic`: fsynced before it returns),
so two processes changing one context never lose each other's writes. Reads come from the
snapshot loaded last: `reload()` re-reads.

Values are stored as they were verified. Loading decodes the file (a file that does not decode is
a `StoreError` naming it) but does not verify signatures again: it is this node's own disk, and a
node with hundreds of revocations would otherwise spend a signature each at start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec

from nunet.codec import DECODE_ERRORS
from nunet.errors import NotFound, StoreError, ValidationError
from nunet.fsutil import write_atomic
from nunet.ucan.token import token_id

FORMAT_VERSION = 1
SUFFIX = ".cap"
LOCK_SUFFIX = ".cap.lock"
# Far above any real context (a token is ~300 bytes); stops a runaway file from being read whole.
MAX_FILE_SIZE = 64 << 20
# Also a valid key name (the context's key has the context's name), so no leading '_' or '-'.
_CONTEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

Chain = tuple[bytes, tuple[bytes, ...]]
T = TypeVar("T")


class _Header(msgspec.Struct):
    """Read first, so a file of another format version is named as such, not as garbage."""

    version: int


class CapFile(msgspec.Struct, kw_only=True):
    """The whole file. New fields get defaults, so an older file still reads."""

    version: int = FORMAT_VERSION
    roots: list[str] = msgspec.field(default_factory=list)
    require: list[bytes] = msgspec.field(default_factory=list)
    provide: list[tuple[bytes, tuple[bytes, ...]]] = msgspec.field(default_factory=list)
    revocations: list[bytes] = msgspec.field(default_factory=list)
    tokens: list[bytes] = msgspec.field(default_factory=list)


_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(_Header)
_decoder = msgspec.msgpack.Decoder(CapFile)


def check_context(name: object) -> str:
    """`name` if it is a valid context name, else ValidationError."""
    if not isinstance(name, str) or not _CONTEXT.match(name):
        raise ValidationError(
            f"a context name is 1-64 letters, digits, '_' or '-', starting with a letter or "
            f"digit; got {name!r}",
            path="context",
        )
    return name


class CapabilityStore:
    """The records of one capability context, in `<cap_dir>/<context>.cap`."""

    def __init__(self, cap_dir: Path, context: str, snapshot: CapFile) -> None:
        """Use `open`."""
        self.cap_dir = Path(cap_dir)
        self.context = check_context(context)
        self.path = self.cap_dir / f"{context}{SUFFIX}"
        self._lock_path = self.cap_dir / f"{context}{LOCK_SUFFIX}"
        self._data = snapshot
        self._editing: CapFile | None = None

    @classmethod
    def open(cls, cap_dir: Path, context: str, *, create: bool = False) -> CapabilityStore:
        """The context `context` in `cap_dir`; with `create`, an empty file is made if it has
        none, else a missing context is NotFound."""
        cap_dir = Path(cap_dir)
        check_context(context)
        path = cap_dir / f"{context}{SUFFIX}"
        snapshot = _read(path)
        if snapshot is None:
            if not create:
                raise NotFound(
                    f"no capability context {context!r} in {cap_dir}: "
                    f"`nunet cap new {context}` creates it"
                )
            store = cls(cap_dir, context, CapFile())
            with store.edit():
                pass  # takes the lock, adopts a file made meanwhile, else writes an empty one
            return store
        return cls(cap_dir, context, snapshot)

    @staticmethod
    def exists(cap_dir: Path, context: str) -> bool:
        return (Path(cap_dir) / f"{check_context(context)}{SUFFIX}").is_file()

    @staticmethod
    def contexts(cap_dir: Path) -> list[str]:
        """The names of the contexts that have a file in `cap_dir`, sorted."""
        try:
            names = os.listdir(cap_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"{cap_dir}: cannot list contexts: {exc.strerror}") from None
        found = (name.removesuffix(SUFFIX) for name in names if name.endswith(SUFFIX))
        return sorted(name for name in found if _CONTEXT.match(name))

    def __repr__(self) -> str:
        return f"<CapabilityStore {self.context!r} at {self.path}>"

    def reload(self) -> None:
        """Re-read the file (after another process changed it)."""
        snapshot = _read(self.path)
        if snapshot is None:
            raise NotFound(f"capability context {self.context!r}: {self.path} was removed")
        self._data = snapshot

    # --- changing the file ------------------------------------------------------------------------

    @contextlib.contextmanager
    def edit(self) -> Iterator[CapFile]:
        """Hold the context's lock, yield the file as it is on disk now, and write it back once
        on exit if it changed. Changes made through this store's methods inside the block join
        the same write (`TrustContext.gc` drops many records with one write)."""
        if self._editing is not None:
            yield self._editing
            return
        try:
            self.cap_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"{self._lock_path}: cannot open the lock: {exc.strerror}") from None
        try:
            _flock(fd, self._lock_path)
            current = _read(self.path) or CapFile()
            before = _encoder.encode(current)
            self._editing = current
            try:
                yield current
            finally:
                self._editing = None
            after = _encoder.encode(current)
            if after != before or not self.path.exists():
                try:
                    write_atomic(self.path, after, mode=0o600)
                except OSError as exc:
                    raise StoreError(f"{self.path}: cannot write: {exc.strerror}") from None
            self._data = current
        finally:
            os.close(fd)  # releases the lock

    def _change(self, apply: Callable[[CapFile], T]) -> T:
        with self.edit() as data:
            return apply(data)

    # --- roots ------------------------------------------------------------------------------------

    def roots(self) -> list[str]:
        return list(self._data.roots)

    def put_root(self, did: str) -> None:
        def apply(data: CapFile) -> None:
            if did not in data.roots:
                data.roots.append(did)

        self._change(apply)

    def delete_root(self, did: str) -> None:
        def apply(data: CapFile) -> None:
            data.roots = [root for root in data.roots if root != did]

        self._change(apply)

    # --- require anchors, revocations, tokens: token bytes, addressed by id -----------------------

    def requires(self) -> list[bytes]:
        return list(self._data.require)

    def put_require(self, raw: bytes) -> bytes:
        return self._change(lambda data: _put(data.require, raw))

    def delete_require(self, tid: bytes) -> None:
        self._change(lambda data: _delete(data.require, tid))

    def revocations(self) -> list[bytes]:
        return list(self._data.revocations)

    def put_revocation(self, raw: bytes) -> bytes:
        return self._change(lambda data: _put(data.revocations, raw))

    def delete_revocation(self, tid: bytes) -> None:
        self._change(lambda data: _delete(data.revocations, tid))

    def tokens(self) -> list[bytes]:
        return list(self._data.tokens)

    def put_token(self, raw: bytes) -> bytes:
        return self._change(lambda data: _put(data.tokens, raw))

    def get_token(self, tid: bytes) -> bytes | None:
        return next((raw for raw in self._data.tokens if token_id(raw) == tid), None)

    def delete_token(self, tid: bytes) -> None:
        self._change(lambda data: _delete(data.tokens, tid))

    # --- provide anchors: a token with its proofs -------------------------------------------------

    def provides(self) -> list[Chain]:
        return list(self._data.provide)

    def put_provide(self, raw: bytes, proofs: tuple[bytes, ...]) -> bytes:
        tid = token_id(raw)

        def apply(data: CapFile) -> None:
            if all(token_id(leaf) != tid for leaf, _ in data.provide):
                data.provide.append((raw, tuple(proofs)))

        self._change(apply)
        return tid

    def delete_provide(self, tid: bytes) -> None:
        def apply(data: CapFile) -> None:
            data.provide = [entry for entry in data.provide if token_id(entry[0]) != tid]

        self._change(apply)


def _put(records: list[bytes], raw: bytes) -> bytes:
    tid = token_id(raw)
    if all(token_id(old) != tid for old in records):
        records.append(raw)
    return tid


def _delete(records: list[bytes], tid: bytes) -> None:
    records[:] = [raw for raw in records if token_id(raw) != tid]


def _flock(fd: int, path: Path) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        except InterruptedError:  # a signal arrived while waiting: wait on
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise StoreError(f"{path}: cannot take the lock: {exc.strerror}") from None


def _read(path: Path) -> CapFile | None:
    """The file at `path`, None if there is none; StoreError naming it if it is not one."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read capability context: {exc.strerror}") from None
    if len(data) > MAX_FILE_SIZE:
        raise StoreError(f"{path}: corrupt capability context: larger than {MAX_FILE_SIZE} bytes")
    try:
        version = _header_decoder.decode(data).version
    except DECODE_ERRORS as exc:
        raise StoreError(f"{path}: corrupt capability context: {exc}") from None
    if version != FORMAT_VERSION:
        raise StoreError(
            f"{path}: capability context format {version}, this nunet reads {FORMAT_VERSION}"
        )
    try:
        return _decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise StoreError(f"{path}: corrupt capability context: {exc}") from None
