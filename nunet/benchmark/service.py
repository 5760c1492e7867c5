"""The node's side of benchmarking: stored reports, running a benchmark inside the node, and the
local API's handlers for both.

`BenchmarkService` belongs to the `Node` facade (`node.benchmark`); `ROUTES` are the rows the API's
route table takes (`Route(*row)`), each handler reading `node.benchmark`. The DMS-style behaviour
`/dms/node/hardware/benchmark` answers `hardware_benchmark()`: the latest scores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from nunet.benchmark.model import BenchReport, BenchSummary, Outcome, Scores
from nunet.benchmark.plan import PLANS
from nunet.benchmark.store import BenchmarkStore
from nunet.db.store import Store
from nunet.errors import NotFound

RECENT_S = 7 * 24 * 3600.0  # onboarding re-measures when the latest report is older than this
_NONE_YET = "no benchmark stored yet: run `nunet bench`"


class RunRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    quick: bool = True
    only: tuple[str, ...] = ()
    save: bool = True


class BenchmarkService:
    def __init__(
        self, store: Store, work_dir: Path, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.reports = BenchmarkStore(store)
        self.work_dir = work_dir
        self._clock = clock
        self._running = asyncio.Lock()
        # Set by the network component once it runs, e.g. `lambda: measure_peers(net, BENCH)`.
        self.network_probe: Callable[[], Awaitable[Outcome]] | None = None

    def latest(self) -> BenchReport:
        report = self.reports.latest()
        if report is None:
            raise NotFound(_NONE_YET)
        return report

    def recent(self, max_age_s: float = RECENT_S) -> BenchReport | None:
        report = self.reports.latest()
        if report is None or self._clock() - report.finished_at > max_age_s:
            return None
        return report

    def get(self, report_id: str) -> BenchReport:
        return self.reports.get(report_id)

    def history(self) -> list[BenchSummary]:
        return self.reports.history()

    def save(self, report: BenchReport) -> BenchSummary:
        return self.reports.save(report)

    def hardware_benchmark(self) -> Scores:
        """DMS-style `/dms/node/hardware/benchmark`: what matching and bids read."""
        scores = self.reports.scores()
        if scores is None:
            raise NotFound(_NONE_YET)
        return scores

    async def run(self, request: RunRequest) -> BenchReport:
        """Measures this machine from a worker thread (the kernels release the GIL, the event
        loop keeps answering); one run at a time, later callers wait their turn."""
        from nunet.benchmark.runner import parse_stages, run_benchmark  # not at node start-up

        stages = parse_stages(request.only)
        plan = PLANS["quick" if request.quick else "full"]
        async with self._running:
            network = None
            if "network" in stages and self.network_probe is not None:
                measured = await self.network_probe()  # on the loop, where the transport lives
                network = lambda: measured  # noqa: E731
            report = await asyncio.to_thread(
                run_benchmark, plan, disk_dir=self.work_dir, stages=stages, network=network,
                network_note="offline: this node has no network component yet",
                clock=self._clock,
            )
        if request.save:
            self.save(report)
        return report


# --- API handlers: `Route(*row)` for row in ROUTES ----------------------------------------------


class HasBenchmark(Protocol):
    @property
    def benchmark(self) -> BenchmarkService: ...


def _latest(node: HasBenchmark, _body: None, _params: Mapping[str, str]) -> BenchReport:
    return node.benchmark.latest()


def _scores(node: HasBenchmark, _body: None, _params: Mapping[str, str]) -> Scores:
    return node.benchmark.hardware_benchmark()


def _history(node: HasBenchmark, _body: None, _params: Mapping[str, str]) -> list[BenchSummary]:
    return node.benchmark.history()


def _report(node: HasBenchmark, _body: None, params: Mapping[str, str]) -> BenchReport:
    return node.benchmark.get(params["id"])


def _save(node: HasBenchmark, body: BenchReport, _params: Mapping[str, str]) -> BenchSummary:
    return node.benchmark.save(body)


async def _run(node: HasBenchmark, body: RunRequest, _params: Mapping[str, str]) -> BenchReport:
    return await node.benchmark.run(body)


def routes(prefix: str) -> tuple[tuple[Any, ...], ...]:
    """(method, path, summary, handler, response type, body type) rows for the API's table."""
    base = f"{prefix}/benchmark"
    return (
        ("GET", f"{base}/latest", "The latest benchmark report of this machine", _latest,
         BenchReport, None),
        ("GET", f"{base}/scores",
         "The latest measured scores, as matching uses them (DMS /dms/node/hardware/benchmark)",
         _scores, Scores, None),
        ("GET", f"{base}/history", "Stored benchmark reports, newest first", _history,
         list[BenchSummary], None),
        ("GET", f"{base}/reports/{{id}}", "One stored benchmark report", _report, BenchReport,
         None),
        ("POST", f"{base}/reports", "Store a report measured by `nunet bench` on this machine",
         _save, BenchSummary, BenchReport),
        ("POST", f"{base}/run", "Benchmark this machine now, from the node (seconds to a minute)",
         _run, BenchReport, RunRequest),
    )
