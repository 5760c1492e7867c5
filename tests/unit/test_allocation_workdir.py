"""An allocation's files: bounded logs whose offsets stay valid, and results read from
untrusted directories without ever leaving them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nunet.errors import NotFound, UnsafePath
from nunet.jobs.workdir import (
    MAX_CHUNK,
    LogFiles,
    allocation_dir,
    list_results,
    read_result,
    remove_tree,
)


def test_logs_are_split_by_stream_and_capped(tmp_path: Path) -> None:
    logs = LogFiles(tmp_path / "logs", max_bytes=20)
    logs.write("stdout", b"0123456789\n")
    logs.write("stderr", b"oops\n")
    logs.write("stdout", b"abcdefghij\n")  # "both" reaches its cap here
    logs.write("stdout", b"more\n")
    logs.close()
    both, size = logs.read("both", 0, 1000)
    assert both.startswith(b"0123456789\noops\nabcd")
    assert both.endswith(b"[nunet: log truncated at 20 bytes]\n")
    assert size == len(both)
    out, _ = logs.read("stdout", 0, 1000)
    assert out.startswith(b"0123456789\nabcdefghi")
    assert b"more" not in out
    assert logs.read("stderr", 0, 1000)[0] == b"oops\n"
    assert logs.read("stderr", 2, 2)[0] == b"ps"
    assert logs.read("stderr", 99, 10)[0] == b""
    # A new LogFiles over the same directory (a provider restart) sees the same sizes.
    again = LogFiles(tmp_path / "logs", max_bytes=20)
    assert again.sizes() == logs.sizes()


def test_truncate_drops_what_a_readopted_container_replays(tmp_path: Path) -> None:
    logs = LogFiles(tmp_path / "logs", max_bytes=1 << 20)
    logs.write("stdout", b"first run\n")
    base = logs.sizes()
    logs.write("stdout", b"second run\n")
    logs.write("stderr", b"err\n")
    logs.truncate(base)
    logs.write("stdout", b"second run\n")
    logs.close()
    assert logs.read("both", 0, 100)[0] == b"first run\nsecond run\n"
    assert logs.read("stderr", 0, 100)[0] == b""


def test_reads_are_bounded(tmp_path: Path) -> None:
    logs = LogFiles(tmp_path / "logs", max_bytes=4 << 20)
    logs.write("stdout", b"x" * (MAX_CHUNK + 10))
    logs.close()
    data, size = logs.read("stdout", 0, 10 << 20)
    assert (len(data), size) == (MAX_CHUNK, MAX_CHUNK + 10)


def test_results_never_leave_their_roots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "r.txt").write_bytes(b"result")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_bytes(b"host secret")
    os.symlink(tmp_path / "secret", out / "a" / "hop")  # a directory symlink on the way
    os.symlink(tmp_path / "secret" / "key", out / "direct")
    os.mkfifo(out / "pipe")
    roots = {"out": out}
    files, next_offset, complete = list_results(roots, 0)
    assert (files, next_offset, complete) == (("out/a/b/r.txt",), 1, True)
    assert read_result(roots, "out/a/b/r.txt", 2, 100) == (b"sult", 6, True)
    for key in ("out/a/hop/key", "out/direct", "out/../secret/key", "/etc/passwd", "out/pipe",
                "out/a/./b/r.txt"):
        with pytest.raises(UnsafePath):
            read_result(roots, key, 0, 100)
    for key in ("out/none", "elsewhere/r.txt", "out", "out/a/b/r.txt/x"):
        with pytest.raises(NotFound):
            read_result(roots, key, 0, 100)


def test_bad_names_and_removal(tmp_path: Path) -> None:
    with pytest.raises(UnsafePath):
        allocation_dir(tmp_path, "../up", "a")
    with pytest.raises(UnsafePath):
        allocation_dir(tmp_path, "dep", "a/b")
    target = allocation_dir(tmp_path, "dep", "a")
    target.mkdir(parents=True)
    (target / "f").write_text("x")
    remove_tree(tmp_path / "allocations" / "dep")
    assert not (tmp_path / "allocations" / "dep").exists()
    remove_tree(tmp_path / "allocations" / "dep")  # gone already: no error
