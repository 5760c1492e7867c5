"""The volume interface: what a job's data lives in, whatever the backend.

A volume is a tree of files addressed by keys (`paths.split_key`). `upload` copies a local file or
directory tree into it, `download` copies a key (one file) or a prefix (a tree) out of it. The
backends are `local.LocalVolume` (a directory under the node's work dir) and `s3.S3Volume` (a
bucket and prefix on any S3-compatible server). Every failure is a `NunetError`: the backends
translate their OS and botocore errors at the boundary.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self
from urllib.parse import urlsplit

import msgspec

from nunet.errors import UnsafePath, ValidationError
from nunet.storage.paths import check_name, split_key

_BUCKET_RE_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


class S3Credentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        # Specs get logged and echoed in errors; the secret must never be.
        return f"S3Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


class VolumeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a volume lives. `prefix` is the volume's root inside the bucket; it may also name
    a single object, which then downloads as one file."""

    type: Literal["local", "s3"]
    name: str
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    credentials: S3Credentials | None = None
    read_only: bool = False

    def errors(self, path: str = "volume") -> builtins.list[ValidationError]:
        """Every rule this spec breaks, each naming its field under `path`."""
        out: list[ValidationError] = []
        try:
            check_name(self.name, f"{path}.name")
        except UnsafePath as exc:
            out.append(exc)
        if self.type == "local":
            for field in ("bucket", "endpoint_url", "region", "credentials"):
                if getattr(self, field) is not None:
                    out.append(ValidationError("only for s3 volumes", path=f"{path}.{field}"))
            if self.prefix:
                out.append(ValidationError("only for s3 volumes", path=f"{path}.prefix"))
            return out
        if self.bucket is None:
            out.append(ValidationError("required for s3 volumes", path=f"{path}.bucket"))
        elif not _valid_bucket(self.bucket):
            out.append(
                ValidationError(
                    "expected 3-63 of [a-z0-9.-], starting and ending with a letter or digit, "
                    f"got {self.bucket!r}",
                    path=f"{path}.bucket",
                )
            )
        try:
            split_key(self.prefix, f"{path}.prefix")
        except UnsafePath as exc:
            out.append(exc)
        if self.endpoint_url is not None:
            url = urlsplit(self.endpoint_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                out.append(
                    ValidationError(
                        f"expected an http(s) URL, got {self.endpoint_url!r}",
                        path=f"{path}.endpoint_url",
                    )
                )
        creds = self.credentials
        if creds is not None and not (creds.access_key_id and creds.secret_access_key):
            out.append(
                ValidationError(
                    "access_key_id and secret_access_key must both be set",
                    path=f"{path}.credentials",
                )
            )
        return out


class TransferStats(msgspec.Struct, frozen=True):
    """What one upload or download moved. `skipped` names the entries that were not copied
    (symlinks, FIFOs, devices, names that are not UTF-8): they are never followed or read."""

    files: int = 0
    bytes: int = 0
    skipped: tuple[str, ...] = ()


class Volume(Protocol):
    """A volume; use it as an async context manager (S3 holds a client session)."""

    @property
    def spec(self) -> VolumeSpec: ...

    @property
    def name(self) -> str: ...

    async def create(self) -> None:
        """Make the volume exist (a read-only one must exist already: `VolumeNotFound`)."""

    async def upload(self, local_path: Path, key_or_prefix: str = "") -> TransferStats:
        """Copy a file to `key_or_prefix`, or a directory tree below it (merging, overwriting)."""
        ...

    async def download(self, key_or_prefix: str, local_path: Path) -> TransferStats:
        """Copy one file, or the tree below a prefix, to `local_path` (`""`: the whole volume).
        On failure nothing is left at `local_path` that was not there before."""
        ...

    async def size(self) -> int:
        """Bytes stored in the volume."""
        ...

    async def delete(self) -> None:
        """Remove the volume's contents (and a local volume's directory); idempotent."""

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """The keys of the files below `prefix`, sorted."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def volumes_dir(work_dir: Path, deployment: str) -> Path:
    """`<work_dir>/volumes/<deployment>`: the `base_dir` of a deployment's local volumes."""
    return work_dir / "volumes" / check_name(deployment, "deployment")


def open_volume(
    spec: VolumeSpec, *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> Volume:
    """The volume `spec` describes. Local volumes live in `base_dir/<name>` (see
    `volumes_dir`). S3 credentials come from the spec, else from `AWS_ACCESS_KEY_ID` /
    `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else requests go unsigned (public buckets):
    the node's own AWS profile files are never consulted."""
    errors = spec.errors()
    if errors:
        raise errors[0]
    if spec.type == "local":
        from nunet.storage.local import LocalVolume

        return LocalVolume(spec, base_dir=base_dir)
    from nunet.storage.s3 import S3Volume

    env = os.environ if environ is None else environ
    region = spec.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    return S3Volume(spec, credentials=_credentials(spec, env), region=region)


def _credentials(spec: VolumeSpec, env: Mapping[str, str]) -> S3Credentials | None:
    if spec.credentials is not None:
        return spec.credentials
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key and not secret:
        return None
    if not (key and secret):
        raise ValidationError(
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set, or neither",
            path="volume.credentials",
        )
    return S3Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)


def _valid_bucket(name: str) -> bool:
    return (
        3 <= len(name) <= 63
        and set(name) <= _BUCKET_RE_CHARS
        and name[0].isalnum()
        and name[-1].isalnum()
        and ".." not in name
    )


class VolumeBase:
    """What every volume shares: its spec, its name, and closing as an async context manager."""

    _spec: VolumeSpec

    @property
    def spec(self) -> VolumeSpec:
        return self._spec

    @property
    def name(self) -> str:
        return self._spec.name

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
