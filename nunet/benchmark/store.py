"""Benchmark reports in the node's store: namespace `benchmark`, keyed by report id (ids sort by
time, so key order is history order); the newest `KEEP` are kept."""

from __future__ import annotations

import re

from nunet.benchmark.model import SCHEMA_VERSION, BenchReport, BenchSummary, Scores
from nunet.db.repository import Repository
from nunet.db.store import Store
from nunet.errors import AlreadyExists, NotFound, ValidationError

NAMESPACE = "benchmark"
KEEP = 100
_ID = re.compile(r"\d{15}-[0-9a-f]{6}\Z")


class BenchmarkStore:
    def __init__(self, store: Store, *, keep: int = KEEP) -> None:
        self.repo = Repository(store, NAMESPACE, BenchReport)
        self.keep = keep

    def save(self, report: BenchReport) -> BenchSummary:
        """Stores a finished report (refusing one that could mislead matching) and drops the
        oldest beyond `keep`."""
        check_storable(report)
        key, value = self.repo.key_for(report.id), self.repo.encode(report)
        store = self.repo.store
        with store.write_lock:
            if store.get(key) is not None:
                raise AlreadyExists(f"benchmark report {report.id!r} is already stored")
            ids = sorted([*self.repo.ids(), report.id])
            with store.batch() as batch:  # the new record and the pruning land together
                batch.put(key, value)
                for old in ids[: max(0, len(ids) - self.keep)]:
                    batch.delete(self.repo.key_for(old))
        return BenchSummary.of(report)

    def latest(self) -> BenchReport | None:
        ids = self.repo.ids()
        return self.repo.get(ids[-1]) if ids else None

    def get(self, report_id: str) -> BenchReport:
        if not _ID.match(report_id):
            raise NotFound(f"no benchmark report {report_id!r} (ids look like "
                           "000001712345678-a1b2c3)", path="id")
        return self.repo.get(report_id)

    def history(self) -> list[BenchSummary]:
        """Newest first."""
        return [BenchSummary.of(r) for r in reversed(self.repo.list())]

    def scores(self) -> Scores | None:
        latest = self.latest()
        return None if latest is None else latest.scores


def check_storable(report: BenchReport) -> None:
    if report.version != SCHEMA_VERSION:
        raise ValidationError(
            f"report schema version {report.version}; this node stores {SCHEMA_VERSION}",
            path="version",
        )
    if not _ID.match(report.id):
        raise ValidationError(f"report id {report.id!r} is not <15 digits>-<6 hex>", path="id")
    if not report.machine.native:
        raise ValidationError(
            "measured with the pure-Python kernels: not a figure of this machine, not stored",
            path="machine.native",
        )
    if report.finished_at < report.started_at:
        raise ValidationError("finished before it started", path="finished_at")
