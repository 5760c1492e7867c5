from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from nunet.db import Contains, In, Range, Repository, Singleton, Store
from nunet.errors import (
    AlreadyExists,
    ClosedResourceError,
    LocalProtocolError,
    NotFound,
    StorageFull,
    StoreError,
    ValidationError,
)


class Resources(msgspec.Struct, frozen=True):
    cpu: int
    ram: int


class Job(msgspec.Struct):
    name: str
    status: str
    resources: Resources
    priority: int | None = None


class Other(msgspec.Struct):
    count: int
    when: float


class Onboarding(msgspec.Struct):
    onboarded: bool
    capacity: Resources | None = None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "db") as s:
        yield s


def job(n: int, status: str = "running") -> Job:
    return Job(f"job-{n}", status, Resources(cpu=n % 8, ram=n % 5), priority=n % 3 or None)


# --- Store --------------------------------------------------------------------------------------


def test_open_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db"
    with Store.open(path) as s:
        assert s.path == path
        s.put(b"k", b"v")
        assert s.get(b"k") == b"v"
    assert path.is_dir()


def test_get_put_delete(store: Store) -> None:
    assert store.get(b"k") is None
    store.put(b"k", b"v1")
    store.put(b"k", b"v2", sync=False)
    assert store.get(b"k") == b"v2"
    store.put(b"empty", b"")
    assert store.get(b"empty") == b""
    store.delete(b"k")
    assert store.get(b"k") is None
    store.delete(b"never-there")  # deleting a missing key is not an error at this level


