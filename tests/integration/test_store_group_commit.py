"""The store's group commit: `sync=False` writes are fsynced later, together, off the caller's
thread, and survive a killed process even when that fsync never came."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nunet.db import Repository, Singleton, Store
from nunet.db.groupcommit import GroupCommit
from nunet.errors import ClosedResourceError, StoreError, ValidationError
from nunet.jobs.records import DeploymentRecord
from nunet.jobs.spec import parse_ensemble

sys.path.insert(0, str(Path(__file__).parent))
from _group_commit_writer import ENSEMBLE, NAMESPACE, committing, created, deployment_id

WRITER = Path(__file__).with_name("_group_commit_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0  # a sync interval no test waits out: only `close` ends it early


class Recorder:
    """A fake fsync: counts calls and the threads they ran on; can be made to fail."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.fail: Exception | None = None

    def __call__(self) -> None:
        self.threads.append(threading.current_thread())
        if self.fail is not None:
            raise self.fail


# --- GroupCommit ----------------------------------------------------------------------------------


def test_requests_during_the_interval_share_one_fsync() -> None:
    sync = Recorder()
    group = GroupCommit(sync, interval_s=HOUR, name="test-sync")
    first = group.request()
    first.result(timeout=30)  # the first request after idle is not delayed
    assert group.syncs == 1
    later = [group.request() for _ in range(50)]
    assert all(f is later[0] for f in later)
    assert later[0] is not first
    assert not later[0].done()  # waiting out the interval
    group.close()  # runs the fsync still owed
    assert later[0].result(timeout=0) is None
    assert group.syncs == 2
    assert len(sync.threads) == 2
    assert all(t is not threading.current_thread() for t in sync.threads)


def test_a_failed_fsync_fails_its_waiters_and_the_next_one_can_succeed() -> None:
    sync = Recorder()
    sync.fail = StoreError("database x: WAL sync failed: IO error")
    group = GroupCommit(sync, interval_s=0.0, name="test-sync")
    try:
        with pytest.raises(StoreError, match="WAL sync failed"):
            group.request().result(timeout=30)
        assert group.syncs == 0
        sync.fail = None
        assert group.request().result(timeout=30) is None
        assert group.syncs == 1
    finally:
        group.close()


def test_closed_group_refuses_requests_and_close_is_idempotent() -> None:
    sync = Recorder()
    group = GroupCommit(sync, interval_s=0.0, name="test-sync")
    group.close()  # never started: nothing owed, no fsync
    group.close()
    assert sync.threads == []
    with pytest.raises(ClosedResourceError):
        group.request()


@pytest.mark.parametrize("interval", [-1.0, float("nan")])
def test_bad_interval_is_refused(interval: float) -> None:
    with pytest.raises(ValidationError) as info:
        GroupCommit(Recorder(), interval_s=interval, name="test-sync")
    assert info.value.path == "sync_interval_s"


# --- Store ----------------------------------------------------------------------------------------


async def test_synced_waits_for_an_fsync_of_earlier_unsynced_writes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        assert store.wal_syncs == 0
        store.put(b"a", b"1")  # synced writes leave the group commit alone
        assert store.wal_syncs == 0
        store.put(b"b", b"2", sync=False)
        store.delete(b"a", sync=False)
        with store.batch(sync=False) as b:
            b.put(b"c", b"3")
        await store.synced()
        assert store.wal_syncs >= 1
        assert [(k, v) for k, v in store.scan(b"")] == [(b"b", b"2"), (b"c", b"3")]


