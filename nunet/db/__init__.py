"""The node's embedded store: one RocksDB per node behind typed repositories."""

from __future__ import annotations

from nunet.db.query import Contains, In, Range
from nunet.db.repository import Page, Repository, Singleton
from nunet.db.store import Store, WriteBatch

__all__ = ["Contains", "In", "Page", "Range", "Repository", "Singleton", "Store", "WriteBatch"]
