"""The node's embedded key-value store: one RocksDB (via rocksdict) per node, bytes in, bytes out.

Durability: every write goes through the write-ahead log; `sync=True` (the default) fsyncs the
WAL before the call returns, so a write that returned survives SIGKILL and power loss. The WAL
is replayed with point-in-time recovery, so a record torn by a kill is dropped, never half-read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import rocksdict

from nunet.errors import ClosedResourceError, LocalProtocolError, StorageFull, StoreError

# A scan holds no RocksDB iterator between two `next()` calls: a live iterator keeps the
# database (and its LOCK file) open even after `close()`, so we read in chunks and re-seek.
_SCAN_CHUNK = 256


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

    def __init__(self, db: rocksdict.Rdict, path: Path) -> None:
        # Use `Store.open`; this only wraps an already opened database.
        self._db: rocksdict.Rdict | None = db
        self.path = path
        self._close_lock = threading.Lock()
        self._synced = rocksdict.WriteOptions()
        self._synced.sync = True
        self._unsynced = rocksdict.WriteOptions()
        self._unsynced.sync = False
        # Serialises read-check-write sequences (e.g. Repository.create) across threads.
        self.write_lock = threading.RLock()

    @classmethod
    def open(cls, path: Path) -> Store:
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        try:
            db = rocksdict.Rdict(str(path), _options())
        except Exception as exc:
            raise _translate(exc, path, "open") from exc
        return cls(db, path)

    def close(self) -> None:
        with self._close_lock:
            db, self._db = self._db, None
        if db is None:
            return
        try:
            # Not needed for durability (the WAL has it all); it makes the next open fast.
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
        _check_bytes(key, value)
        db = self._require_open()
        try:
            db.put(key, value, self._synced if sync else self._unsynced)
        except Exception as exc:
            self._fail(exc, "put")

    def delete(self, key: bytes, *, sync: bool = True) -> None:
        _check_bytes(key)
        db = self._require_open()
        try:
            db.delete(key, self._synced if sync else self._unsynced)
        except Exception as exc:
            self._fail(exc, "delete")

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
    def batch(self) -> Iterator[WriteBatch]:
        """Collect writes; committed atomically (and synced) if the block exits normally."""
        self._require_open()
        wb = WriteBatch()
        yield wb
        if len(wb) == 0:
            return
        db = self._require_open()
        try:
            db.write(wb._batch, self._synced)
        except Exception as exc:
            self._fail(exc, "batch write")

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
