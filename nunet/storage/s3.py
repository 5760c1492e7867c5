"""An S3 volume: a bucket and key prefix on AWS or any S3-compatible server (aiobotocore).

One aiobotocore session and client per volume, opened on first use and closed by `close()` (use
the volume as an async context manager). Connects time out fast and retries are bounded, so an
unreachable endpoint fails in seconds. Files above `multipart_threshold` go up in parts, several
at a time; a failed or cancelled multipart upload is aborted so no parts linger. At most
`concurrency` requests carry a body at once, which bounds memory to `concurrency * part_size`.
Object keys from a listing are untrusted and checked like user keys before a byte is written.
Every botocore, aiohttp and OS error is translated into a `NunetError` here.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from nunet.errors import (
    ClosedResourceError,
    NunetError,
    ObjectNotFound,
    ReadOnlyVolume,
    StorageDenied,
    StorageError,
    StorageUnreachable,
    UnsafePath,
    ValidationError,
    VolumeNotFound,
)
from nunet.storage.api import S3Credentials, TransferStats, VolumeBase, VolumeSpec
from nunet.storage.files import (
    SourceFile,
    Staging,
    commit_file,
    commit_tree,
    open_source,
    run_blocking,
    scan_source,
    translated,
)
from nunet.storage.paths import join_key, split_key

MULTIPART_THRESHOLD = 8 << 20
PART_SIZE = 8 << 20
MAX_PARTS = 10_000  # S3's limit per multipart upload
_READ_CHUNK = 1 << 20
_DENIED = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)

T = TypeVar("T")


class S3Volume(VolumeBase):
    def __init__(
        self,
        spec: VolumeSpec,
        *,
        credentials: S3Credentials | None,
        region: str,
        connect_timeout: float = 3.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        concurrency: int = 8,
    ) -> None:
        if spec.bucket is None:
            raise ValidationError("required for s3 volumes", path="volume.bucket")
        self._spec = spec
        self._bucket = spec.bucket
        self._prefix = join_key(*split_key(spec.prefix, "volume.prefix"))
        self._credentials = credentials
        self._region = region
        self._timeouts = (connect_timeout, read_timeout, max_attempts)
        self._threshold = multipart_threshold
        self._part_size = part_size
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        self._client = None
        with self._errors("close"):
            await self._stack.aclose()

    # --- the Volume interface -----------------------------------------------------------------

    async def create(self) -> None:
        client = await self._s3()
        try:
            with self._errors("create"):
                await client.head_bucket(Bucket=self._bucket)
            return
        except VolumeNotFound:
            if self._spec.read_only:
                raise
        extra: dict[str, Any] = {}
        if self._region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            with self._errors("create"):
                await client.create_bucket(Bucket=self._bucket, **extra)
        except StorageError as exc:
            # Lost a race with another creator of the same bucket: it exists, which is the goal.
            if "BucketAlreadyOwnedByYou" not in exc.message:
                raise

    async def upload(self, local_path: Path, key_or_prefix: str = "") -> TransferStats:
        self._writable()
        dest = join_key(self._prefix, *split_key(key_or_prefix, "key"))
        files, skipped = await run_blocking(scan_source, Path(local_path))
        if files and files[0].key == "" and not dest:
            raise ValidationError("uploading a file needs a key", path="key")
        await self._s3()
        jobs = [partial(self._put_file, f, join_key(dest, f.key)) for f in files]
        sizes = await _run_bounded(jobs, self._concurrency)
        return TransferStats(len(files), sum(sizes), tuple(skipped))

    async def download(self, key_or_prefix: str, local_path: Path) -> TransferStats:
        parts = split_key(key_or_prefix, "key")
        full = join_key(self._prefix, *parts)
        local_path = Path(local_path)
        await self._s3()
        staging = await asyncio.to_thread(_make_staging, local_path)
        try:
            out = staging.root / "out"
            if full:
                size = await self._get_object(full, out, missing_ok=True)
                if size is not None:
                    await asyncio.to_thread(_commit, commit_file, out, local_path)
                    return TransferStats(1, size)
            objects = _relative(await self._list_below(full), full)
            if not objects and parts:
                raise ObjectNotFound(f"s3://{self._bucket}/{full} does not exist", path="key")
            jobs = [
                partial(self._get_object, key, out.joinpath(*rel), missing_ok=False)
                for key, rel in objects
            ]
            sizes = await _run_bounded(jobs, self._concurrency)
            await asyncio.to_thread(_commit, commit_tree, out, local_path)
            return TransferStats(len(objects), sum(s or 0 for s in sizes))
        finally:
            await asyncio.shield(asyncio.to_thread(staging.cleanup))

    async def size(self) -> int:
        return sum(size for _, size in await self._list_scope(self._prefix))

    async def delete(self) -> None:
        self._writable()
        try:
            keys = [key for key, _ in await self._list_scope(self._prefix)]
        except VolumeNotFound:
            return
        client = await self._s3()
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            with self._errors("delete"):
                reply = await client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True}
                )
            for error in reply.get("Errors", []):
                code, key = error.get("Code", ""), error.get("Key", "")
                target = f"s3://{self._bucket}/{key}"
                if code in _DENIED:
                    raise StorageDenied(f"delete {target}: {code}")
                raise StorageError(f"delete {target}: {code}: {error.get('Message', '')}")

    async def list(self, prefix: str = "") -> builtins.list[str]:
        full = join_key(self._prefix, *split_key(prefix, "prefix"))
        cut = len(self._prefix) + 1 if self._prefix else 0
        return sorted(key[cut:] for key, _ in await self._list_scope(full))

    # --- requests -----------------------------------------------------------------------------

    async def _s3(self) -> Any:
        if self._closed:
            raise ClosedResourceError(f"volume {self.name!r} is closed")
        async with self._opening:
            if self._client is None:
                self._client = await self._open_client()
        return self._client

    async def _open_client(self) -> Any:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import AioSession
        from botocore import UNSIGNED

        connect_timeout, read_timeout, max_attempts = self._timeouts
        options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": {"total_max_attempts": max_attempts, "mode": "standard"},
            "max_pool_connections": self._concurrency,
            # Checksums only where the API demands them: many S3-compatible servers reject
            # the newer default trailing checksums.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "warm_up_loader_caches": True,  # botocore's JSON models load in a thread
        }
        if self._spec.endpoint_url is not None:
            options["s3"] = {"addressing_style": "path"}
        creds = self._credentials
        if creds is None:
            options["signature_version"] = UNSIGNED
        with self._errors("connect"):
            context = AioSession().create_client(
                "s3",
                region_name=self._region,
                endpoint_url=self._spec.endpoint_url,
                aws_access_key_id=creds.access_key_id if creds else None,
                aws_secret_access_key=creds.secret_access_key if creds else None,
                aws_session_token=creds.session_token if creds else None,
                config=AioConfig(**options),
            )
            return await self._stack.enter_async_context(context)

    async def _put_file(self, f: SourceFile, key: str) -> int:
        client = await self._s3()
        if f.size > self._threshold:
            return await self._put_multipart(f, key)
        async with self._slots:
            data = await run_blocking(_read_whole, f.path)
            with self._errors("upload", key):
                await client.put_object(Bucket=self._bucket, Key=key, Body=data)
        return len(data)

    async def _put_multipart(self, f: SourceFile, key: str) -> int:
        client = await self._s3()
        with translated(str(f.path)):
            fd = await asyncio.to_thread(open_source, f.path)
        try:
            size = os.fstat(fd).st_size
            part_size = max(self._part_size, math.ceil(size / MAX_PARTS))
            with self._errors("upload", key):
                reply = await client.create_multipart_upload(Bucket=self._bucket, Key=key)
            upload_id = reply["UploadId"]

            async def put_part(number: int) -> dict[str, Any]:
                offset = (number - 1) * part_size
                async with self._slots:
                    with translated(str(f.path)):
                        data = await _settled(os.pread, fd, part_size, offset)
                    with self._errors("upload", key):
                        done = await client.upload_part(
                            Bucket=self._bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=data,
                        )
                return {"ETag": done["ETag"], "PartNumber": number}

            try:
                count = max(1, math.ceil(size / part_size))
                jobs = [partial(put_part, n) for n in range(1, count + 1)]
                parts = await _run_bounded(jobs, 4)
                with self._errors("upload", key):
                    await client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
            except BaseException:
                # Parts of an unfinished upload are stored (and billed) until aborted.
                abort = client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(abort)
                raise
            return size
        finally:
            os.close(fd)

    async def _get_object(self, key: str, dest: Path, *, missing_ok: bool) -> int | None:
        """Stream one object into the new file `dest`; None when it is missing and
        `missing_ok`."""
        client = await self._s3()
        async with self._slots:
            try:
                with self._errors("download", key):
                    reply = await client.get_object(Bucket=self._bucket, Key=key)
            except ObjectNotFound:
                if missing_ok:
                    return None
                raise
            with translated(str(dest)):
                fd = await asyncio.to_thread(_create_file, dest)
            total = 0
            try:
                async with reply["Body"] as body:
                    while True:
                        with self._errors("download", key):
                            chunk = await body.read(_READ_CHUNK)
                        if not chunk:
                            break
                        with translated(str(dest)):
                            await _settled(_write_all, fd, chunk)
                        total += len(chunk)
            finally:
                os.close(fd)
            return total

    async def _list_below(self, key: str) -> builtins.list[tuple[str, int]]:
        """(key, size) of every object strictly below the directory `key`."""
        client = await self._s3()
        found: list[tuple[str, int]] = []
        with self._errors("list", key):
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=f"{key}/" if key else ""
            )
            async for page in pages:
                found.extend((o["Key"], int(o["Size"])) for o in page.get("Contents", ()))
        return found

    async def _list_scope(self, key: str) -> builtins.list[tuple[str, int]]:
        """The objects below `key` and the object named `key` itself, if any."""
        below = await self._list_below(key)
        if not key:
            return below
        client = await self._s3()
        with self._errors("list", key):
            reply = await client.list_objects_v2(Bucket=self._bucket, Prefix=key, MaxKeys=1)
        exact = [(o["Key"], int(o["Size"])) for o in reply.get("Contents", ()) if o["Key"] == key]
        return exact + below

    # --- errors -------------------------------------------------------------------------------

    def _writable(self) -> None:
        if self._spec.read_only:
            raise ReadOnlyVolume(f"volume {self.name!r} is read-only")

    @contextlib.contextmanager
    def _errors(self, op: str, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except NunetError:
            raise
        except Exception as exc:
            error = self._translate(exc, op, key)
            if error is None:
                raise
            raise error from exc

    def _translate(self, exc: Exception, op: str, key: str | None) -> NunetError | None:
        import aiohttp
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        target = f"s3://{self._bucket}/{key}" if key is not None else f"s3://{self._bucket}"
        endpoint = self._spec.endpoint_url or "AWS S3"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            text = error.get("Message") or code
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (key is None and code in ("404", "NotFound")):
                return VolumeNotFound(f"bucket {self._bucket!r} does not exist at {endpoint}")
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(f"{target} does not exist", path="key")
            if code in _DENIED or status == 403:
                return StorageDenied(f"{op} {target}: {code}: {text}")
            if code == "InvalidBucketName":
                return ValidationError(f"{text}", path="volume.bucket")
            return StorageError(f"{op} {target}: {code}: {text}")
        if isinstance(exc, ConnectionError | ConnectionClosedError | ReadTimeoutError):
            return StorageUnreachable(f"{op} {target}: {endpoint} did not answer: {exc}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageDenied(f"{op} {target}: {exc}")
        if isinstance(exc, BotoCoreError):
            return StorageError(f"{op} {target}: {exc}")
        if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
            return StorageUnreachable(f"{op} {target}: {endpoint}: {exc}")
        return None


async def _run_bounded(jobs: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run `jobs` at most `limit` at a time; the first failure cancels the rest and is raised
    as itself (not an ExceptionGroup)."""
    results: list[T | None] = [None] * len(jobs)
    queue = iter(enumerate(jobs))

    async def worker() -> None:
        for i, job in queue:
            results[i] = await job()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(limit, len(jobs))):
                group.create_task(worker())
    except BaseExceptionGroup as eg:
        raise _first(eg) from None
    return cast(list[T], results)  # every slot was filled


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def _settled(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a thread, awaited to its end even when the caller is cancelled: it uses
    a file descriptor that the caller closes next, and a close under a running read or write
    could let the descriptor's number be reused by another file first."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


def _relative(objects: list[tuple[str, int]], under: str) -> list[tuple[str, tuple[str, ...]]]:
    """(key, relative parts) for each object below `under`, refusing keys that would escape
    and keys that are both a file and a directory; `.../` directory markers are skipped."""
    cut = len(under) + 1 if under else 0
    out: list[tuple[str, tuple[str, ...]]] = []
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for key, _ in objects:
        rel = key[cut:]
        if not rel or rel.endswith("/"):
            continue
        try:
            parts = split_key(rel, "key")
        except UnsafePath as exc:
            raise UnsafePath(f"object key {key!r} cannot be a file name: {exc.message}") from None
        files.add(parts)
        dirs.update(parts[:i] for i in range(1, len(parts)))
        out.append((key, parts))
    clash = files & dirs
    if clash:
        name = "/".join(sorted(clash)[0])
        raise StorageError(f"{name!r} is both an object and a prefix: not a file and a directory")
    return out


def _make_staging(local_path: Path) -> Staging:
    with translated(str(local_path)):
        local_path.parent.mkdir(parents=True, exist_ok=True)
        return Staging(local_path.parent)


def _commit(commit: Callable[[Path, Path], None], src: Path, dest: Path) -> None:
    if not os.path.lexists(src):  # an empty prefix: an empty directory
        with translated(str(dest)):
            os.mkdir(src)
    with translated(str(dest)):
        commit(src, dest)


def _read_whole(path: Path, abort: threading.Event) -> bytes:
    with translated(str(path)):
        fd = open_source(path)
        try:
            chunks = []
            while chunk := os.read(fd, _READ_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


def _create_file(dest: Path) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