NOT_BYTES: dict[str, Callable[[Store], object]] = {
    "get": lambda s: s.get("k"),  # type: ignore[arg-type]
    "put-key": lambda s: s.put("k", b"v"),  # type: ignore[arg-type]
    "put-value": lambda s: s.put(b"k", "v"),  # type: ignore[arg-type]
    "delete": lambda s: s.delete(bytearray(b"k")),  # type: ignore[arg-type]
    "scan": lambda s: s.scan("k"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("call", NOT_BYTES)
def test_keys_and_values_must_be_bytes(store: Store, call: str) -> None:
    with pytest.raises(LocalProtocolError):
        NOT_BYTES[call](store)


def test_scan_returns_only_the_prefix_in_key_order(store: Store) -> None:
    for key in [b"jobs/1", b"job/b", b"jo", b"job", b"job/a", b"job/\xff", b"joc", b"job0"]:
        store.put(key, key.upper())
    assert list(store.scan(b"job/")) == [
        (b"job/a", b"JOB/A"),
        (b"job/b", b"JOB/B"),
        (b"job/\xff", b"JOB/\xff"),
    ]
    assert [k for k, _ in store.scan(b"jobs/")] == [b"jobs/1"]
    assert [k for k, _ in store.scan(b"job")] == [
        b"job",
        b"job/a",
        b"job/b",
        b"job/\xff",
        b"job0",
        b"jobs/1",
    ]
    assert list(store.scan(b"nothing/")) == []
    assert len(list(store.scan(b""))) == 8


def test_scan_crosses_chunks_without_losing_or_repeating_keys(store: Store) -> None:
    keys = [b"n/%05d" % i for i in range(1000)]
    with store.batch() as b:
        for k in keys:
            b.put(k, k)
        b.put(b"m", b"before")
        b.put(b"n0", b"after")
    assert [k for k, _ in store.scan(b"n/")] == keys


def test_abandoned_scan_does_not_keep_the_database_locked(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    for i in range(600):
        s.put(b"k/%04d" % i, b"v")
    scan = s.scan(b"k/")
    assert next(scan)[0] == b"k/0000"
    s.close()
    # A RocksDB iterator holds the DB (and its LOCK) open after close; the scan holds none.
    with Store.open(tmp_path / "db") as again:
        assert again.get(b"k/0001") == b"v"
        # The old scan may finish the chunk it read, but then sees its store closed.
        with pytest.raises(ClosedResourceError):
            list(scan)


def test_batch_commits_atomically(store: Store) -> None:
    store.put(b"old", b"1")
    with store.batch() as b:
        b.put(b"a", b"1")
        b.put(b"b", b"2")
        b.delete(b"old")
        assert len(b) == 3
        assert store.get(b"a") is None  # nothing visible before the block ends
    assert (store.get(b"a"), store.get(b"b"), store.get(b"old")) == (b"1", b"2", None)


def test_batch_is_discarded_on_exception(store: Store) -> None:
    store.put(b"old", b"1")

    def write() -> None:
        with store.batch() as b:
            b.put(b"a", b"1")
            b.delete(b"old")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write()
    assert (store.get(b"a"), store.get(b"old")) == (None, b"1")


def test_batch_rejects_non_bytes(store: Store) -> None:
    def write() -> None:
        with store.batch() as b:
            b.put(b"a", b"1")
            b.put("b", b"2")  # type: ignore[arg-type]

    with pytest.raises(LocalProtocolError):
        write()
    assert store.get(b"a") is None


def test_reopen_keeps_data_including_unsynced_writes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as s:
        s.put(b"synced", b"1")
        s.put(b"unsynced", b"2", sync=False)
        with s.batch() as b:
            b.put(b"batched", b"3")
    with Store.open(tmp_path / "db") as s:
        assert [v for _, v in s.scan(b"")] == [b"3", b"1", b"2"]


def test_closed_store_raises_and_close_is_idempotent(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    s.put(b"k", b"v")
    s.close()
    s.close()
    assert s.closed
    for call in (
        lambda: s.get(b"k"),
        lambda: s.put(b"k", b"v"),
        lambda: s.delete(b"k"),
        lambda: list(s.scan(b"")),
        lambda: s.batch().__enter__(),
    ):
        with pytest.raises(ClosedResourceError):
            call()


def test_batch_open_when_the_store_closes_is_not_written(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")

    def write() -> None:
        with s.batch() as b:
            b.put(b"k", b"v")
            s.close()

    with pytest.raises(ClosedResourceError):
        write()
    with Store.open(tmp_path / "db") as again:
        assert again.get(b"k") is None


_OPEN_IN_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nunet.db import Store
    from nunet.errors import StoreError
    try:
        Store.open(Path(sys.argv[1]))
    except StoreError as exc:
        print(type(exc).__name__, exc)
    else:
        print("opened")
    """
)


def test_a_database_open_in_another_process_is_in_use(store: Store) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _OPEN_IN_CHILD, str(store.path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert child.stdout.strip() == f"StoreError database {store.path} is in use by another process"
    store.put(b"still", b"usable")
    assert store.get(b"still") == b"usable"


def test_a_database_open_twice_in_this_process_is_in_use(store: Store) -> None:
    with pytest.raises(StoreError, match="is in use by another process"):
        Store.open(store.path)


def test_a_file_where_the_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("not a database")
    with pytest.raises(StoreError, match="db"):
        Store.open(tmp_path / "db")


def test_a_corrupted_database_is_a_store_error_naming_it(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as s:
        s.put(b"k", b"v")
    (tmp_path / "db" / "CURRENT").write_text("garbage\n")
    with pytest.raises(StoreError, match="corrupt") as info:
        Store.open(tmp_path / "db")
    assert str(tmp_path / "db") in str(info.value)
    assert type(info.value) is StoreError


# --- Repository ---------------------------------------------------------------------------------


def test_repository_crud(store: Store) -> None:
    jobs = Repository(store, "job", Job)
    assert jobs.create("j1", job(1)) == job(1)
    with pytest.raises(AlreadyExists, match="j1"):
        jobs.create("j1", job(2))
    assert jobs.get("j1") == job(1)
    assert jobs.find("j1") == job(1)
    assert jobs.find("j2") is None
    with pytest.raises(NotFound) as info:
        jobs.get("j2")
    assert "job" in str(info.value)
    assert "j2" in str(info.value)
    with pytest.raises(NotFound):
        jobs.update("j2", job(2))
    assert not jobs.exists("j2")
    jobs.put("j2", job(2))
    assert jobs.exists("j2")
    jobs.update("j2", job(3))
    assert jobs.get("j2") == job(3)
    assert jobs.ids() == ["j1", "j2"]
    assert jobs.list() == [job(1), job(3)]
    jobs.delete("j1")
    with pytest.raises(NotFound):
        jobs.delete("j1")
    assert jobs.ids() == ["j2"]


def test_repositories_do_not_see_neighbouring_namespaces(store: Store) -> None:
    job_repo = Repository(store, "job", Job)
    jobs_repo = Repository(store, "jobs", Job)
    singleton = Singleton(store, "job", Job)
    job_repo.put("a", job(1))
    jobs_repo.put("a", job(2))
    singleton.set(job(3))
    assert job_repo.list() == [job(1)]
    assert jobs_repo.list() == [job(2)]
    assert singleton.get() == job(3)
    assert job_repo.query().total == 1


def test_ids_may_hold_any_text(store: Store) -> None:
    repo = Repository(store, "cap", Job)
    for id_ in ["did:key:z6Mk/1", "é", " "]:
        repo.put(id_, job(1))
        assert repo.get(id_) == job(1)
    assert sorted(repo.ids()) == sorted(["did:key:z6Mk/1", "é", " "])


def test_bad_names_ids_and_objects(store: Store) -> None:
    for namespace in ["", "a/b", "with space", 3]:
        with pytest.raises(LocalProtocolError):
            Repository(store, namespace, Job)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Singleton(store, "cfg/x", Job)
    repo = Repository(store, "job", Job)
    for bad_id in ["", None, "\ud800"]:
        with pytest.raises(ValidationError) as info:
            repo.put(bad_id, job(1))  # type: ignore[arg-type]
        assert info.value.path == "id"
    with pytest.raises(LocalProtocolError):
        repo.put("x", Other(1, 2.0))  # type: ignore[arg-type]
    assert repo.ids() == []


def test_a_record_of_another_type_is_a_store_error_naming_its_key(store: Store) -> None:
    Repository(store, "job", Other).put("j1", Other(1, 2.0))
    jobs = Repository(store, "job", Job)
    for call in (lambda: jobs.get("j1"), jobs.list, lambda: jobs.query({"status": "x"})):
        with pytest.raises(StoreError, match="job/j1") as info:
            call()
        assert "Job" in str(info.value)
    store.put(b"job/j2", b"\xc1 not msgpack")
    with pytest.raises(StoreError, match="job/j2"):
        jobs.get("j2")


def test_singleton(store: Store) -> None:
    state = Singleton(store, "onboarding", Onboarding)
    assert state.get() is None
    state.set(Onboarding(True, Resources(4, 8)))
    assert state.get() == Onboarding(True, Resources(4, 8))
    state.set(Onboarding(False))
    assert state.get() == Onboarding(False)
    state.clear()
    assert state.get() is None
    state.clear()
    Singleton(store, "onboarding", Other).set(Other(1, 1.0))
    with pytest.raises(StoreError, match="onboarding"):
        state.get()
    with pytest.raises(LocalProtocolError):
        state.set(Other(1, 1.0))  # type: ignore[arg-type]


def test_repository_query_validates_before_reading(store: Store) -> None:
    jobs = Repository(store, "job", Job)
    with pytest.raises(ValidationError) as info:
        jobs.query({"resources.gpu": 1})
    assert info.value.path == "resources.gpu"
    with pytest.raises(ValidationError) as info:
        jobs.query(order_by="nope")
    assert info.value.path == "nope"
    with pytest.raises(ValidationError) as info:
        jobs.query(limit=-1)
    assert info.value.path == "limit"


def test_ten_thousand_records_and_a_query(store: Store) -> None:
    jobs = Repository(store, "job", Job)
    n = 10_000
    with store.batch() as b:
        for i in range(n):
            b.put(jobs.key_for(f"{i:05d}"), jobs.encode(job(i, "running" if i % 4 else "done")))
    Repository(store, "joc", Job).put("x", job(1))  # a neighbour that must not be counted
    where = {"status": "running", "resources.cpu": Range(gte=6), "name": Contains("9")}
    page = jobs.query(where, order_by="priority", desc=True, limit=10, offset=5)

    all_jobs = [job(i, "running" if i % 4 else "done") for i in range(n)]
    hits = [j for j in all_jobs if j.status == "running" and j.resources.cpu >= 6 and "9" in j.name]
    present = sorted((j for j in hits if j.priority is not None), key=lambda j: -(j.priority or 0))
    expected = present + [j for j in hits if j.priority is None]
    assert page.total == len(hits)
    assert page.items == expected[5:15]
    assert page.more
    assert len(jobs.ids()) == n
    assert jobs.query({"status": In(["done"])}).total == n // 4


# --- disk full ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a tiny tmpfs needs root to mount")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_storage_full_and_keeps_what_was_committed(tiny_disk: Path) -> None:
    s = Store.open(tiny_disk / "db")
    committed: dict[bytes, bytes] = {}

    def fill() -> None:
        for i in range(100):  # 100 x 64 KiB cannot fit in 2 MiB
            key, value = b"blob/%03d" % i, os.urandom(64 * 1024)
            s.put(key, value)
            committed[key] = value

    with pytest.raises(StorageFull):
        fill()
    assert len(committed) > 3
    with pytest.raises(StorageFull):
        s.put(b"small", b"x")
    with pytest.raises(StorageFull):
        _write_in_batch(s, b"small", b"x")
    # Reads still work and see exactly what was committed.
    assert dict(s.scan(b"blob/")) == committed
    assert s.get(b"small") is None
    with pytest.raises(StoreError):
        s.close()  # the final flush has no room either; the store is closed all the same
    assert s.closed
    subprocess.run(["mount", "-o", "remount,size=32m", str(tiny_disk)], check=True)
    with Store.open(tiny_disk / "db") as s:
        assert dict(s.scan(b"blob/")) == committed
        s.put(b"small", b"x")


def _write_in_batch(s: Store, key: bytes, value: bytes) -> None:
    with s.batch() as b:
        b.put(key, value)