def test_close_fsyncs_what_the_interval_still_holds(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", sync_interval_s=HOUR)
    store.sync_soon().result(timeout=30)  # the first after idle runs at once; the hour starts
    assert store.wal_syncs == 1
    for i in range(20):
        store.put(b"k%02d" % i, b"v", sync=False)
    owed = store.sync_soon()
    assert not owed.done()
    store.close()
    assert owed.result(timeout=0) is None
    assert store.wal_syncs == 2  # one fsync for the twenty writes
    with Store.open(tmp_path / "db") as again:
        assert len(list(again.scan(b"k"))) == 20


def test_repository_and_singleton_writes_take_sync(tmp_path: Path) -> None:
    ensemble = parse_ensemble(ENSEMBLE)
    with Store.open(tmp_path / "db") as store:
        records = Repository(store, NAMESPACE, DeploymentRecord)
        state = Singleton(store, "state", DeploymentRecord)
        records.create("a", created(0, ensemble), sync=False)
        records.update("a", committing(0, ensemble), sync=False)
        records.put("b", created(1, ensemble), sync=False)
        records.delete("b", sync=False)
        state.set(created(2, ensemble), sync=False)
        state.clear(sync=False)
        store.sync_soon().result(timeout=30)
        assert store.wal_syncs >= 1
        assert records.get("a") == committing(0, ensemble)
        assert records.ids() == ["a"]
        assert state.get() is None


def test_sync_soon_on_a_closed_store_raises(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    store.close()
    with pytest.raises(ClosedResourceError, match="closed"):
        store.sync_soon()


def test_open_with_a_bad_interval_leaves_the_database_closed(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Store.open(tmp_path / "db", sync_interval_s=-1.0)
    with Store.open(tmp_path / "db") as store:  # not "in use": the failed open closed it
        store.put(b"k", b"v")


def test_a_store_dropped_unclosed_still_releases_its_database(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    store.put(b"k", b"v", sync=False)
    store.sync_soon().result(timeout=30)  # its group commit thread is running
    del store
    refusal = ""
    for _ in range(300):  # the idle thread lets go of it within about a second
        try:
            again = Store.open(tmp_path / "db")
        except StoreError as exc:
            refusal = str(exc)
            threading.Event().wait(0.1)
            continue
        with again:
            assert again.get(b"k") == b"v"
        return
    pytest.fail(f"the dropped store still holds the database after 30 s: {refusal}")


async def test_synced_does_not_run_the_fsync_on_the_event_loop(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        loop_thread = threading.current_thread()
        ran_on: list[threading.Thread] = []
        real = store._group._sync  # the hook is private: a spy, not a fake

        def spy() -> None:
            ran_on.append(threading.current_thread())
            real()

        store._group._sync = spy
        store.put(b"k", b"v", sync=False)
        await asyncio.gather(store.synced(), store.synced())
        assert ran_on
        assert all(t is not loop_thread for t in ran_on)


# --- a killed writer ------------------------------------------------------------------------------


def _kill_writer(db: Path, delay: float) -> list[int]:
    """Start the writer, SIGKILL it `delay` s after it is ready; the indices it reported."""
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert line == "ready\n", f"writer failed to start: {line!r}"
        first = proc.stdout.readline()  # it has written a record: the kill cannot miss them all
        assert first.strip().isdigit(), f"writer failed: {first!r}"
        threading.Event().wait(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    lines = out.split("\n")[:-1]  # a line cut by the kill proves nothing
    return [int(first)] + [int(x) for x in lines]


def test_unsynced_deployment_records_survive_sigkill(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    ensemble = parse_ensemble(ENSEMBLE)
    db = tmp_path / "db"
    cut: set[int] = set()  # the last record of each round, whose second write the kill may cut
    for round_ in range(3):
        reported = _kill_writer(db, rng.uniform(0.0, 0.2))
        context = f"seed={seed} round={round_}"
        with Store.open(db) as store:
            records = {r.id: r for r in Repository(store, NAMESPACE, DeploymentRecord).list()}
        # Every record the writer reported, though never fsynced, is there in its last state;
        # the WAL keeps a prefix of the writes, so only a round's last may lack its second one.
        count = len(records)
        assert max(reported) < count, context
        assert sorted(records) == [deployment_id(i) for i in range(count)], context
        cut.add(count - 1)
        for i in range(count):
            wanted = [committing(i, ensemble)]
            if i in cut:
                wanted.append(created(i, ensemble))
            assert records[deployment_id(i)] in wanted, f"{context} record {i}"
