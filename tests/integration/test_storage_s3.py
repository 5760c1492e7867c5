"""S3 volumes against a real S3-compatible HTTP server (moto's server mode, IAM enforced)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from nunet.errors import (
    ClosedResourceError,
    ObjectNotFound,
    ReadOnlyVolume,
    StorageDenied,
    StorageError,
    StorageFull,
    StorageUnreachable,
    UnsafePath,
    VolumeNotFound,
)
from nunet.storage import S3Credentials, VolumeSpec, open_volume
from nunet.storage.s3 import S3Volume
from nunet.storage.staging import collect_outputs, prepare_outputs, stage_inputs

MiB = 1 << 20
S3Server = Any  # tests/conftest.py: endpoint, admin and reader (key id, secret)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spec_for(server: S3Server, bucket: str, **kw: Any) -> VolumeSpec:
    creds = kw.pop("creds", server.admin)
    return VolumeSpec(
        type="s3",
        name=kw.pop("name", "data"),
        bucket=bucket,
        endpoint_url=kw.pop("endpoint_url", server.endpoint),
        credentials=S3Credentials(*creds),
        **kw,
    )


@pytest.fixture
def bucket() -> str:
    return f"nunet-{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def make(s3_server: S3Server, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`make(bucket, **spec fields)` opens a volume that is closed after the test."""
    opened: list[Any] = []

    def _make(bucket: str, **kw: Any) -> Any:
        vol = open_volume(spec_for(s3_server, bucket, **kw), base_dir=tmp_path / "unused")
        opened.append(vol)
        return vol

    yield _make
    for vol in opened:
        await vol.close()


def raw_client(server: S3Server) -> Any:
    """A plain boto3 client to plant and inspect objects the way another party would."""
    import boto3
    import botocore.config

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=server.admin[0],
        aws_secret_access_key=server.admin[1],
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def leftovers(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(".nunet-")]


TREE = {
    "a.txt": b"alpha",
    "empty": b"",
    "sub/b.bin": bytes(range(256)) * 10,
    "sub/deeper/c.txt": b"gamma",
    "sub/unicodé ☃.txt": b"snow",
}


async def test_file_round_trip(make: Any, bucket: str, tmp_path: Path) -> None:
    vol = make(bucket)
    await vol.create()
    await vol.create()  # idempotent
    src = tmp_path / "in.txt"
    src.write_bytes(b"hello s3")
    stats = await vol.upload(src, "docs/in.txt")
    assert (stats.files, stats.bytes) == (1, 8)
    assert await vol.list() == ["docs/in.txt"]
    assert await vol.size() == 8
    stats = await vol.download("docs/in.txt", tmp_path / "out" / "got.txt")
    assert (tmp_path / "out" / "got.txt").read_bytes() == b"hello s3"
    assert (stats.files, stats.bytes) == (1, 8)
    assert leftovers(tmp_path / "out") == []
    await vol.delete()
    assert await vol.list() == []
    assert await vol.size() == 0


