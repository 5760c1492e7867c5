from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from nunet.db import Repository, Store

sys.path.insert(0, str(Path(__file__).parent))
from _crash_writer import COUNTER, Record, record

WRITER = Path(__file__).with_name("_crash_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def start_writer(db: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def kill_after(proc: subprocess.Popen[str], delay: float, wait_ready: bool) -> list[int]:
    """SIGKILL the writer `delay` s after it is ready (or after start); the indices it reported."""
    assert proc.stdout is not None
    if wait_ready:
        line = proc.stdout.readline()
        assert line == "ready\n", f"writer failed to start: {line!r} {proc.stderr}"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    # Only whole lines count: a line cut by the kill proves nothing.
    lines = out.split("\n")[:-1]
    return [int(x) for x in lines if x != "ready"]


def test_sigkill_mid_write_leaves_a_consistent_database(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    db = tmp_path / "db"
    reported_total: set[int] = set()
    for round_ in range(6):
        # Some rounds die while opening (and replaying the previous crash's log).
        wait_ready = round_ % 3 != 2
        proc = start_writer(db)
        reported = kill_after(proc, rng.uniform(0.0, 0.3), wait_ready)
        reported_total.update(reported)
        context = f"seed={seed} round={round_}"

        with Store.open(db) as store:
            raw = store.get(COUNTER)
            count = 0 if raw is None else msgspec.msgpack.decode(raw, type=int)
            records = Repository(store, "rec", Record).list()  # every record decodes
            assert [r.index for r in records] == list(range(count)), context
            assert all(r == record(r.index) for r in records), context
            assert all(i < count for i in reported_total), context
    assert len(reported_total) > 0, f"seed={seed}: the writer never committed anything"
