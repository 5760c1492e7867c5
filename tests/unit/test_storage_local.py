"""Local volumes, volume specs and key checks, and staging with local volumes."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nunet.errors import (
    NotFound,
    ObjectNotFound,
    ReadOnlyVolume,
    StorageFull,
    UnsafePath,
    ValidationError,
    VolumeNotFound,
)
from nunet.storage import S3Credentials, VolumeSpec, open_volume, volumes_dir
from nunet.storage.files import Aborted, Staging, copy_file
from nunet.storage.local import LocalVolume
from nunet.storage.paths import join_key, split_key
from nunet.storage.staging import collect_outputs, prepare_outputs, stage_inputs

KiB = 1 << 10


def local(base: Path, name: str = "data", **kw: Any) -> LocalVolume:
    vol = open_volume(VolumeSpec(type="local", name=name, **kw), base_dir=base)
    assert isinstance(vol, LocalVolume)
    return vol


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def leftovers(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(".nunet-")]


TREE = {"a.txt": b"alpha", "empty": b"", "sub/b.bin": bytes(range(256)), "sub/deep/c": b"c"}


# --- keys, names and specs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "parts"),
    [("", ()), ("a", ("a",)), ("a/b/c.txt", ("a", "b", "c.txt")), ("dir/", ("dir",))],
)
def test_split_key_accepts_relative_keys(key: str, parts: tuple[str, ...]) -> None:
    assert split_key(key, "key") == parts


@pytest.mark.parametrize(
    "key",
    [
        "..",
        "../x",
        "a/../../x",
        "/etc/passwd",
        "a//b",
        "./a",
        "a/.",
        "nul\x00",
        "x" * 256,
        "\udcff",
    ],
)
def test_split_key_refuses_keys_that_could_escape(key: str) -> None:
    with pytest.raises(UnsafePath) as info:
        split_key(key, "volume.prefix")
    assert info.value.path == "volume.prefix"


def test_join_key_drops_empty_parts() -> None:
    assert join_key("", "a", "", "b/c") == "a/b/c"
    assert join_key("", "") == ""


def test_spec_errors_name_every_bad_field() -> None:
    spec = VolumeSpec(
        type="s3",
        name="../up",
        bucket="Bad_Bucket",
        prefix="../x",
        endpoint_url="ftp://host",
        credentials=S3Credentials("", "secret"),
    )
    paths = [e.path for e in spec.errors("allocations.a1.volume[0]")]
    assert paths == [
        "allocations.a1.volume[0].name",
        "allocations.a1.volume[0].bucket",
        "allocations.a1.volume[0].prefix",
        "allocations.a1.volume[0].endpoint_url",
        "allocations.a1.volume[0].credentials",
    ]
    assert VolumeSpec(type="s3", name="ok").errors()[0].path == "volume.bucket"
    local_with_s3_fields = VolumeSpec(type="local", name="v", bucket="b-1", prefix="p")
    assert [e.path for e in local_with_s3_fields.errors()] == ["volume.bucket", "volume.prefix"]
    assert VolumeSpec(type="s3", name="v", bucket="my.bucket-1", prefix="a/b").errors() == []


def test_spec_decodes_from_json_and_rejects_unknown_fields() -> None:
    raw = b'{"type": "s3", "name": "in", "bucket": "b-1", "read_only": true}'
    spec = msgspec.json.decode(raw, type=VolumeSpec)
    assert spec.read_only
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type": "s3", "name": "in", "buckit": "b"}', type=VolumeSpec)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type": "nfs", "name": "in"}', type=VolumeSpec)


def test_secret_never_in_repr() -> None:
    spec = VolumeSpec(
        type="s3", name="v", bucket="b-1", credentials=S3Credentials("AKIA1", "topsecret")
    )
    assert "topsecret" not in repr(spec)
    assert "AKIA1" in repr(spec)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs", "", ".hidden", "x" * 129, "a b"])
def test_open_volume_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePath) as info:
        open_volume(VolumeSpec(type="local", name=name), base_dir=tmp_path)
    assert info.value.path == "volume.name"
    assert os.listdir(tmp_path) == []


def test_volumes_dir_checks_the_deployment(tmp_path: Path) -> None:
    assert volumes_dir(tmp_path, "dep-1") == tmp_path / "volumes" / "dep-1"
    with pytest.raises(UnsafePath):
        volumes_dir(tmp_path, "../other")


def test_s3_credentials_from_spec_then_environment(tmp_path: Path) -> None:
    spec = VolumeSpec(type="s3", name="v", bucket="b-1")
    env = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_REGION": "eu-west-1"}
    vol: Any = open_volume(spec, base_dir=tmp_path, environ=env)
    assert vol._credentials == S3Credentials("AK", "SK")
    assert vol._region == "eu-west-1"
    own = msgspec.structs.replace(spec, credentials=S3Credentials("mine", "x"))
    mine: Any = open_volume(own, base_dir=tmp_path, environ=env)
    assert mine._credentials.access_key_id == "mine"
    anonymous: Any = open_volume(spec, base_dir=tmp_path, environ={})
    assert anonymous._credentials is None
    with pytest.raises(ValidationError) as info:
        open_volume(spec, base_dir=tmp_path, environ={"AWS_ACCESS_KEY_ID": "AK"})
    assert info.value.path == "volume.credentials"


# --- local volumes: the good paths ------------------------------------------------------------


async def test_file_and_tree_round_trip(tmp_path: Path) -> None:
    base = tmp_path / "work" / "volumes" / "dep"
    async with local(base) as vol:
        await vol.create()
        await vol.create()  # idempotent
        assert vol.root == base / "data"
        write_tree(tmp_path / "src", TREE)
        stats = await vol.upload(tmp_path / "src", "in")
        assert (stats.files, stats.bytes) == (len(TREE), sum(map(len, TREE.values())))
        assert await vol.list() == sorted(f"in/{k}" for k in TREE)
        assert await vol.list("in/sub") == ["in/sub/b.bin", "in/sub/deep/c"]
        assert await vol.list("in/a.txt") == ["in/a.txt"]
        assert await vol.list("nothing/here") == []
        assert await vol.size() == sum(map(len, TREE.values()))

        stats = await vol.upload(tmp_path / "src" / "a.txt", "single/copy.txt")
        assert stats.files == 1
        await vol.download("single/copy.txt", tmp_path / "out" / "x.txt")
        assert (tmp_path / "out" / "x.txt").read_bytes() == b"alpha"

        await vol.download("in", tmp_path / "tree")
        assert read_tree(tmp_path / "tree") == TREE
        await vol.download("", tmp_path / "all")
        assert set(read_tree(tmp_path / "all")) == {f"in/{k}" for k in TREE} | {"single/copy.txt"}
        assert leftovers(tmp_path) == []
        assert leftovers(base) == []


async def test_upload_overwrites_and_merges(tmp_path: Path) -> None:
    vol = local(tmp_path / "base")
    await vol.create()
    write_tree(tmp_path / "v1", {"keep": b"1", "change": b"old"})
    write_tree(tmp_path / "v2", {"change": b"new", "add/x": b"x"})
    await vol.upload(tmp_path / "v1")
    await vol.upload(tmp_path / "v2")
    await vol.download("", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {"keep": b"1", "change": b"new", "add/x": b"x"}


async def test_empty_volume_downloads_as_an_empty_directory(tmp_path: Path) -> None:
    vol = local(tmp_path / "base")
    await vol.create()
    stats = await vol.download("", tmp_path / "out")
    assert stats.files == 0
    assert os.listdir(tmp_path / "out") == []


async def test_delete_is_idempotent_and_complete(tmp_path: Path) -> None:
    vol = local(tmp_path / "base")
    await vol.create()
    write_tree(tmp_path / "src", TREE)
    await vol.upload(tmp_path / "src")
    await vol.delete()
    assert os.listdir(tmp_path / "base") == []
    await vol.delete()
    with pytest.raises(VolumeNotFound):
        await vol.size()
    await vol.create()
    assert await vol.size() == 0


# --- local volumes: the bad paths -------------------------------------------------------------


async def test_missing_volume_and_missing_key(tmp_path: Path) -> None:
    vol = local(tmp_path / "base")
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(VolumeNotFound):
        await vol.upload(tmp_path / "f", "f")
    with pytest.raises(VolumeNotFound):
        await vol.download("", tmp_path / "out")
    await vol.create()
    with pytest.raises(ObjectNotFound) as info:
        await vol.download("no/such", tmp_path / "out")
    assert info.value.http_status == 404
    assert not (tmp_path / "out").exists()
    with pytest.raises(NotFound):
        await vol.upload(tmp_path / "does-not-exist", "x")
    with pytest.raises(ValidationError):
        await vol.upload(tmp_path / "f")  # a file needs a key


@pytest.mark.parametrize("key", ["../escape", "/tmp/abs", "a/../../b", "a//b", "nul\x00"])
async def test_key_traversal_refused(tmp_path: Path, key: str) -> None:
    vol = local(tmp_path / "base" / "dep")
    await vol.create()
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(UnsafePath):
        await vol.upload(tmp_path / "f", key)
    with pytest.raises(UnsafePath):
        await vol.download(key, tmp_path / "out")
    with pytest.raises(UnsafePath):
        await vol.list(key)
    assert sorted(os.listdir(tmp_path)) == ["base", "f"]
    assert os.listdir(tmp_path / "base" / "dep") == ["data"]
    assert os.listdir(vol.root) == []


async def test_symlinks_inside_a_volume_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host secret")
    vol = local(tmp_path / "base")
    await vol.create()
    os.symlink(outside, vol.root / "dirlink")
    os.symlink(outside / "secret", vol.root / "filelink")
    (tmp_path / "f").write_bytes(b"payload")

    with pytest.raises(UnsafePath):
        await vol.upload(tmp_path / "f", "dirlink/planted")
    assert os.listdir(outside) == ["secret"]
    with pytest.raises(UnsafePath):
        await vol.download("dirlink", tmp_path / "d1")
    with pytest.raises(UnsafePath):
        await vol.download("filelink", tmp_path / "d2")
    with pytest.raises(UnsafePath):
        await vol.list("dirlink")
    assert not (tmp_path / "d1").exists()
    assert not (tmp_path / "d2").exists()
    # A whole-volume download skips them and says so; size does not count their targets.
    stats = await vol.download("", tmp_path / "all")
    assert stats.skipped == ("dirlink", "filelink")
    assert os.listdir(tmp_path / "all") == []
    assert await vol.size() == 0
    assert (outside / "secret").read_bytes() == b"host secret"


async def test_symlinked_volume_directory_refused(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "base" / "data")
    vol = local(tmp_path / "base")
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(UnsafePath):
        await vol.upload(tmp_path / "f", "f")
    with pytest.raises(UnsafePath):
        await vol.create()
    with pytest.raises(UnsafePath):
        await vol.delete()
    assert os.listdir(tmp_path / "elsewhere") == []


async def test_untrusted_source_tree(tmp_path: Path) -> None:
    # What a container may leave in its output directory: symlinks to host files, a FIFO
    # (reading it would hang). Only regular files are copied.
    (tmp_path / "host-secret").write_bytes(b"do not copy")
    src = tmp_path / "src"
    write_tree(src, {"ok.txt": b"ok", "sub/also.txt": b"also"})
    os.symlink(tmp_path / "host-secret", src / "link")
    os.symlink(tmp_path, src / "sub" / "dirlink")
    os.mkfifo(src / "fifo")
    vol = local(tmp_path / "base")
    await vol.create()
    stats = await vol.upload(src)
    assert stats.files == 2
    assert stats.skipped == ("fifo", "link", "sub/dirlink")
    assert await vol.list() == ["ok.txt", "sub/also.txt"]
    os.symlink(tmp_path / "host-secret", tmp_path / "rootlink")
    with pytest.raises(UnsafePath):
        await vol.upload(tmp_path / "rootlink", "x")
    with pytest.raises(ValidationError):
        await vol.upload(src / "fifo", "x")


async def test_download_does_not_write_through_symlinks_at_the_destination(
    tmp_path: Path,
) -> None:
    vol = local(tmp_path / "base")
    await vol.create()
    write_tree(tmp_path / "src", {"sub/x": b"x", "top": b"t"})
    await vol.upload(tmp_path / "src")
    target = tmp_path / "victim"
    target.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(target, dest / "sub")
    with pytest.raises(UnsafePath):
        await vol.download("", dest)
    assert os.listdir(target) == []
    assert sorted(os.listdir(dest)) == ["sub"]  # "top" did not move in either
    assert leftovers(tmp_path) == []


async def test_file_directory_conflicts_move_nothing(tmp_path: Path) -> None:
    vol = local(tmp_path / "base")
    await vol.create()
    write_tree(tmp_path / "src", {"a": b"file", "b/x": b"x"})
    await vol.upload(tmp_path / "src")
    write_tree(tmp_path / "clash", {"a/inner": b"wants a dir", "c": b"new"})
    with pytest.raises(ValidationError):
        await vol.upload(tmp_path / "clash")
    assert await vol.list() == ["a", "b/x"]  # "c" was not merged either
    with pytest.raises(ValidationError):
        await vol.upload(tmp_path / "src" / "a", "b")  # a file where a directory is
    with pytest.raises(ValidationError):
        await vol.upload(tmp_path / "src" / "a", "a/below")  # below a file
    assert leftovers(tmp_path / "base") == []


async def test_read_only_volume(tmp_path: Path) -> None:
    ro = local(tmp_path / "base", read_only=True)
    with pytest.raises(VolumeNotFound):
        await ro.create()  # a read-only volume must already exist
    assert not (tmp_path / "base").exists()
    await local(tmp_path / "base").create()
    await ro.create()
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ReadOnlyVolume):
        await ro.upload(tmp_path / "f", "f")
    with pytest.raises(ReadOnlyVolume):
        await ro.delete()
    assert await ro.list() == []


def test_copy_stops_when_aborted(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"x" * 10)
    abort = threading.Event()
    abort.set()
    with pytest.raises(Aborted):
        copy_file(tmp_path / "src", tmp_path / "dst", abort, durable=False)
    staging = Staging(tmp_path)
    staging.path_for(("a", "b")).write_bytes(b"partial")
    staging.cleanup()
    assert sorted(os.listdir(tmp_path)) == ["dst", "src"]


# --- disk full --------------------------------------------------------------------------------



def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


async def test_upload_onto_a_full_disk_leaves_nothing(tiny_fs: Path, tmp_path: Path) -> None:
    base = tiny_fs / "volumes" / "dep"
    vol = local(base)
    await vol.create()
    before = used_bytes(tiny_fs)
    (tmp_path / "big").write_bytes(os.urandom(2048 * KiB))
    with pytest.raises(StorageFull) as info:
        await vol.upload(tmp_path / "big", "big")
    assert info.value.http_status == 507
    # Several files that fit one by one but not together: the first ones are not kept.
    write_tree(tmp_path / "many", {f"f{i}": os.urandom(300 * KiB) for i in range(5)})
    with pytest.raises(StorageFull):
        await vol.upload(tmp_path / "many", "many")
    assert await vol.list() == []
    assert os.listdir(base) == ["data"]
    assert used_bytes(tiny_fs) == before
    (tmp_path / "small").write_bytes(b"fits")
    await vol.upload(tmp_path / "small", "small")  # the space came back
    assert await vol.list() == ["small"]


async def test_download_onto_a_full_disk_leaves_nothing(tiny_fs: Path, tmp_path: Path) -> None:
    vol = local(tmp_path / "base")
    await vol.create()
    write_tree(tmp_path / "src", {f"f{i}": os.urandom(300 * KiB) for i in range(5)})
    await vol.upload(tmp_path / "src")
    with pytest.raises(StorageFull):
        await vol.download("", tiny_fs / "dest")
    with pytest.raises(StorageFull):
        await stage_inputs([vol], tiny_fs / "stage")
    assert sorted(os.listdir(tiny_fs)) == ["stage"]
    assert os.listdir(tiny_fs / "stage") == []


# --- staging ----------------------------------------------------------------------------------


async def test_stage_and_collect_with_local_volumes(tmp_path: Path) -> None:
    base = tmp_path / "work" / "volumes" / "dep"
    inputs = local(base, "inputs", read_only=True)
    outputs = local(base, "outputs")
    seed = local(base, "inputs")
    await seed.create()
    write_tree(tmp_path / "seed", TREE)
    await seed.upload(tmp_path / "seed")
    await outputs.create()

    alloc = tmp_path / "alloc"
    (alloc / "in" / "inputs").mkdir(parents=True)
    (alloc / "in" / "inputs" / "stale").write_bytes(b"from an earlier attempt")
    report = await stage_inputs([inputs], alloc / "in")
    assert report.files == len(TREE)
    assert report.bytes == sum(map(len, TREE.values()))
    assert read_tree(alloc / "in" / "inputs") == TREE  # the stale file is gone

    dirs = await prepare_outputs([outputs], alloc / "out")
    assert dirs == {"outputs": alloc / "out" / "outputs"}
    (dirs["outputs"] / "result.txt").write_bytes(b"42")
    report = await collect_outputs(alloc / "out", [outputs])
    assert (report.files, report.bytes) == (1, 2)
    assert await outputs.list() == ["result.txt"]

    shutil.rmtree(alloc / "out" / "outputs")  # a task that wrote nothing
    report = await collect_outputs(alloc / "out", [outputs])
    assert report.files == 0

    with pytest.raises(ReadOnlyVolume):
        await collect_outputs(alloc / "out", [outputs, inputs])
    with pytest.raises(ValidationError):
        await stage_inputs([inputs, inputs], alloc / "in")


async def test_failed_staging_removes_what_it_staged(tmp_path: Path) -> None:
    base = tmp_path / "base"
    good = local(base, "good")
    await good.create()
    (tmp_path / "f").write_bytes(b"x")
    await good.upload(tmp_path / "f", "f")
    missing = local(base, "missing")
    with pytest.raises(VolumeNotFound):
        await stage_inputs([good, missing], tmp_path / "stage")
    assert os.listdir(tmp_path / "stage") == []


async def test_cancelled_upload_leaves_nothing(tmp_path: Path) -> None:
    vol = local(tmp_path / "base")
    await vol.create()
    write_tree(tmp_path / "src", {f"f{i}": os.urandom(64 * KiB) for i in range(200)})
    task = asyncio.create_task(vol.upload(tmp_path / "src"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker thread notices the abort at its next file; wait for it to clean up.
    for _ in range(1000):
        if not leftovers(tmp_path / "base"):
            break
        await asyncio.sleep(0.01)
    assert leftovers(tmp_path / "base") == []
    files = await vol.list()
    assert files in ([], sorted(f"f{i}" for i in range(200)))  # all or nothing
