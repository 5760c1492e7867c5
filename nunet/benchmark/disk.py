"""Disk stage: sequential read/write MB/s (1 MiB blocks) and 4 KiB random read/write IOPS at queue
depth 1 with latency percentiles, on one test file in the node's work dir.

- O_DIRECT where the filesystem allows it, so the page cache is out of the figures; where it does
  not, buffered I/O with the cache dropped before reads and an fdatasync inside every write
  sample, and the results say so.
- The file is filled with random bytes first (compressing or deduplicating storage must not turn
  the test into a memory benchmark), then overwritten and read in place, as fio does.
- The file is `.nunet-bench-<pid>-<random>.tmp`: removed when the stage ends, fails or is
  interrupted (Ctrl-C raises in between two bounded kernel calls); files left behind by a killed
  run are swept at the next start once their process is gone.
- A full or read-only directory is a clear error (`StorageFull`, `ValidationError` naming
  `disk_dir`), raised before anything is written where it can be seen in advance.
"""

from __future__ import annotations

import array
import contextlib
import errno
import mmap
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from nunet.benchmark.measure import StageContext, summarize
from nunet.benchmark.model import Result
from nunet.errors import BrokenResourceError, NunetError, StorageFull, ValidationError

STEPS = 5
STAGE = "disk"
MIB = 1 << 20
PREFIX = ".nunet-bench-"
SEQ_BLOCK = MIB
RAND_BLOCK = 4096
_CHUNK = 8 * MIB  # bytes per kernel call: keeps Ctrl-C prompt on slow disks
_MARGIN = 16 * MIB  # free space left to others beyond the test file
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_FULL = (errno.ENOSPC, errno.EDQUOT)


def temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{PREFIX}*.tmp"))


def sweep_stale(directory: Path) -> list[Path]:
    """Removes test files whose process is gone (a run killed with SIGKILL); returns them."""
    removed = []
    for path in temp_files(directory):
        pid_text = path.name.removeprefix(PREFIX).split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(directory: Path) -> None:
    """Read-only before full: a read-only filesystem also reports little free space."""
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))


def check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed + _MARGIN:
        raise StorageFull(
            f"only {free / MIB:.0f} MiB free in {directory}; the disk benchmark needs "
            f"{(needed + _MARGIN) / MIB:.0f} MiB (a {needed / MIB:g} MiB test file and "
            f"{_MARGIN / MIB:g} MiB to spare); free some space or choose another --disk-dir",
            path="disk_dir",
        )


def translate(exc: OSError, directory: Path, size: int) -> NunetError:
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return StorageFull(
            f"no space left in {directory} for the disk benchmark's {size / MIB:g} MiB test "
            "file; free some space or choose another --disk-dir",
            path="disk_dir",
        )
    if exc.errno in _READ_ONLY:
        return ValidationError(
            f"cannot write the disk benchmark's test file in {directory}: {reason}; "
            "choose a writable directory with --disk-dir",
            path="disk_dir",
        )
    return BrokenResourceError(f"disk benchmark in {directory} failed: {reason}")


def run(ctx: StageContext) -> list[Result]:
    with probe_file(ctx) as test:
        ctx.step("test file written")
        return test.measure()


@contextlib.contextmanager
def probe_file(ctx: StageContext) -> Iterator[ProbeFile]:
    """A laid-out test file in `ctx.disk_dir`, removed on the way out whatever happens; every
    OSError on the way is translated (`translate`)."""
    directory, size = ctx.disk_dir, ctx.plan.disk_file_bytes
    path = directory / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"
    test = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        check_writable(directory)
        sweep_stale(directory)
        check_space(directory, size)
        test = ProbeFile(ctx, path)
        test.lay_out()
        yield test
    except OSError as exc:
        raise translate(exc, directory, size) from None
    finally:
        if test is not None:
            test.close()
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def percentile(ordered: list[int], q: float) -> float:
    """The q-quantile of sorted values (nearest rank, as fio reports its clat percentiles)."""
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