async def test_directory_round_trip_under_a_prefix(
    make: Any, bucket: str, tmp_path: Path, s3_server: S3Server
) -> None:
    vol = make(bucket, prefix="jobs/42")
    await vol.create()
    write_tree(tmp_path / "src", TREE)
    stats = await vol.upload(tmp_path / "src", "inputs")
    assert stats.files == len(TREE)
    assert stats.bytes == sum(len(v) for v in TREE.values())
    assert await vol.list() == sorted(f"inputs/{k}" for k in TREE)
    assert await vol.list("inputs/sub/deeper") == ["inputs/sub/deeper/c.txt"]
    keys = await asyncio.to_thread(
        lambda: [o["Key"] for o in raw_client(s3_server).list_objects_v2(Bucket=bucket)["Contents"]]
    )
    assert sorted(keys) == sorted(f"jobs/42/inputs/{k}" for k in TREE)

    await vol.download("inputs", tmp_path / "whole")
    assert read_tree(tmp_path / "whole") == TREE
    await vol.download("inputs/sub", tmp_path / "part")
    assert read_tree(tmp_path / "part") == {
        k.removeprefix("sub/"): v for k, v in TREE.items() if k.startswith("sub/")
    }
    # A prefix is a directory boundary: "inputs/su" is not a prefix of "inputs/sub/...".
    with pytest.raises(ObjectNotFound):
        await vol.download("inputs/su", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


async def test_download_merges_into_an_existing_directory(
    make: Any, bucket: str, tmp_path: Path
) -> None:
    vol = make(bucket)
    await vol.create()
    write_tree(tmp_path / "src", {"new.txt": b"new", "keep/x": b"theirs"})
    await vol.upload(tmp_path / "src")
    write_tree(tmp_path / "dest", {"old.txt": b"old", "keep/x": b"mine"})
    await vol.download("", tmp_path / "dest")
    assert read_tree(tmp_path / "dest") == {
        "old.txt": b"old",
        "new.txt": b"new",
        "keep/x": b"theirs",
    }


async def test_multipart_upload_of_a_20_mib_file(
    make: Any, bucket: str, tmp_path: Path, s3_server: S3Server
) -> None:
    vol = make(bucket)
    await vol.create()
    data = os.urandom(20 * MiB + 12345)
    (tmp_path / "big.bin").write_bytes(data)
    stats = await vol.upload(tmp_path / "big.bin", "big.bin")
    assert stats.bytes == len(data)
    head = await asyncio.to_thread(raw_client(s3_server).head_object, Bucket=bucket, Key="big.bin")
    # A multipart object's ETag is "<md5 of part md5s>-<part count>": 8 MiB parts -> 3.
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == len(data)
    await vol.download("big.bin", tmp_path / "back.bin")
    back = (tmp_path / "back.bin").read_bytes()
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()


async def test_failed_multipart_upload_is_aborted(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    # Parts under 5 MiB (except the last) make S3 refuse the completion: a real mid-upload
    # failure, after parts were stored.
    spec = spec_for(s3_server, bucket)
    async with S3Volume(
        spec,
        credentials=spec.credentials,
        region="us-east-1",
        multipart_threshold=1 * MiB,
        part_size=1 * MiB,
    ) as vol:
        await vol.create()
        (tmp_path / "f.bin").write_bytes(os.urandom(3 * MiB))
        with pytest.raises(StorageError) as info:
            await vol.upload(tmp_path / "f.bin", "f.bin")
        assert "EntityTooSmall" in str(info.value)
    client = raw_client(s3_server)
    pending = await asyncio.to_thread(client.list_multipart_uploads, Bucket=bucket)
    assert pending.get("Uploads", []) == []
    listed = await asyncio.to_thread(client.list_objects_v2, Bucket=bucket)
    assert listed.get("KeyCount", 0) == 0


async def test_missing_key(make: Any, bucket: str, tmp_path: Path) -> None:
    vol = make(bucket)
    await vol.create()
    with pytest.raises(ObjectNotFound) as info:
        await vol.download("no/such/key", tmp_path / "x")
    assert info.value.http_status == 404
    assert not (tmp_path / "x").exists()
    assert leftovers(tmp_path) == []
    # The whole (empty) volume is not missing: it is an empty directory.
    stats = await vol.download("", tmp_path / "empty")
    assert stats.files == 0
    assert os.listdir(tmp_path / "empty") == []


async def test_missing_bucket(make: Any, bucket: str, tmp_path: Path) -> None:
    vol = make(bucket)  # never created
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(VolumeNotFound):
        await vol.upload(tmp_path / "f", "f")
    with pytest.raises(VolumeNotFound):
        await vol.download("f", tmp_path / "g")
    with pytest.raises(VolumeNotFound):
        await vol.download("", tmp_path / "g")
    with pytest.raises(VolumeNotFound):
        await vol.size()
    await vol.delete()  # idempotent: nothing to delete
    assert leftovers(tmp_path) == []
    ro = make(bucket, read_only=True, name="ro")
    with pytest.raises(VolumeNotFound):
        await ro.create()  # a read-only volume is never created


async def test_wrong_credentials(
    make: Any, bucket: str, tmp_path: Path, s3_server: S3Server
) -> None:
    good = make(bucket)
    await good.create()
    (tmp_path / "f").write_bytes(b"secret")
    await good.upload(tmp_path / "f", "f")

    unknown_key = make(bucket, creds=("AKIANOSUCHKEY0000000", "whatever"))
    with pytest.raises(StorageDenied) as info:
        await unknown_key.download("f", tmp_path / "g")
    assert "InvalidAccessKeyId" in str(info.value)
    assert info.value.http_status == 403

    wrong_secret = make(bucket, creds=(s3_server.admin[0], "not-the-secret"))
    with pytest.raises(StorageDenied) as info:
        await wrong_secret.upload(tmp_path / "f", "g")
    assert "SignatureDoesNotMatch" in str(info.value)
    assert "not-the-secret" not in str(info.value)
    assert not (tmp_path / "g").exists()


async def test_permissions_are_enforced(
    make: Any, bucket: str, tmp_path: Path, s3_server: S3Server
) -> None:
    admin = make(bucket)
    await admin.create()
    (tmp_path / "f").write_bytes(b"data")
    await admin.upload(tmp_path / "f", "f")
    reader = make(bucket, creds=s3_server.reader, name="reader")
    await reader.download("f", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"data"
    with pytest.raises(StorageDenied) as info:
        await reader.upload(tmp_path / "f", "other")
    assert "AccessDenied" in str(info.value)
    with pytest.raises(StorageDenied):
        await reader.delete()
    assert await admin.list() == ["f"]


async def test_read_only_spec_refuses_writes_before_any_request(
    make: Any, bucket: str, tmp_path: Path
) -> None:
    vol = make(bucket, read_only=True)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ReadOnlyVolume):
        await vol.upload(tmp_path / "f", "f")
    with pytest.raises(ReadOnlyVolume):
        await vol.delete()


async def test_unreachable_endpoint(make: Any, bucket: str, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{closed_port()}"  # nothing listens there
    vol = make(bucket, endpoint_url=closed)
    with pytest.raises(StorageUnreachable) as info:
        await vol.download("f", tmp_path / "f")
    assert info.value.http_status == 503
    with pytest.raises(StorageUnreachable):
        await vol.create()
    assert leftovers(tmp_path) == []


async def test_key_traversal_refused(make: Any, bucket: str, tmp_path: Path) -> None:
    vol = make(bucket)
    await vol.create()
    (tmp_path / "f").write_bytes(b"x")
    for key in ("../escape", "/abs", "a/../../b", "a//b", "a/./b", "nul\x00"):
        with pytest.raises(UnsafePath):
            await vol.upload(tmp_path / "f", key)
        with pytest.raises(UnsafePath):
            await vol.download(key, tmp_path / "out")
    assert await vol.list() == []


@pytest.mark.parametrize("evil", ["vol/../escaped.txt", "vol/a//b", "vol/./c"])
async def test_hostile_object_keys_are_not_written(
    make: Any, bucket: str, tmp_path: Path, s3_server: S3Server, evil: str
) -> None:
    # Someone else's bucket may hold keys that would climb out of the destination.
    vol = make(bucket, prefix="vol")
    await vol.create()
    client = raw_client(s3_server)
    await asyncio.to_thread(client.put_object, Bucket=bucket, Key="vol/fine.txt", Body=b"ok")
    await asyncio.to_thread(client.put_object, Bucket=bucket, Key=evil, Body=b"evil")
    dest = tmp_path / "inside" / "dest"
    with pytest.raises(UnsafePath):
        await vol.download("", dest)
    assert not dest.exists()
    assert os.listdir(tmp_path / "inside") == []
    assert sorted(os.listdir(tmp_path)) == ["inside"]


async def test_single_object_volume(
    make: Any, bucket: str, tmp_path: Path, s3_server: S3Server
) -> None:
    client = raw_client(s3_server)
    admin = make(bucket)
    await admin.create()
    await asyncio.to_thread(
        client.put_object, Bucket=bucket, Key="data/input.csv", Body=b"a,b\n1,2\n"
    )
    await asyncio.to_thread(client.put_object, Bucket=bucket, Key="data/input.csv.bak", Body=b"z")
    vol = make(bucket, prefix="data/input.csv", name="csv")
    stats = await vol.download("", tmp_path / "input.csv")
    assert (tmp_path / "input.csv").read_bytes() == b"a,b\n1,2\n"
    assert stats.files == 1
    assert await vol.size() == 8  # the .bak sibling is not part of this volume


async def test_closed_volume_refuses_use(make: Any, bucket: str, tmp_path: Path) -> None:
    vol = make(bucket)
    await vol.create()
    await vol.close()
    with pytest.raises(ClosedResourceError):
        await vol.size()


async def test_stage_and_collect_round_trip(make: Any, bucket: str, tmp_path: Path) -> None:
    inputs = make(bucket, prefix="in", name="dataset", read_only=True)
    outputs = make(bucket, prefix="out", name="results")
    await make(bucket, name="setup").create()
    writer = make(bucket, prefix="in", name="writer")
    write_tree(tmp_path / "seed", TREE)
    await writer.upload(tmp_path / "seed")

    report = await stage_inputs([inputs], tmp_path / "alloc" / "inputs")
    assert report.files == len(TREE)
    assert report.bytes == sum(len(v) for v in TREE.values())
    host = Path(report.volumes[0].host_path)
    assert host == tmp_path / "alloc" / "inputs" / "dataset"
    assert read_tree(host) == TREE

    dirs = await prepare_outputs([outputs], tmp_path / "alloc" / "outputs")
    # What the task would do in its container: read the inputs, write results.
    (dirs["results"] / "sum.txt").write_text(str(len(read_tree(host))))
    (dirs["results"] / "logs").mkdir()
    (dirs["results"] / "logs" / "run.log").write_bytes(b"done\n")
    os.symlink("/etc/hostname", dirs["results"] / "sneaky")

    report = await collect_outputs(tmp_path / "alloc" / "outputs", [outputs])
    assert report.files == 2
    assert report.volumes[0].skipped == ("sneaky",)
    assert await outputs.list() == ["logs/run.log", "sum.txt"]
    await outputs.download("sum.txt", tmp_path / "sum.txt")
    assert (tmp_path / "sum.txt").read_text() == str(len(TREE))

    with pytest.raises(ReadOnlyVolume):
        await collect_outputs(tmp_path / "alloc" / "outputs", [inputs])


async def test_failed_staging_leaves_nothing(make: Any, bucket: str, tmp_path: Path) -> None:
    good = make(bucket, name="good")
    await good.create()
    (tmp_path / "f").write_bytes(b"x")
    await good.upload(tmp_path / "f", "f")
    missing = make(f"{bucket}-missing", name="missing")
    with pytest.raises(VolumeNotFound):
        await stage_inputs([good, missing], tmp_path / "stage")
    assert os.listdir(tmp_path / "stage") == []


async def test_unsigned_requests_are_refused(
    s3_server: S3Server, make: Any, bucket: str, tmp_path: Path
) -> None:
    await make(bucket).create()
    spec = VolumeSpec(type="s3", name="anon", bucket=bucket, endpoint_url=s3_server.endpoint)
    async with open_volume(spec, base_dir=tmp_path, environ={}) as anon:
        # AWS answers an unsigned request to a private bucket with 403 (StorageDenied); moto,
        # with IAM enforced, answers 500. Either way a typed error, not botocore's.
        with pytest.raises(StorageError):
            await anon.list()



async def test_download_onto_a_full_disk_leaves_nothing(
    make: Any, bucket: str, tmp_path: Path, tiny_fs: Path
) -> None:
    vol = make(bucket)
    await vol.create()
    write_tree(tmp_path / "src", {f"f{i}": os.urandom(300 * 1024) for i in range(6)})
    await vol.upload(tmp_path / "src")
    with pytest.raises(StorageFull) as info:
        await vol.download("", tiny_fs / "dest")
    assert info.value.http_status == 507
    assert os.listdir(tiny_fs) == []
    with pytest.raises(StorageFull):
        await stage_inputs([vol], tiny_fs / "stage")
    assert os.listdir(tiny_fs / "stage") == []
