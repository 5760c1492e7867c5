"""Group commit: many writers, one fsync, on a thread of its own.

A write made with `sync=False` is in RocksDB's write-ahead log, in the OS page cache, when the
call returns: it survives a killed process. Only a power loss or a kernel crash can lose it, and
only until the log is fsynced. `GroupCommit` makes that window short without making a writer
wait: `request()` asks for an fsync and returns a future that resolves once an fsync started
after the request has finished. Requests made while an fsync runs, or within `interval_s` of the
last one, share the next fsync, so a burst of writes costs one fsync per `interval_s` instead of
one each, and none of it runs on the caller's thread (the event loop).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future

from nunet.errors import ClosedResourceError, ValidationError

log = logging.getLogger(__name__)

# How often an idle thread checks whether its GroupCommit was dropped without `close` (a store
# garbage-collected unclosed): the thread holds it only weakly, so the database is not kept open.
_IDLE_CHECK_S = 1.0


class GroupCommit:
    """Coalesces fsync requests; `sync` runs on a daemon thread started at the first request.

    `sync` must be safe to call concurrently with writes (RocksDB's `FlushWAL(sync=true)` is) and
    should release the GIL while it blocks (rocksdict's `flush_wal` does).
    """

    def __init__(self, sync: Callable[[], None], *, interval_s: float, name: str) -> None:
        if not interval_s >= 0:  # NaN too
            raise ValidationError(f"a sync interval is >= 0 s, got {interval_s!r}",
                                  path="sync_interval_s")
        self.interval_s = interval_s
        self.syncs = 0  # fsyncs done, for tests and stats
        self._sync = sync
        self._name = name
        self._cond = threading.Condition()
        self._next: Future[None] = Future()  # resolves after the next fsync
        self._wanted = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._last = -float("inf")  # monotonic start of the last fsync

    def request(self) -> Future[None]:
        """Ask for an fsync soon; the future resolves after one that covers every write made
        before this call (or fails with the fsync's error). ClosedResourceError after `close`."""
        with self._cond:
            if self._closing:
                raise ClosedResourceError(f"{self._name} is closed")
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=_serve, args=(weakref.ref(self),),
                                                name=self._name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify()
            return self._next

    def close(self) -> None:
        """Refuse new requests, run the fsync still owed to earlier ones, stop the thread."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _step(self) -> bool:
        """Wait a while for requests and run the fsync they want; False once closed and done."""
        with self._cond:
            if not self._wanted and not self._closing:
                self._cond.wait(_IDLE_CHECK_S)
            if not self._wanted:
                return not self._closing
            # At most one fsync per interval: writes arriving meanwhile join this one.
            while not self._closing:
                delay = self._last + self.interval_s - time.monotonic()
                if delay <= 0:
                    break
                self._cond.wait(delay)
            done, self._next = self._next, Future()
            self._wanted = False
        self._last = time.monotonic()
        try:
            self._sync()
        except Exception as exc:  # the writers awaiting it get the error
            log.error("%s: fsync failed: %s", self._name, exc)
            done.set_exception(exc)
        else:
            self.syncs += 1
            done.set_result(None)
        return True


def _serve(ref: weakref.ref[GroupCommit]) -> None:
    while (group := ref()) is not None and group._step():
        del group  # hold it only while working or briefly waiting