class ProbeFile:
    """The open test file and its aligned buffers; `sequential` and `random` are one sample."""

    def __init__(self, ctx: StageContext, path: Path) -> None:
        self.ctx = ctx
        self.path = path
        self.size = ctx.plan.disk_file_bytes // SEQ_BLOCK * SEQ_BLOCK or SEQ_BLOCK
        # mmap: page-aligned, as O_DIRECT requires; random bytes so nothing compresses them.
        self.seq_buf = mmap.mmap(-1, min(SEQ_BLOCK, self.size))
        self.seq_buf.write(os.urandom(len(self.seq_buf)))
        self.rand_buf = mmap.mmap(-1, RAND_BLOCK)
        self.rand_buf.write(os.urandom(RAND_BLOCK))
        self.lat = array.array("q", bytes(8 * ctx.plan.disk_max_ops))
        self.fd = -1
        self.direct = False
        self._open(direct=hasattr(os, "O_DIRECT"))

    def _open(self, *, direct: bool) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        if direct:
            try:
                self.fd = os.open(self.path, flags | os.O_EXCL | os.O_DIRECT, 0o600)
                self.direct = True
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        self.fd = os.open(self.path, flags | os.O_TRUNC, 0o600)
        self.direct = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.seq_buf.close()
        self.rand_buf.close()

    @property
    def note(self) -> str:
        where = f"{self.size / MIB:g} MiB file in {self.path.parent}"
        if self.direct:
            return f"O_DIRECT, {where}"
        return f"buffered (O_DIRECT not supported here: cache dropped, fdatasync timed), {where}"

    def measure(self) -> list[Result]:
        plan = self.ctx.plan
        results = []
        for write in (True, False):
            rates = [self.sequential(write) for _ in range(plan.disk_repeats)]
            kind = "write" if write else "read"
            results.append(summarize(f"disk.seq.{kind}", STAGE, "MB/s", rates,
                                     note=f"1 MiB blocks, {self.note}"))
            self.ctx.step(f"sequential {kind}")
        for write in (False, True):
            results.extend(self._random_results(write))
            self.ctx.step(f"random 4 KiB {'write' if write else 'read'}")
        return results

    def lay_out(self) -> None:
        try:
            self._write_through()
        except OSError as exc:
            if not (self.direct and exc.errno == errno.EINVAL):
                raise
            # Some filesystems accept O_DIRECT at open and refuse the I/O: go buffered.
            os.close(self.fd)
            self.fd = -1
            self._open(direct=False)
            self._write_through()
        os.fsync(self.fd)

    def _write_through(self) -> None:
        for offset in range(0, self.size, _CHUNK):
            part = min(_CHUNK, self.size - offset)
            self.ctx.kernels.disk_seq(self.fd, self.seq_buf, offset, part, True)

    def sequential(self, write: bool) -> float:
        """MB/s over `disk_seq_s`, going round the file as often as that takes (as fio's
        time-based runs do): a short burst would only measure the caches below us."""
        k = self.ctx.kernels
        t0 = time.perf_counter()
        deadline = t0 + self.ctx.plan.disk_seq_s
        done = 0
        while True:
            offset = done % self.size
            if offset == 0 and not write and not self.direct:
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
            done += k.disk_seq(self.fd, self.seq_buf, offset, min(_CHUNK, self.size - offset),
                               write)
            if time.perf_counter() >= deadline:
                break
        if write and not self.direct:
            os.fdatasync(self.fd)
        return done / (time.perf_counter() - t0) / 1e6

    def random(self, write: bool, seed: int) -> tuple[float, list[int]]:
        """IOPS of one `disk_rand_s` sample of 4 KiB requests, and their latencies (ns, sorted)."""
        plan = self.ctx.plan
        if not write and not self.direct:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t0 = time.perf_counter()
        ops = self.ctx.kernels.disk_random(
            self.fd, self.rand_buf, self.size // RAND_BLOCK, int(plan.disk_rand_s * 1e9),
            plan.disk_max_ops, write, seed, self.lat,
        )
        if write and not self.direct:
            os.fdatasync(self.fd)
        return ops / (time.perf_counter() - t0), sorted(self.lat[:ops])

    def _random_results(self, write: bool) -> list[Result]:
        kind = "write" if write else "read"
        iops: list[float] = []
        percentiles: dict[str, list[float]] = {"p50": [], "p99": [], "p999": []}
        for repeat in range(self.ctx.plan.disk_repeats):
            rate, ordered = self.random(write, repeat + 1)
            iops.append(rate)
            for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999)):
                percentiles[name].append(percentile(ordered, q) / 1000)
        note = f"4 KiB, queue depth 1, {self.note}"
        results = [summarize(f"disk.rand.{kind}", STAGE, "IOPS", iops, note=note)]
        for name, values in percentiles.items():
            results.append(summarize(f"disk.rand.{kind}.{name}", STAGE, "us", values,
                                     better="lower", note=f"latency {name}, {note}"))
        return results
