"""Moving a job's data between its volumes and the host directories its container mounts.

Before start, `stage_inputs` downloads each input volume into `<dest_dir>/<volume name>` (the
host side of a bind mount); `prepare_outputs` makes empty `<src_dir>/<volume name>` directories
for the outputs; after the task completes, `collect_outputs` uploads each of them to its volume.
The container never sees a volume's own storage, only these copies, so a job cannot reach past
them; what it leaves in an output directory is read as untrusted (symlinks and special files
are skipped and reported).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

import msgspec

from nunet.errors import ReadOnlyVolume, ValidationError
from nunet.storage.api import TransferStats, Volume
from nunet.storage.files import translated


class VolumeTransfer(msgspec.Struct, frozen=True):
    volume: str
    host_path: str
    files: int
    bytes: int
    skipped: tuple[str, ...] = ()


class TransferReport(msgspec.Struct, frozen=True):
    volumes: tuple[VolumeTransfer, ...] = ()

    @property
    def files(self) -> int:
        return sum(v.files for v in self.volumes)

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.volumes)


async def stage_inputs(volumes: Sequence[Volume], dest_dir: Path) -> TransferReport:
    """Download every volume into `dest_dir/<name>`, replacing what an earlier attempt left
    there. On failure the copies made by this call are removed again."""
    _check_unique(volumes)
    staged: list[Path] = []
    report: list[VolumeTransfer] = []
    try:
        for volume in volumes:
            host = Path(dest_dir) / volume.name
            await asyncio.to_thread(_clear, host)
            staged.append(host)
            stats = await volume.download("", host)
            report.append(_entry(volume, host, stats))
    except BaseException:
        for host in staged:
            await asyncio.shield(asyncio.to_thread(_clear, host))
        raise
    return TransferReport(tuple(report))


async def prepare_outputs(volumes: Sequence[Volume], src_dir: Path) -> dict[str, Path]:
    """Empty directories `src_dir/<name>` for a container to write its outputs into."""
    _check_unique(volumes)
    dirs = {volume.name: Path(src_dir) / volume.name for volume in volumes}
    for path in dirs.values():
        await asyncio.to_thread(_fresh_dir, path)
    return dirs


async def collect_outputs(src_dir: Path, volumes: Sequence[Volume]) -> TransferReport:
    """Upload `src_dir/<name>` into each volume (merging over what is there). A volume whose
    directory is missing had no output. Read-only volumes are refused before anything moves."""
    _check_unique(volumes)
    for volume in volumes:
        if volume.spec.read_only:
            raise ReadOnlyVolume(f"volume {volume.name!r} is read-only; it cannot take outputs")
    report: list[VolumeTransfer] = []
    for volume in volumes:
        src = Path(src_dir) / volume.name
        if not await asyncio.to_thread(os.path.lexists, src):
            report.append(VolumeTransfer(volume.name, str(src), 0, 0))
            continue
        stats = await volume.upload(src, "")
        report.append(_entry(volume, src, stats))
    return TransferReport(tuple(report))


def _entry(volume: Volume, host: Path, stats: TransferStats) -> VolumeTransfer:
    return VolumeTransfer(volume.name, str(host), stats.files, stats.bytes, stats.skipped)


def _check_unique(volumes: Sequence[Volume]) -> None:
    seen: set[str] = set()
    for i, volume in enumerate(volumes):
        if volume.name in seen:
            raise ValidationError(f"duplicate volume name {volume.name!r}", path=f"volumes[{i}]")
        seen.add(volume.name)


def _clear(path: Path) -> None:
    with translated(str(path)):
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _fresh_dir(path: Path) -> None:
    _clear(path)
    with translated(str(path)):
        path.mkdir(parents=True)
