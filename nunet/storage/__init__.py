"""Volumes: where a job's inputs come from and its outputs go (local directories, S3)."""

from __future__ import annotations

from nunet.storage.api import (
    S3Credentials,
    TransferStats,
    Volume,
    VolumeSpec,
    open_volume,
    volumes_dir,
)

__all__ = ["S3Credentials", "TransferStats", "Volume", "VolumeSpec", "open_volume", "volumes_dir"]
