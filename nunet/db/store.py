"""The node's embedded key-value store: one RocksDB (via rocksdict) per node, bytes in, bytes out.

Durability: every write goes through the write-ahead log before the call returns, so a write
that returned survives a killed process. `sync=True` (the default) also fsyncs the WAL before
returning (it survives a power loss too); `sync=False` leaves the fsync to the group commit
(`groupcommit.py`), which runs it on its own thread within `sync_interval_s`, one fsync for every
write made meanwhile; `await store.synced()` waits for it without blocking the event loop. The
WAL is replayed with point-in-time recovery, so a record torn by a kill is dropped, never
half-read, and a power loss keeps a prefix of the writes, never a write without those before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import rocksdict

from nunet.db.groupcommit import GroupCommit
from nunet.errors import ClosedResourceError, LocalProtocolError, StorageFull, StoreError

# A scan holds no RocksDB iterator between two `next()` calls: a live iterator keeps the
# database (and its LOCK file) open even after `close()`, so we read in chunks and re-seek.
_SCAN_CHUNK = 256

# The longest a `sync=False` write waits for its fsync under a steady stream of writes (an
# isolated one is fsynced at once): at most 1/this fsyncs per second whatever the load.
DEFAULT_SYNC_INTERVAL_S = 0.005


class WriteBatch:
    """Puts and deletes collected inside `Store.batch()`; written all at once or not at all."""

    __slots__ = ("_batch",)

    def __init__(self) -> None:
        self._batch = rocksdict.WriteBatch(raw_mode=True)

    def put(self, key: bytes, value: bytes) -> None:
        _check_bytes(key, value)
        self._batch.put(key, value)

    def delete(self, key: bytes) -> None:
        _check_bytes(key)
        self._batch.delete(key)

    def __len__(self) -> int:
        return self._batch.len()


class Store:
    """An open database. Thread-safe; use one per node and close it on shutdown."""

    def __init__(self, db: rocksdict.Rdict, path: Path, *,
                 sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S) -> None:
        # Use `Store.open`; this only wraps an already opened database.
        self._db: rocksdict.Rdict | None = db
        self.path = path
        self._close_lock = threading.Lock()
        self._synced = rocksdict.WriteOptions()
        self._synced.sync = True
        self._unsynced = rocksdict.WriteOptions()
        self._unsynced.sync = False
        # Bound to this Rdict (not `self._db`): `close` stops it before closing the database.
        # No reference back to `self`: a Store dropped unclosed still releases its database.
        self._group = GroupCommit(functools.partial(_sync_wal, db, path),
                                  interval_s=sync_interval_s, name=f"store-sync {path.name}")
        # Serialises read-check-write sequences (e.g. Repository.create) across threads.
        self.write_lock = threading.RLock()

    @classmethod
    def open(cls, path: Path, *, sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S) -> Store:
        """`sync_interval_s`: the group commit's fsync period under load (see module)."""
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        try:
            db = rocksdict.Rdict(str(path), _options())
        except Exception as exc:
            raise _translate(exc, path, "open") from exc
        try:
            return cls(db, path, sync_interval_s=sync_interval_s)
        except BaseException:
            _close_quietly(db)
            raise

    def close(self) -> None:
        with self._close_lock:
            db, self._db = self._db, None
        if db is None:
            return
        # Runs the fsync still owed to `sync=False` writes; then nobody else touches `db`.
        self._group.close()
        try:
            # Makes the next open fast; it also persists what the WAL holds.
            db.flush()
        except Exception as exc:
            _close_quietly(db)
            raise _translate(exc, self.path, "flush on close") from exc
        try:
            db.close()
        except Exception as exc:
            raise _translate(exc, self.path, "close") from exc

    @property
    def closed(self) -> bool:
        return self._db is None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else "open"
        return f"<Store {str(self.path)!r} {state}>"

    def get(self, key: bytes) -> bytes | None:
        _check_bytes(key)
        db = self._require_open()
        try:
            value = db.get(key)
        except Exception as exc:
            self._fail(exc, "get")
        return _as_bytes(value)

    def put(self, key: bytes, value: bytes, *, sync: bool = True) -> None:
        """Write `key`. Survives a killed process once this returns; a power loss too with
        `sync` (fsynced here), else once the group commit has fsynced it (`synced()`)."""
        _check_bytes(key, value)
        db = self._require_open()
        try:
            db.put(key, value, self._synced if sync else self._unsynced)
        except Exception as exc:
            self._fail(exc, "put")
        if not sync:
            self._sync_later()

    def delete(self, key: bytes, *, sync: bool = True) -> None:
        """Delete `key` (missing is fine); `sync` as for `put`."""
        _check_bytes(key)
        db = self._require_open()
        try:
            db.delete(key, self._synced if sync else self._unsynced)
        except Exception as exc:
            self._fail(exc, "delete")
        if not sync:
            self._sync_later()

    def sync_soon(self) -> Future[None]:
        """Have the group commit fsync the WAL soon; the future resolves once every write made
        before this call is fsynced (or fails with the StoreError of the fsync)."""
        self._require_open()
        try:
            return self._group.request()
        except ClosedResourceError:
            raise ClosedResourceError(f"store {self.path} is closed") from None

    async def synced(self) -> None:
        """Wait, without blocking the event loop, until every write made before this call is
        fsynced: what a caller whose answer promises power-loss durability awaits."""
        await asyncio.wrap_future(self.sync_soon())

    @property
    def wal_syncs(self) -> int:
        """Fsyncs the group commit has done."""
        return self._group.syncs

    def _sync_later(self) -> None:
        # Closed since the write: it is in the WAL, and `close` flushed or will flush it.
        with contextlib.suppress(ClosedResourceError):
            self._group.request()

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with `prefix`, in key order.

        Not a snapshot: a write made while the scan runs may or may not be seen.
        """
        _check_bytes(prefix)
        return self._scan(prefix)

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        start = prefix
        while True:
            chunk = self._read_chunk(start, prefix)
            yield from chunk
            if len(chunk) < _SCAN_CHUNK:
                return
            # The smallest key strictly after the last one read.
            start = chunk[-1][0] + b"\x00"

    def _read_chunk(self, start: bytes, prefix: bytes) -> list[tuple[bytes, bytes]]:
        db = self._require_open()
        out: list[tuple[bytes, bytes]] = []
        it: rocksdict.RdictIter | None = None
        try:
            it = db.iter()
            it.seek(start)
            while it.valid() and len(out) < _SCAN_CHUNK:
                key = _as_bytes(it.key())
                if key is None or not key.startswith(prefix):
                    break
                value = _as_bytes(it.value())
                out.append((key, value if value is not None else b""))
                it.next()
            # An iterator that hits a damaged block just stops being valid; only status() tells.
            it.status()
        except Exception as exc:
            self._fail(exc, "scan")
        finally:
            # Drop the iterator before an error's traceback can keep it (and the DB) alive.
            it = None
        return out

    @contextmanager
    def batch(self, *, sync: bool = True) -> Iterator[WriteBatch]:
        """Collect writes; committed atomically if the block exits normally; `sync` as for
        `put`."""
        self._require_open()
        wb = WriteBatch()
        yield wb
        if len(wb) == 0:
            return
        db = self._require_open()
        try:
            db.write(wb._batch, self._synced if sync else self._unsynced)
        except Exception as exc:
            self._fail(exc, "batch write")
        if not sync:
            self._sync_later()

    def _require_open(self) -> rocksdict.Rdict:
        db = self._db
        if db is None:
            raise ClosedResourceError(f"store {self.path} is closed")
        return db

    def _fail(self, exc: Exception, what: str) -> NoReturn:
        raise _translate(exc, self.path, what) from exc


def _options() -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    # A SIGKILL can tear the last WAL record; keep everything before it instead of refusing to
    # open (absolute_consistency) or silently skipping records in the middle.
    opts.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
    opts.set_paranoid_checks(True)
    # RocksDB's info LOG grows without bound by default; a node runs for months.
    opts.set_keep_log_file_num(2)
    opts.set_max_log_file_size(1 << 20)
    # An idle node must stay small: a node's metadata is megabytes, not gigabytes.
    opts.set_write_buffer_size(8 << 20)
    opts.set_max_background_jobs(2)
    return opts


def _sync_wal(db: rocksdict.Rdict, path: Path) -> None:
    try:
        db.flush_wal(True)
    except Exception as exc:
        raise _translate(exc, path, "WAL sync") from exc


def _check_bytes(*parts: object) -> None:
    for part in parts:
        if not isinstance(part, bytes):
            raise LocalProtocolError(f"store keys and values are bytes, got {type(part).__name__}")


def _as_bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise StoreError(f"unexpected value of type {type(value).__name__} from the database")


def _close_quietly(db: rocksdict.Rdict) -> None:
    # The flush error already being raised is the one that matters.
    with contextlib.suppress(Exception):
        db.close()


def _os_error(exc: OSError, path: Path) -> StoreError:
    if "No space left" in str(exc):
        return StorageFull(f"no space left for database {path}")
    return StoreError(f"cannot create database directory {path}: {exc.strerror or exc}")


def _translate(exc: Exception, path: Path, what: str) -> StoreError | ClosedResourceError:
    if isinstance(exc, rocksdict.DbClosedError):
        return ClosedResourceError(f"store {path} is closed")
    msg = str(exc)
    low = msg.lower()
    if "no space left" in low:
        return StorageFull(f"no space left for database {path}: {msg}")
    if "lock hold by current process" in low:
        return StoreError(
            f"database {path} is in use by another process (or is already open in this one)"
        )
    if "lock" in low and ("temporarily unavailable" in low or "while lock file" in low):
        return StoreError(f"database {path} is in use by another process")
    if low.startswith("corruption") or "corrupt" in low:
        return StoreError(f"database {path} is corrupted ({what}): {msg}")
    return StoreError(f"database {path}: {what} failed: {msg}")
